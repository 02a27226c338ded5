"""Text out of PDFs with pdfplumber: reading order, paragraphs, no running headers or footers.

pdfplumber gives words with positions; what it does not do is decide reading order across
columns, tell paragraphs apart, undo end-of-line hyphenation or drop running headers and footers.
Those few steps are written here (no maintained library does them on top of pdfplumber), each in
its own small function:

    words -> rows -> (columns, bands) -> lines in reading order       per page
    lines recurring at the top/bottom of most pages -> removed         whole document
    lines -> paragraphs (hyphens joined), paragraphs joined by "\\n\\n"  per page
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from clara.errors import UserError, ExitCode


class SourceError(UserError):
    """A file that cannot be imported; the message names the file and what to do about it."""

    exit_code = ExitCode.BAD_DATA

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path} {problem}")


@dataclass
class PdfConfig:
    min_gutter: float = field(default=8.0, metadata={"help": "Narrowest word-free vertical strip (points) taken as a column gutter."})
    gutter_crossings: float = field(default=0.15, metadata={"help": "Share of rows allowed to cross the gutter (titles, headers, footers)."})
    paragraph_gap: float = field(default=1.3, metadata={"help": "A line spacing this many times the page's usual one starts a paragraph."})
    short_line: float = field(default=0.7, metadata={"help": "A line shorter than this share of its column ends a paragraph."})
    edge_lines: int = field(default=2, metadata={"help": "Lines at the top and at the bottom of each page checked for running headers/footers."})
    recurrence: float = field(default=0.5, metadata={"help": "A top/bottom line found on more than this share of pages is a running header/footer."})


@dataclass
class Line:
    text: str
    top: float
    bottom: float
    x0: float
    x1: float
    size: float
    fonts: frozenset
    block: int = 0  # lines of one column of one band share a block
    column_x0: float = 0.0  # set by _measure_columns once running headers are gone
    column_width: float = 0.0
    starts_block: bool = False  # first line of a column or band: no gap to measure above it


@dataclass
class PdfText:
    pages: list[str]
    warnings: list[str]


# -- errors -----------------------------------------------------------------------------------
def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        yield from (a for a in getattr(exc, "args", ()) if isinstance(a, BaseException))
        exc = exc.__cause__ or exc.__context__


def _open_error(path: Path, exc: BaseException) -> SourceError:
    names = {type(e).__name__ for e in _causes(exc)}
    if names & {"PDFPasswordIncorrect", "PDFEncryptionError", "PDFEncryptionWarning"}:
        return SourceError(path, "is encrypted: decrypt it first, e.g. qpdf --decrypt in.pdf out.pdf")
    detail = next((str(e) for e in _causes(exc) if str(e)), type(exc).__name__)
    detail = detail.splitlines()[0][:80]
    return SourceError(path, f"is a corrupt PDF ({detail}): repair or re-export it, "
                             "e.g. qpdf in.pdf repaired.pdf")


# -- one page: rows, columns, reading order ---------------------------------------------------
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                            "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st", "\u00a0": " "})


def _rows(words: list[dict]) -> list[list[dict]]:
    """Group words into rows: a word joins the row it overlaps vertically by half its height."""
    rows: list[list[dict]] = []
    bounds: list[list[float]] = []
    for w in sorted(words, key=lambda w: (w["top"], w["x0"])):
        h = max(w["bottom"] - w["top"], 0.1)
        if rows:
            top, bottom = bounds[-1]
            if min(bottom, w["bottom"]) - max(top, w["top"]) >= 0.5 * min(h, bottom - top):
                rows[-1].append(w)
                bounds[-1] = [min(top, w["top"]), max(bottom, w["bottom"])]
                continue
        rows.append([w])
        bounds.append([w["top"], w["bottom"]])
    return [sorted(r, key=lambda w: w["x0"]) for r in rows]


def _line(words: list[dict]) -> Line:
    sizes = Counter(round(w.get("size", 0.0), 1) for w in words)
    text = " ".join(w["text"] for w in words).translate(_LIGATURES)
    return Line(text=re.sub(r"\s+", " ", text).strip(), top=min(w["top"] for w in words),
                bottom=max(w["bottom"] for w in words), x0=words[0]["x0"],
                x1=max(w["x1"] for w in words), size=sizes.most_common(1)[0][0],
                fonts=frozenset(w.get("fontname", "") for w in words))


def find_gutter(words: list[dict], n_rows: int, cfg: PdfConfig = PdfConfig()) -> float | None:
    """x of a vertical strip, in the middle half of the text, that (almost) no word crosses."""
    if len(words) < 8 or n_rows < 4:
        return None
    left = min(w["x0"] for w in words)
    right = max(w["x1"] for w in words)
    width = right - left
    lo, hi = left + 0.25 * width, left + 0.75 * width
    allowed = max(1, int(cfg.gutter_crossings * n_rows))
    step = 0.5
    n = int((hi - lo) / step) + 1
    xs = [lo + i * step for i in range(n)]
    # words crossing each x, by a difference array: O(words + xs) rather than their product
    delta = [0] * (n + 1)
    for w in words:
        first = max(0, math.floor((w["x0"] - lo) / step) + 1)
        last = min(n - 1, math.ceil((w["x1"] - lo) / step) - 1)
        if first <= last:
            delta[first] += 1
            delta[last + 1] -= 1
    counts, running = [], 0
    for i in range(n):
        running += delta[i]
        counts.append(running)
    best, run_start = None, None
    for i, c in enumerate(counts + [allowed + 1]):
        if c <= allowed and run_start is None:
            run_start = i
        elif c > allowed and run_start is not None:
            span = (i - run_start) * step
            if span >= cfg.min_gutter and (best is None or span > best[1]):
                best = (xs[run_start] + span / 2, span)
            run_start = None
    if best is None:
        return None
    gx = best[0]
    n_left = sum(1 for w in words if w["x1"] <= gx)
    n_right = sum(1 for w in words if w["x0"] >= gx)
    if min(n_left, n_right) < 0.15 * len(words):
        return None
    return gx


def _column_lines(words: list[dict], block: int) -> list[Line]:
    lines = [_line(r) for r in _rows(words)]
    for l in lines:
        l.block = block
    if lines:
        lines[0].starts_block = True
    return lines


def _measure_columns(lines: list[Line]) -> None:
    """Left edge and width of each block's column, ignoring a stray line or two (a page number
    at the margin must not make every text line look short)."""
    blocks: dict[int, list[Line]] = defaultdict(list)
    for l in lines:
        blocks[l.block].append(l)
    for members in blocks.values():
        x0s = sorted(l.x0 for l in members)
        x1s = sorted(l.x1 for l in members)
        k = len(members) // 10 if len(members) >= 5 else 0
        left, right = x0s[k], x1s[len(x1s) - 1 - k]
        for l in members:
            l.column_x0, l.column_width = left, max(right - left, 1.0)


def page_lines(page, cfg: PdfConfig = PdfConfig()) -> list[Line]:
    """The lines of one page in reading order: bands of full-width rows and two-column blocks
    (left column, then right column)."""
    words = page.extract_words(keep_blank_chars=False, use_text_flow=False,
                               extra_attrs=["size", "fontname"])
    words = [w for w in words if w["text"].strip()]
    rows = _rows(words)
    gx = find_gutter(words, len(rows), cfg)
    if gx is None:
        return _column_lines(words, 0)
    out: list[Line] = []
    band: list[dict] = []
    blocks = itertools.count(1)

    def flush():
        out.extend(_column_lines([w for w in band if w["x1"] <= gx], next(blocks)))
        out.extend(_column_lines([w for w in band if w["x1"] > gx], next(blocks)))
        band.clear()

    for row in rows:
        if any(w["x0"] < gx < w["x1"] for w in row):
            flush()
            out.extend(_column_lines(row, next(blocks)))
        else:
            band.extend(row)
    flush()
    return out


# -- the document: running headers and footers ------------------------------------------------
_PAGE_NUMBER = re.compile(r"^(page|p\.|seite|pag\.|페이지)?\s*[-–—(\[]?\s*#\s*[-–—)\]]?"
                          r"(\s*(of|/|von|de)\s*#)?\s*(쪽|페이지)?$")


def _key(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\d+", "#", text)
    return re.sub(r"\s+", " ", text).strip()


def _edge_lines(lines: list[Line], k: int) -> list[tuple[str, int]]:
    """Indexes of the k topmost and k bottommost rows of a page, with 'top'/'bottom'."""
    tops = sorted({round(l.top) for l in lines})[:k]
    bottoms = sorted({round(l.bottom) for l in lines}, reverse=True)[:k]
    out = []
    for i, l in enumerate(lines):
        if round(l.top) in tops:
            out.append(("top", i))
        elif round(l.bottom) in bottoms:
            out.append(("bottom", i))
    return out


def remove_running_lines(pages: list[list[Line]], cfg: PdfConfig = PdfConfig()
                         ) -> tuple[list[list[Line]], list[str]]:
    """Drop lines that recur at the top or bottom of most pages (digits may vary: page numbers)."""
    n = len(pages)
    if n < 2:
        return pages, []
    seen: dict[tuple[str, str], set[int]] = defaultdict(set)
    example: dict[tuple[str, str], str] = {}
    for p, lines in enumerate(pages):
        for where, i in _edge_lines(lines, cfg.edge_lines):
            key = (where, _key(lines[i].text))
            seen[key].add(p)
            example.setdefault(key, lines[i].text)
    need = max(2, math.floor(cfg.recurrence * n) + 1)
    running = {k for k, ps in seen.items() if len(ps) >= need}
    if not running:
        return pages, []
    removed: Counter = Counter()
    out = []
    for lines in pages:
        drop = set()
        for where, i in _edge_lines(lines, cfg.edge_lines):
            key = (where, _key(lines[i].text))
            if key in running:
                drop.add(i)
                removed[key] += 1
        out.append([l for i, l in enumerate(lines) if i not in drop])
    warnings = []
    for (where, key), count in sorted(removed.items()):
        what = "page number" if _PAGE_NUMBER.match(key) else (
            "running header" if where == "top" else "running footer")
        warnings.append(f"removed {what} like {example[(where, key)]!r} "
                        f"from {count} of {n} pages")
    return out, warnings


# -- lines to paragraphs ----------------------------------------------------------------------
_BULLET = re.compile(r"^([-•·▪◦*–]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])\s")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)


def _hyphen_vocabulary(pages: list[list[Line]]) -> tuple[set[str], set[str]]:
    """Words seen whole, and hyphenated words seen inside a line, anywhere in the document."""
    whole, hyphenated = set(), set()
    for lines in pages:
        for l in lines:
            for m in _WORD.finditer(l.text):
                w = m.group().lower()
                (hyphenated if "-" in w else whole).add(w)
    return whole, hyphenated


def _join_hyphen(prev: str, nxt: str, vocab: tuple[set[str], set[str]]) -> str | None:
    """`impor-` + `tant` -> `important`; None when the lines should not be glued."""
    if prev.endswith("\u00ad"):
        return prev[:-1] + nxt
    m = re.search(r"([^\W\d_]+)-$", prev)
    if not m or prev.endswith("--"):
        if re.search(r"\w-$", prev) and not prev.endswith("--") and nxt[:1].isalnum():
            return prev + nxt  # "1990-" + "1995", "Jean-" + "Paul": the hyphen is real
        return None
    if not nxt[:1].islower():
        return prev + nxt if nxt[:1].isalnum() else None
    head = m.group(1).lower()
    tail = re.match(r"[^\W\d_]+", nxt)
    tail = tail.group().lower() if tail else ""
    whole, hyphenated = vocab
    if f"{head}-{tail}" in hyphenated and f"{head}{tail}" not in whole:
        return prev + nxt  # a real compound that happens to break at its hyphen
    return prev[:-1] + nxt


def _pitch(lines: list[Line]) -> float:
    """The page's usual line spacing, as a multiple of font size (so big titles are not gaps)."""
    steps = [(b.top - a.top) / (a.size or 1) for a, b in zip(lines, lines[1:])
             if not b.starts_block and b.top - a.top > 0]
    return statistics.median(steps) if steps else 0.0


def _centred(line: Line) -> bool:
    left = line.x0 - line.column_x0
    right = line.column_x0 + line.column_width - line.x1
    return left > 0.05 * line.column_width and abs(left - right) < 0.05 * line.column_width


def page_text(lines: list[Line], vocab, cfg: PdfConfig = PdfConfig()) -> str:
    """Lines of one page to text: paragraphs separated by a blank line, lines of a paragraph
    joined by a space, hyphenated line ends joined."""
    _measure_columns(lines)
    pitch = _pitch(lines)
    paragraphs: list[str] = []
    prev: Line | None = None
    for line in lines:
        if not line.text:
            continue
        if prev is not None and paragraphs:
            glued = _join_hyphen(paragraphs[-1], line.text, vocab)
            if glued is not None:
                paragraphs[-1] = glued
                prev = line
                continue
        if prev is None or _breaks(prev, line, pitch, cfg):
            paragraphs.append(line.text)
        else:
            paragraphs[-1] += " " + line.text
        prev = line
    return "\n\n".join(paragraphs)


def _breaks(prev: Line, line: Line, pitch: float, cfg: PdfConfig) -> bool:
    if _BULLET.match(line.text):
        return True
    if abs(line.size - prev.size) > 0.5 or not (line.fonts & prev.fonts):
        return True
    if (prev.column_width and (prev.x1 - prev.x0) < cfg.short_line * prev.column_width
            and not (_centred(prev) and _centred(line))):  # a wrapped centred title goes on
        return True
    step = (line.top - prev.top) / (prev.size or 1)
    if not line.starts_block and pitch and step > cfg.paragraph_gap * pitch:
        return True
    return False


# -- the whole file ---------------------------------------------------------------------------
def extract_pdf(path: str | Path, cfg: PdfConfig = PdfConfig()) -> PdfText:
    """Page texts of a PDF, or SourceError saying why there are none and what to do."""
    import pdfplumber

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        raise SourceError(path, "is empty (0 bytes): nothing to import")
    if b"%PDF-" not in head:
        raise SourceError(path, "is not a PDF (it does not start with %PDF-): check the file, "
                                "or give it the right extension if it is text")
    try:
        with pdfplumber.open(path) as pdf:
            pages = []
            graphics = []
            for page in pdf.pages:
                pages.append(page_lines(page, cfg))
                graphics.append(bool(page.images or page.rects or page.curves))
                page.close()  # drop pdfplumber's per-page caches: long PDFs stay small in memory
    except SourceError:
        raise
    except Exception as e:  # pdfminer raises many kinds of errors on damaged files
        raise _open_error(path, e) from None
    if not pages:
        raise SourceError(path, "has no pages: nothing to import")
    if not any(pages):
        if any(graphics):
            raise SourceError(path, "has no extractable text (image-only or scanned pages): "
                                    "run OCR first, e.g. ocrmypdf in.pdf out.pdf")
        raise SourceError(path, f"has no text: its {len(pages)} page(s) are blank")
    pages, warnings = remove_running_lines(pages, cfg)
    vocab = _hyphen_vocabulary(pages)
    texts = [page_text(lines, vocab, cfg) for lines in pages]
    empty = [str(i) for i, (t, g) in enumerate(zip(texts, graphics), 1) if not t and g]
    if empty:
        warnings.append(f"page(s) {', '.join(empty)} have no extractable text (images only?): "
                        "run OCR (e.g. ocrmypdf) to include them")
    return PdfText(pages=texts, warnings=warnings)
