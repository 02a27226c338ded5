"""Reading an imported source: its full extracted text with page markers, and search in it."""

from __future__ import annotations

from dataclasses import dataclass


def page_marked_text(pages: list[dict]) -> str:
    """The source's text page by page, each page under a `── page N ──` line."""
    return "\n\n".join(f"── page {p['page']} ──\n{p['text'].strip()}" for p in pages)


@dataclass
class Match:
    start: int
    end: int
    line: int
    column: int
    page: int | None


def find_all(text: str, query: str) -> list[Match]:
    """Every case-insensitive occurrence of `query` in a page-marked text, with its line,
    column and page."""
    out: list[Match] = []
    if not query:
        return out
    low, q = text.lower(), query.lower()
    i = low.find(q)
    while i >= 0:
        before = text[:i]
        line = before.count("\n")
        column = i - (before.rfind("\n") + 1)
        marker = before.rfind("── page ")
        page = int(before[marker + 8:].split(" ", 1)[0]) if marker >= 0 else None
        out.append(Match(i, i + len(query), line, column, page))
        i = low.find(q, i + 1)
    return out
