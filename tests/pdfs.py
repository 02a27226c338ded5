"""PDF factories for tests, drawn with reportlab at test time (no binary fixtures in the repo).

Each function writes one PDF to `path` and returns the path. Text is drawn line by line on the
canvas where a test needs to know exactly where lines break (columns, hyphens, headers).
"""

from __future__ import annotations

from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

WIDTH, HEIGHT = A4
MARGIN = 72
KOREAN_FONT = "HYSMyeongJo-Medium"


def _canvas(path: Path, **kwargs) -> canvas.Canvas:
    return canvas.Canvas(str(path), pagesize=A4, **kwargs)


def _lines(c: canvas.Canvas, lines: list[str], x: float, y: float, leading: float = 14,
           font: str = "Helvetica", size: float = 11) -> float:
    """Draw lines downwards from y; an empty string leaves a paragraph gap. Returns the next y."""
    c.setFont(font, size)
    for line in lines:
        if line:
            c.drawString(x, y, line)
            y -= leading
        else:
            y -= leading * 0.8
    return y


def multipage_pdf(path: Path, pages: list[list[str]], header: str | None = "Test Handbook",
                  footer: str | None = "Page {n}") -> Path:
    """One page per list of lines, with a running header and a page-number footer."""
    c = _canvas(path)
    for n, lines in enumerate(pages, 1):
        if header:
            c.setFont("Helvetica-Oblique", 9)
            c.drawString(MARGIN, HEIGHT - 40, header)
        if footer:
            c.setFont("Helvetica", 9)
            c.drawCentredString(WIDTH / 2, 30, footer.format(n=n))
        _lines(c, lines, MARGIN, HEIGHT - MARGIN - 20)
        c.showPage()
    c.save()
    return path


def two_column_pdf(path: Path, title: str, left: list[str], right: list[str],
                   footer: str | None = None) -> Path:
    """A full-width title, then two columns whose lines sit at the same heights."""
    c = _canvas(path)
    c.setFont("Helvetica-Bold", 16)
    c.drawString(MARGIN, HEIGHT - MARGIN, title)
    gutter = 24
    col_w = (WIDTH - 2 * MARGIN - gutter) / 2
    top = HEIGHT - MARGIN - 40
    _lines(c, left, MARGIN, top, size=10)
    _lines(c, right, MARGIN + col_w + gutter, top, size=10)
    if footer:
        c.setFont("Helvetica", 9)
        c.drawCentredString(WIDTH / 2, 30, footer)
    c.showPage()
    c.save()
    return path


def korean_pdf(path: Path, lines: list[str]) -> Path:
    """Korean text in reportlab's built-in CID font (no font file needed)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    pdfmetrics.registerFont(UnicodeCIDFont(KOREAN_FONT))
    c = _canvas(path)
    _lines(c, lines, MARGIN, HEIGHT - MARGIN, leading=18, font=KOREAN_FONT, size=12)
    c.showPage()
    c.save()
    return path


def encrypted_pdf(path: Path, text: str = "A secret page.") -> Path:
    from reportlab.lib.pdfencrypt import StandardEncryption

    c = _canvas(path, encrypt=StandardEncryption("user-secret", ownerPassword="owner-secret"))
    _lines(c, [text], MARGIN, HEIGHT - MARGIN)
    c.showPage()
    c.save()
    return path


def corrupt_pdf(path: Path, good: Path) -> Path:
    """The first third of a good PDF: a real header, then nothing the parser can use."""
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def blank_pdf(path: Path, pages: int = 1) -> Path:
    c = _canvas(path)
    for _ in range(pages):
        c.showPage()
    c.save()
    return path


def image_only_pdf(path: Path) -> Path:
    """A 'scan': a raster image and some drawn rectangles, and no text at all."""
    from PIL import Image
    from reportlab.lib.utils import ImageReader

    img = Image.new("RGB", (64, 48), (200, 200, 200))
    for x in range(8, 56):
        for y in (10, 20, 30):
            img.putpixel((x, y), (0, 0, 0))
    c = _canvas(path)
    c.drawImage(ImageReader(img), MARGIN, HEIGHT - 400, width=320, height=240)
    c.rect(MARGIN, 100, 200, 60, fill=1)
    c.showPage()
    c.save()
    return path


def flowing_columns_pdf(path: Path, paragraphs: list[str], header: str = "Field Journal") -> Path:
    """Justified paragraphs flowing through two columns per page over several pages (platypus
    frames), with a running header and page numbers: the layout of a typical paper."""
    from reportlab.lib.enums import TA_JUSTIFY
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph

    gutter = 20
    col_w = (WIDTH - 2 * MARGIN - gutter) / 2
    frames = [Frame(MARGIN, MARGIN, col_w, HEIGHT - 2 * MARGIN, id="left"),
              Frame(MARGIN + col_w + gutter, MARGIN, col_w, HEIGHT - 2 * MARGIN, id="right")]

    def decorate(c, doc):
        c.setFont("Helvetica", 8)
        c.drawString(MARGIN, HEIGHT - 40, header)
        c.drawRightString(WIDTH - MARGIN, 36, str(doc.page))

    doc = BaseDocTemplate(str(path), pagesize=A4,
                          pageTemplates=[PageTemplate(frames=frames, onPage=decorate)])
    style = ParagraphStyle("p", fontName="Helvetica", fontSize=9.5, leading=12,
                           alignment=TA_JUSTIFY, spaceAfter=8)
    doc.build([Paragraph(p, style) for p in paragraphs])
    return path
