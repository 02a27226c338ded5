"""Importing documents: page-tracked text from PDFs and text files, bad files refused cleanly,
and the shipped sample material in data/."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

import pytest

from clara import io
from clara.data.pdftext import SourceError, extract_pdf
from clara.data.sources import import_files, list_sources, read_source
from clara.errors import UserError
from conftest import DATA
from pdfs import (blank_pdf, corrupt_pdf, encrypted_pdf, flowing_columns_pdf, image_only_pdf,
                  korean_pdf, multipage_pdf, two_column_pdf)

HANDBOOK_MD = DATA / "sample" / "karsholm_observatory_handbook.md"
HANDBOOK_PDF = DATA / "sample" / "karsholm_observatory_handbook.pdf"

PAGE_1 = [
    "The harbour master of Tolvik keeps a ledger of every boat that enters the bay,",
    "and the ledger of 1821 lists forty-two fishing boats and one state-of-the-art",
    "steam tug. The tug was an impor-",
    "tant arrival, because it could tow the well-",
    "known grain barges upriver. Everyone called them well-known barges anyway.",
    "",
    "A second paragraph begins after a gap and speaks of nets, tar and salt.",
]
PAGE_2 = ["The second page describes the lighthouse on the northern cape in some detail,",
          "with its lamp of brass and glass."]
PAGE_3 = ["The third page is short."]


def snapshot(path: Path) -> dict[str, str]:
    """Every file and folder under `path` with a hash of its bytes."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def check_offsets(source) -> None:
    text = source.text
    records = io.read_jsonl(source.path / "pages.jsonl")
    assert records == source.pages
    assert [r["page"] for r in records] == list(range(1, len(records) + 1))
    for r in records:
        assert set(r) == {"source", "page", "start", "end", "text"}
        assert r["source"] == source.name
        assert text[r["start"]:r["end"]] == r["text"]
    assert "\n\n".join(r["text"] for r in records) == text
    assert source.characters == len(text)


@pytest.fixture
def three_pages(tmp_path) -> Path:
    return multipage_pdf(tmp_path / "tolvik harbour.pdf", [PAGE_1, PAGE_2, PAGE_3])


# -- round trips --------------------------------------------------------------------------------
def test_text_file_round_trip_with_form_feed_pages(workspace, tmp_path):
    f = tmp_path / "Field Notes.md"
    f.write_text("# Notes\r\n\r\nFirst page line.   \r\n\fSecond page.\n\n\n\nAfter gap.\n",
                 encoding="utf-8")
    [result] = import_files(workspace, [f])
    assert result.status == "imported"
    src = result.source
    assert re.fullmatch(r"field-notes-[0-9a-f]{8}", src.id)
    assert src.kind == "md" and len(src.pages) == 2
    assert src.pages[0]["text"] == "# Notes\n\nFirst page line."
    assert src.pages[1]["text"] == "Second page.\n\nAfter gap."
    check_offsets(src)
    assert src.file.read_bytes() == f.read_bytes()
    meta = io.read_toml(src.path / "source.toml")
    assert meta["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert src.id.endswith(meta["sha256"][:8])
    assert meta["original_path"] == str(f.resolve())
    assert {"name", "sha256", "kind", "pages", "characters", "imported_at"} <= set(meta)
    assert not list(workspace.sources_dir.glob(".import-*"))


def test_pdf_pages_headers_footers_and_hyphens(workspace, three_pages):
    [result] = import_files(workspace, [three_pages])
    src = result.source
    assert src.kind == "pdf" and len(src.pages) == 3
    check_offsets(src)
    text = src.text
    # running header and the varying page numbers are gone, and reported
    assert "Test Handbook" not in text
    assert not re.search(r"Page \d", text)
    warnings = io.read_toml(src.path / "source.toml")["warnings"]
    assert any("running header" in w and "Test Handbook" in w for w in warnings)
    assert any("page number" in w for w in warnings)
    # hyphens: a broken word is joined, a compound seen whole elsewhere keeps its hyphen,
    # hyphens inside a line stay
    assert "important arrival" in text and "impor-" not in text
    assert "the well-known grain barges" in text
    assert "forty-two" in text and "state-of-the-art steam tug" in text
    # lines of a paragraph are joined; a vertical gap starts a new paragraph
    first, second = src.pages[0]["text"].split("\n\n")
    assert first.startswith("The harbour master of Tolvik keeps a ledger of every boat that "
                            "enters the bay, and the ledger of 1821")
    assert second == "A second paragraph begins after a gap and speaks of nets, tar and salt."
    assert src.pages[1]["text"] == " ".join(PAGE_2)
    assert src.pages[2]["text"] == PAGE_3[0]


def test_header_kept_when_it_is_not_repeated(workspace, tmp_path):
    """A single-page PDF has nothing to compare with: its top line is text, not a header."""
    pdf = multipage_pdf(tmp_path / "one.pdf", [PAGE_3], header="Only Once", footer=None)
    [result] = import_files(workspace, [pdf])
    assert result.source.text.startswith("Only Once")


def test_two_columns_are_read_left_then_right(workspace, tmp_path):
    left = [f"Left column line {i} about alder trees and moss" for i in range(14)]
    right = [f"Right column line {i} about basalt and sea spray" for i in range(14)]
    pdf = two_column_pdf(tmp_path / "columns.pdf", "Survey of the Western Plateau of Karsholm",
                         left, right)
    [result] = import_files(workspace, [pdf])
    text = result.source.text
    positions = [text.index(line) for line in left + right]
    assert positions == sorted(positions), "columns interleaved or out of order"
    assert text.index("Survey of the Western Plateau") < positions[0]
    # a page that is one column must not be split down the middle
    one = extract_pdf(multipage_pdf(tmp_path / "one-col.pdf", [PAGE_1, PAGE_2], header=None))
    assert "The harbour master of Tolvik keeps a ledger of every boat" in one.pages[0]


def test_paragraphs_flowing_through_columns_and_pages(workspace, tmp_path):
    """Justified text set in two columns over several pages (platypus frames) comes back in
    order, paragraphs whole within a page, without the running header or page numbers."""
    import random

    rng = random.Random(0)
    vocab = "tide moss basalt ferry cliff puffin dome mirror night star season north".split()
    paragraphs = [f"Paragraph {i} begins here: "
                  + " ".join(rng.choice(vocab) for _ in range(rng.randint(30, 80)))
                  + f". End of paragraph {i}." for i in range(40)]
    pdf = flowing_columns_pdf(tmp_path / "journal.pdf", paragraphs)
    [result] = import_files(workspace, [pdf])
    src = result.source
    assert len(src.pages) >= 3
    check_offsets(src)
    assert "Field Journal" not in src.text
    # the words come back exactly in order: nothing lost, nothing interleaved, no page numbers
    assert src.text.split() == " ".join(paragraphs).split()
    # paragraphs are whole: lines (and column breaks) within a page are joined, and only the
    # first or last paragraph of a page may be a piece of one that a page break cut
    for page in src.pages:
        pieces = page["text"].split("\n\n")
        assert all(piece in paragraphs for piece in pieces[1:-1])
        assert all(any(piece in p for p in paragraphs) for piece in pieces)
    assert sum(p in src.text.split("\n\n") for p in paragraphs) >= 40 - len(src.pages)


def test_hyphens_before_capitals_and_digits_are_kept(workspace, tmp_path):
    pdf = multipage_pdf(tmp_path / "names.pdf", [[
        "The records of the harbour office were kept by the clerk Jean-",
        "Paul Arnesen over the long period of his service in the years 1990-",
        "1995, and then by his daughter.",
    ]], header=None, footer=None)
    [result] = import_files(workspace, [pdf])
    assert "clerk Jean-Paul Arnesen" in result.source.text
    assert "years 1990-1995, and" in result.source.text


def test_korean_text_is_preserved(workspace, tmp_path):
    lines = ["카르스홀름 섬 천문대는 1961년에 세워졌습니다.",
             "여객선은 화요일과 금요일에 브렌빅 항구에서 출발합니다."]
    pdf = korean_pdf(tmp_path / "천문대 안내.pdf", lines)
    [result] = import_files(workspace, [pdf])
    src = result.source
    assert src.name == "천문대 안내.pdf"
    assert re.fullmatch(r"source-[0-9a-f]{8}", src.id)  # ASCII folder name
    for line in lines:
        assert line in src.text
    check_offsets(src)
    assert src.file.is_file()


# -- idempotence ----------------------------------------------------------------------------------
def test_importing_again_changes_nothing(cli, workspace, three_pages, tmp_path):
    first = cli("-w", "test", "data", "import", str(three_pages))
    assert first.exit_code == 0, first.output
    assert "imported" in first.stdout and "3 page(s)" in first.stdout
    before = snapshot(workspace.path)
    copy = tmp_path / "renamed copy.pdf"
    copy.write_bytes(three_pages.read_bytes())
    again = cli("-w", "test", "data", "import", str(three_pages), str(copy))
    assert again.exit_code == 0, again.output
    assert again.stdout.count("unchanged") == 2 and "already imported as" in again.stdout
    assert snapshot(workspace.path) == before
    rows = json.loads(cli("-w", "test", "data", "import", str(copy), "--format", "json").stdout)
    assert [(r["status"], r["id"]) for r in rows] == [("unchanged", first_id(workspace))]
    results = import_files(workspace, [three_pages])
    assert results[0].status == "unchanged" and results[0].source.id == first_id(workspace)


def first_id(workspace) -> str:
    [src] = list_sources(workspace)
    return src.id


def test_same_file_twice_in_one_call_is_imported_once(workspace, three_pages):
    results = import_files(workspace, [three_pages, three_pages])
    assert [r.status for r in results] == ["imported", "unchanged"]
    assert len(list_sources(workspace)) == 1


# -- bad files --------------------------------------------------------------------------------
def _make_bad(kind: str, tmp_path: Path, good: Path) -> Path:
    if kind == "encrypted":
        return encrypted_pdf(tmp_path / "secret.pdf")
    if kind == "corrupt":
        return corrupt_pdf(tmp_path / "broken.pdf", good)
    if kind == "not-a-pdf":
        p = tmp_path / "notes.pdf"
        p.write_text("these are plain notes with the wrong extension\n")
        return p
    if kind == "empty":
        p = tmp_path / "nothing.pdf"
        p.write_bytes(b"")
        return p
    if kind == "empty-text":
        p = tmp_path / "blank.txt"
        p.write_text("  \n\n \f \n")
        return p
    if kind == "blank-page":
        return blank_pdf(tmp_path / "blank.pdf")
    if kind == "image-only":
        return image_only_pdf(tmp_path / "scan.pdf")
    if kind == "unsupported":
        p = tmp_path / "report.docx"
        p.write_bytes(b"PK\x03\x04 not really a docx")
        return p
    if kind == "missing":
        return tmp_path / "does-not-exist.pdf"
    if kind == "folder":
        p = tmp_path / "a-folder"
        p.mkdir()
        return p
    if kind == "not-utf8":
        p = tmp_path / "latin1.txt"
        p.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
        return p
    raise AssertionError(kind)


BAD = {
    "encrypted": "is encrypted: decrypt it first, e.g. qpdf --decrypt in.pdf out.pdf",
    "corrupt": "is a corrupt PDF",
    "not-a-pdf": "is not a PDF",
    "empty": "is empty (0 bytes)",
    "empty-text": "has no text (only whitespace)",
    "blank-page": "has no text: its 1 page(s) are blank",
    "image-only": "has no extractable text (image-only or scanned pages): run OCR first, "
                  "e.g. ocrmypdf",
    "unsupported": "has an unsupported extension .docx: import .pdf, .txt or .md files",
    "missing": "does not exist",
    "folder": "is a folder",
    "not-utf8": "is not UTF-8 text",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_file_is_refused_with_one_line(cli, workspace, three_pages, tmp_path, kind):
    bad = _make_bad(kind, tmp_path, three_pages)
    before = snapshot(workspace.path)
    result = cli("-w", "test", "data", "import", str(bad))
    assert result.exit_code == 3  # ExitCode.BAD_DATA
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    assert message.startswith(f"Error: {bad} ")
    assert BAD[kind] in message
    assert "Traceback" not in result.output
    assert snapshot(workspace.path) == before
    with pytest.raises(SourceError) as e:
        import_files(workspace, [bad])
    assert e.value.path == str(bad) and BAD[kind] in str(e.value)


def test_failed_batch_imports_nothing(cli, workspace, three_pages, tmp_path):
    """All or nothing: one bad file among good ones, and the workspace is left as it was."""
    good_md = tmp_path / "good.md"
    good_md.write_text("A good note about the harbour.\n")
    bad = encrypted_pdf(tmp_path / "locked.pdf")
    missing = tmp_path / "gone.txt"
    before = snapshot(workspace.path)
    result = cli("-w", "test", "data", "import", str(good_md), str(bad), str(three_pages),
                 str(missing))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"Error: {bad} is encrypted: decrypt it first, e.g. qpdf --decrypt in.pdf out.pdf"
    assert lines[1].startswith(f"{missing} does not exist")
    assert lines[2].startswith("nothing was imported")
    assert snapshot(workspace.path) == before
    assert list_sources(workspace) == []
    # the good files import fine on their own afterwards
    ok = cli("-w", "test", "data", "import", str(good_md), str(three_pages))
    assert ok.exit_code == 0, ok.output
    assert len(list_sources(workspace)) == 2


def test_reserved_file_name_is_stored_beside_the_extracted_text(workspace, tmp_path):
    f = tmp_path / "text.txt"
    f.write_text("A file called text.txt.\n")
    [r] = import_files(workspace, [f])
    assert r.source.name == "text.txt" and r.source.file.name == "original-text.txt"
    assert r.source.file.read_bytes() == f.read_bytes()
    assert r.source.text == "A file called text.txt."


# -- listing and reading ----------------------------------------------------------------------
def test_sources_command_and_api(cli, workspace, three_pages, tmp_path):
    empty = cli("-w", "test", "data", "sources")
    assert empty.exit_code == 0 and "no sources yet" in empty.stdout
    note = tmp_path / "note.txt"
    note.write_text("One short note.\n")
    assert cli("-w", "test", "data", "import", str(three_pages), str(note)).exit_code == 0
    table = cli("-w", "test", "data", "sources")
    assert table.exit_code == 0
    assert "tolvik harbour.pdf" in table.stdout and "note.txt" in table.stdout
    assert table.stdout.splitlines()[0].split()[:4] == ["ID", "NAME", "KIND", "PAGES"]
    rows = json.loads(cli("-w", "test", "data", "sources", "--format", "json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["tolvik harbour.pdf"]["pages"] == 3
    assert by_name["note.txt"] == {**by_name["note.txt"], "kind": "txt", "pages": 1,
                                   "characters": len("One short note.")}
    sources = list_sources(workspace)
    assert sorted(s.id for s in sources) == sorted(r["id"] for r in rows)
    pdf = read_source(workspace, by_name["tolvik harbour.pdf"]["id"])
    assert read_source(workspace, "note.txt").text == "One short note."
    assert pdf.pages[1]["text"] == " ".join(PAGE_2)
    with pytest.raises(UserError, match="no source 'nope'"):
        read_source(workspace, "nope")


# -- the shipped sample material --------------------------------------------------------------
def _words(text: str) -> list[str]:
    text = re.sub(r"^#+ |^- ", "", text, flags=re.M)
    return re.findall(r"\w+(?:[.,:'-]\w+)*", text.lower())


def test_sample_pdf_extracts_like_the_markdown(workspace):
    results = import_files(workspace, [HANDBOOK_MD, HANDBOOK_PDF])
    md, pdf = (r.source for r in results)
    assert len(pdf.pages) >= 3
    check_offsets(pdf)
    assert "Karsholm Island Observatory - Staff" not in pdf.text  # the running header
    assert pdf.text.startswith("Karsholm Island Observatory: Staff and Visitor Handbook\n\n"
                               "This handbook describes")  # the title stays, on one line
    assert not re.search(r"Page \d", pdf.text)
    assert any("running header" in w for w in pdf.warnings)
    a, b = _words(md.text), _words(pdf.text)
    ratio = difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()
    assert ratio > 0.99, ratio
    assert "\n\nHistory\n\n" in pdf.text  # headings stay paragraphs of their own


def test_sample_pdf_is_built_from_the_markdown(tmp_path):
    """The committed PDF is what make_sample_pdf.py makes from the committed Markdown."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample_pdf", DATA / "make_sample_pdf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.build(HANDBOOK_MD, tmp_path / "rebuilt.pdf")
    assert extract_pdf(out).pages == extract_pdf(HANDBOOK_PDF).pages


def _rows(name: str) -> list[dict]:
    rows = [obj for _, obj in io.iter_jsonl(DATA / name)]
    assert rows, name
    return rows


def test_general_qa_file():
    rows = _rows("general_qa.jsonl")
    assert 120 <= len(rows) <= 200
    for r in rows:
        assert set(r) == {"question", "answer"}
        assert r["question"].strip().endswith("?") and r["answer"].strip()
    assert len({r["question"] for r in rows}) == len(rows)


def test_sample_qa_file():
    handbook = HANDBOOK_MD.read_text(encoding="utf-8").lower()
    rows = _rows("sample_qa.jsonl")
    assert 50 <= len(rows) <= 130
    for r in rows:
        assert set(r) == {"question", "answer", "keywords", "source"}
        assert r["source"] == HANDBOOK_MD.name
        assert r["keywords"] and all(isinstance(k, str) and k for k in r["keywords"])
        for k in r["keywords"]:
            assert k.lower() in r["answer"].lower(), (r["question"], k)
            assert k.lower() in handbook, (r["question"], k)
    assert len({r["question"] for r in rows}) == len(rows)


def test_eval_questions_file():
    handbook = HANDBOOK_MD.read_text(encoding="utf-8").lower()
    rows = _rows("eval_questions.jsonl")
    assert 15 <= len(rows) <= 30
    assert len({r["id"] for r in rows}) == len(rows)
    categories = {r["category"] for r in rows}
    assert categories <= {"factual", "numeric", "comparative", "temporal", "procedural"}
    assert {"factual", "numeric", "comparative"} <= categories
    for r in rows:
        assert {"id", "question", "reference_answer", "category", "keywords"} <= set(r)
        for k in r["keywords"]:
            assert k.lower() in r["reference_answer"].lower(), (r["id"], k)
            assert k.lower() in handbook, (r["id"], k)
    sample_questions = {r["question"] for r in _rows("sample_qa.jsonl")}
    assert not sample_questions & {r["question"] for r in rows}
