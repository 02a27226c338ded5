"""Render data/sample/karsholm_observatory_handbook.md as a multi-page PDF with reportlab.

The PDF carries a running header and a "Page N" footer on every page, so importing it exercises
header/footer removal. Only the Markdown this handbook uses is understood: `#`/`##` headings,
`- ` bullets and plain paragraphs.

Run: python data/make_sample_pdf.py   (needs reportlab, in the dev extra)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from reportlab import rl_config
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import ListFlowable, ListItem, Paragraph, SimpleDocTemplate, Spacer

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "sample" / "karsholm_observatory_handbook.md"
TARGET = HERE / "sample" / "karsholm_observatory_handbook.pdf"
HEADER = "Karsholm Island Observatory - Staff and Visitor Handbook"


def blocks(markdown: str) -> list[tuple[str, str]]:
    """(kind, text) for each heading, bullet and paragraph, in order."""
    out = []
    for chunk in re.split(r"\n\s*\n", markdown.strip()):
        lines = chunk.strip().splitlines()
        if lines[0].startswith("## "):
            out.append(("h2", lines[0][3:]))
        elif lines[0].startswith("# "):
            out.append(("h1", lines[0][2:]))
        elif all(l.startswith("- ") for l in lines):
            out += [("bullet", l[2:]) for l in lines]
        else:
            out.append(("p", " ".join(l.strip() for l in lines)))
    return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _decorate(canvas, doc) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica-Oblique", 8.5)
    canvas.drawString(doc.leftMargin, A4[1] - 1.4 * cm, HEADER)
    canvas.setFont("Helvetica", 9)
    canvas.drawCentredString(A4[0] / 2, 1.2 * cm, f"Page {doc.page}")
    canvas.restoreState()


def build(source: Path = SOURCE, target: Path = TARGET) -> Path:
    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontSize=10.5, leading=14,
                          spaceAfter=7)
    story = []
    bullets: list = []

    def flush_bullets():
        if bullets:
            story.append(ListFlowable([ListItem(b, leftIndent=14) for b in bullets],
                                      bulletType="bullet", start="-", leftIndent=14))
            story.append(Spacer(1, 6))
            bullets.clear()

    for kind, text in blocks(source.read_text(encoding="utf-8")):
        if kind != "bullet":
            flush_bullets()
        if kind == "h1":
            story.append(Paragraph(_escape(text), styles["Title"]))
        elif kind == "h2":
            story.append(Paragraph(_escape(text), styles["Heading2"]))
        elif kind == "bullet":
            bullets.append(Paragraph(_escape(text), body))
        else:
            story.append(Paragraph(_escape(text), body))
    flush_bullets()
    doc = SimpleDocTemplate(str(target), pagesize=A4, leftMargin=2.5 * cm, rightMargin=2.5 * cm,
                            topMargin=2.4 * cm, bottomMargin=2.2 * cm,
                            title="Karsholm Island Observatory Handbook",
                            author="clara sample material (fictional)")
    rl_config.invariant = 1  # fixed dates and ids: rebuilding gives the same bytes
    doc.build(story, onFirstPage=_decorate, onLaterPages=_decorate)
    return target


if __name__ == "__main__":
    path = build(*(Path(a) for a in sys.argv[1:3]))
    print(f"wrote {path}")
