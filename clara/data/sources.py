"""Imported documents: copy PDFs, .txt and .md into a workspace with page-tracked text.

Each source is a folder `sources/<slug-of-stem>-<sha256[:8]>/` holding
    <original file>   the file as imported, under its own name
    source.toml       name, file, original_path, sha256, kind, pages, characters, imported_at,
                      warnings (e.g. removed running headers)
    text.txt          the page texts joined by "\\n\\n"
    pages.jsonl       one record per page: {"source", "page", "start", "end", "text"}, where
                      start/end are character (not byte) offsets: text.txt[start:end] == text

Importing is content-addressed: a file whose bytes are already in the workspace changes nothing.
One call is all or nothing: every file is extracted into a hidden temporary folder first, and
only when all of them succeeded are the folders renamed into place. If any file fails, the error
names each bad file and nothing at all is imported, so the workspace stays exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from clara import io
from clara.data.pdftext import SourceError, extract_pdf
from clara.errors import UserError
from clara.workspace import Workspace, now_iso

KINDS = {".pdf": "pdf", ".txt": "txt", ".md": "md", ".markdown": "md"}
PAGE_SEPARATOR = "\n\n"
_RESERVED = {"source.toml", "pages.jsonl", "text.txt"}


@dataclass
class Source:
    """One imported document. `path` is its folder in the workspace; `file` the stored original."""

    id: str = field(metadata={"help": "Folder name: <slug>-<sha256[:8]>."})
    name: str = field(metadata={"help": "File name as imported."})
    kind: str = field(metadata={"help": "pdf, txt or md."})
    path: Path = field(metadata={"help": "The source's folder in the workspace."})
    pages: list[dict] = field(metadata={"help": "Page records as in pages.jsonl."})
    sha256: str = ""
    characters: int = 0
    original_path: str = ""
    imported_at: str = ""
    warnings: list[str] = field(default_factory=list)
    file_name: str = ""

    @property
    def text(self) -> str:
        return (self.path / "text.txt").read_text(encoding="utf-8")

    @property
    def file(self) -> Path:
        return self.path / (self.file_name or self.name)

    def summary(self) -> dict:
        """The source.toml fields plus id and folder, without the page texts (for listings)."""
        return {"id": self.id, "name": self.name, "kind": self.kind, "pages": len(self.pages),
                "characters": self.characters, "sha256": self.sha256,
                "original_path": self.original_path, "imported_at": self.imported_at,
                "warnings": list(self.warnings), "path": str(self.path)}


@dataclass
class ImportResult:
    path: Path
    id: str
    status: str  # "imported" or "unchanged"
    message: str
    source: Source | None = None


# -- helpers ----------------------------------------------------------------------------------
def slugify(stem: str, limit: int = 40) -> str:
    """ASCII, lowercase, dashes: a folder name that is safe everywhere ('source' if nothing is left)."""
    ascii_ = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")[:limit].strip("-")
    return slug or "source"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def page_records(name: str, texts: list[str]) -> tuple[str, list[dict]]:
    """Join page texts into one text and locate each page in it."""
    records, offset = [], 0
    for number, text in enumerate(texts, 1):
        if number > 1:
            offset += len(PAGE_SEPARATOR)
        records.append({"source": name, "page": number, "start": offset,
                        "end": offset + len(text), "text": text})
        offset += len(text)
    return PAGE_SEPARATOR.join(texts), records


def _clean_text_page(text: str) -> str:
    lines = [l.rstrip() for l in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def extract_text_file(path: Path) -> list[str]:
    """A .txt/.md file as pages: split on form feeds, else one page."""
    raw = path.read_bytes()
    if not raw:
        raise SourceError(path, "is empty (0 bytes): nothing to import")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceError(path, f"is not UTF-8 text (bad byte at offset {e.start}): convert it "
                                "first, e.g. iconv -f latin1 -t utf-8 in.txt > out.txt") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    pages = [_clean_text_page(p) for p in text.split("\f")]
    if not any(p.strip() for p in pages):
        raise SourceError(path, "has no text (only whitespace): nothing to import")
    while len(pages) > 1 and not pages[-1].strip():  # a trailing form feed is not a page
        pages.pop()
    return pages


def _check_file(path: Path) -> str:
    if not path.exists():
        raise SourceError(path, "does not exist: check the path")
    if path.is_dir():
        raise SourceError(path, f"is a folder: pass the files in it, e.g. {path}/*.pdf")
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        suffix = path.suffix or "(none)"
        raise SourceError(path, f"has an unsupported extension {suffix}: import .pdf, .txt or "
                                ".md files (convert others first, e.g. pandoc in.docx -o out.md)")
    if path.stat().st_size == 0:
        raise SourceError(path, "is empty (0 bytes): nothing to import")
    return kind


def _existing(ws: Workspace) -> dict[str, str]:
    """sha256 -> source id for the sources already in the workspace."""
    out = {}
    for folder in ws.items("sources"):
        meta_path = folder / "source.toml"
        if meta_path.is_file():
            out[io.read_toml(meta_path).get("sha256", "")] = folder.name
    return out


def _stage(ws: Workspace, path: Path, kind: str, sha: str, source_id: str) -> Path:
    """Write a complete source folder under a hidden temporary name; return that folder."""
    if kind == "pdf":
        extracted = extract_pdf(path)
        texts, warnings = extracted.pages, extracted.warnings
    else:
        texts, warnings = extract_text_file(path), []
    text, records = page_records(path.name, texts)
    tmp = Path(tempfile.mkdtemp(prefix=f".import-{source_id}-", dir=ws.sources_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a source folder is an ordinary folder
    file_name = path.name if path.name not in _RESERVED else f"original-{path.name}"
    shutil.copyfile(path, tmp / file_name)
    io.write_text(tmp / "text.txt", text)
    io.write_jsonl(tmp / "pages.jsonl", records)
    io.write_toml(tmp / "source.toml", {
        "name": path.name, "file": file_name, "original_path": str(path.resolve()),
        "sha256": sha, "kind": kind, "pages": len(records), "characters": len(text),
        "imported_at": now_iso(), "warnings": warnings,
    })
    return tmp


# -- public API -------------------------------------------------------------------------------
def import_files(ws: Workspace, paths: Iterable[str | Path],
                 progress: Callable[[str], None] | None = None) -> list[ImportResult]:
    """Import files into `ws`; all or nothing (see the module docstring)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no files given: name one or more .pdf, .txt or .md files")
    ws.sources_dir.mkdir(parents=True, exist_ok=True)
    known = _existing(ws)
    staged: list[tuple[Path, str]] = []
    results: list[ImportResult] = []
    errors: list[SourceError] = []
    try:
        for path in paths:
            try:
                kind = _check_file(path)
                sha = file_sha256(path)
                if sha in known:
                    results.append(ImportResult(path, known[sha], "unchanged",
                                                f"already imported as {known[sha]}"))
                    continue
                source_id = f"{slugify(path.stem)}-{sha[:8]}"
                if progress:
                    progress(f"reading {path}")
                staged.append((_stage(ws, path, kind, sha, source_id), source_id))
                known[sha] = source_id
                results.append(ImportResult(path, source_id, "imported", f"imported as {source_id}"))
            except SourceError as e:
                errors.append(e)
        if errors:
            if len(paths) == 1:
                raise errors[0]
            lines = [str(e) for e in errors]
            lines.append("nothing was imported: fix or leave out the file(s) above")
            raise UserError("\n".join(lines))
        for tmp, source_id in staged:
            final = ws.sources_dir / source_id
            if final.exists():
                raise UserError(f"{final} exists but is not a complete source: remove it and "
                                 "import again")
        done = []
        try:
            for tmp, source_id in staged:
                os.rename(tmp, ws.sources_dir / source_id)
                done.append(source_id)
        except OSError:
            for source_id in done:  # put the workspace back as it was
                shutil.rmtree(ws.sources_dir / source_id, ignore_errors=True)
            raise
        staged = []
    finally:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        r.source = read_source(ws, r.id)
    return results


def _load(folder: Path) -> Source:
    meta = io.read_toml(folder / "source.toml")
    return Source(id=folder.name, name=meta.get("name", folder.name), kind=meta.get("kind", ""),
                  path=folder, pages=io.read_jsonl(folder / "pages.jsonl"),
                  sha256=meta.get("sha256", ""), characters=int(meta.get("characters", 0)),
                  original_path=meta.get("original_path", ""),
                  imported_at=meta.get("imported_at", ""),
                  warnings=list(meta.get("warnings", [])), file_name=meta.get("file", ""))


def list_sources(ws: Workspace) -> list[Source]:
    """Every imported source, by folder name."""
    return [_load(f) for f in ws.items("sources") if (f / "source.toml").is_file()]


def read_source(ws: Workspace, source_id: str) -> Source:
    """One source by id (folder name), or by its file name when that is unique."""
    folder = ws.sources_dir / source_id
    if "/" not in source_id and not source_id.startswith(".") and (folder / "source.toml").is_file():
        return _load(folder)
    matches = [s for s in list_sources(ws) if s.name == source_id]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        ids = ", ".join(s.id for s in matches)
        raise UserError(f"several sources are called {source_id!r} ({ids}): give the id")
    raise UserError(f"no source {source_id!r} in workspace {ws.name} "
                     "(see: clara data sources)")
