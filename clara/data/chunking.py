"""Token counting and token-bounded chunking of documents.

Two tokenizers count tokens:
- a model's own tokenizer (`--tokenizer MODEL`: a workspace model name or a local model folder,
  loaded with transformers' AutoTokenizer; it must be a fast tokenizer, for character offsets);
- the fallback when none is given, `regex`: a deterministic word/punctuation splitter
  (`\\w+|[^\\w\\s]`: each run of letters/digits is one token, each other non-space character is
  one token). Its counts are close to word counts, so a model's sub-word tokenizer will usually
  count 1.2-2x more tokens for the same text; give `--tokenizer` when the bound must be exact.

`chunk_text` cuts a text into chunks of at most `max_tokens` tokens; consecutive chunks share
exactly `overlap` tokens. Each cut is placed at the best boundary in the last half of the window:
a paragraph break, else a sentence end, else a line break, else a space, else mid-word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from clara.errors import UserError

REGEX_NAME = "regex"
_WORD = re.compile(r"\w+|[^\w\s]")


class TokenCounter(Protocol):
    name: str

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of every token of `text`, in order."""

    def count(self, text: str) -> int:
        """Number of tokens in `text` (no special tokens)."""

    def render_chat(self, messages: list[dict]) -> str | None:
        """The chat rendered as the model would see it, or None if the tokenizer has no template."""


class RegexTokenizer:
    """The fallback tokenizer: words and single punctuation characters (see module docstring)."""

    name = REGEX_NAME

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def count(self, text: str) -> int:
        return sum(1 for _ in _WORD.finditer(text))

    def render_chat(self, messages: list[dict]) -> str | None:
        return None


class HFTokenizer:
    """A transformers fast tokenizer, counted without special tokens."""

    def __init__(self, tokenizer, name: str):
        self.tok = tokenizer
        self.name = name

    def spans(self, text: str) -> list[tuple[int, int]]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(int(s), int(e)) for s, e in enc["offset_mapping"] if e > s]

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def render_chat(self, messages: list[dict]) -> str | None:
        if not getattr(self.tok, "chat_template", None):
            return None
        try:
            return self.tok.apply_chat_template(messages, tokenize=False)
        except Exception:  # a template that rejects some roles: count the plain text instead
            return None


def load_tokenizer(spec: str | None, ws=None) -> TokenCounter:
    """The tokenizer of a workspace model / local model folder, or the regex fallback for None."""
    if not spec or spec == REGEX_NAME:
        return RegexTokenizer()
    from clara.models.registry import model_source

    source = model_source(ws, spec)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise UserError(f"cannot load the tokenizer of {spec!r} ({source}): {e}") from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"the tokenizer of {spec!r} is not a fast tokenizer (no offsets)")
    name = spec if not Path(spec).exists() else str(Path(spec).name)
    return HFTokenizer(tok, name)


@dataclass(frozen=True)
class Chunk:
    """A piece of one document: its text, where it lies in the document, and its token count."""

    start: int
    end: int
    text: str
    tokens: int


def _boundary_rank(text: str, pos: int) -> int:
    """How good a cut before character `pos` is: 4 paragraph, 3 sentence, 2 line, 1 space, 0."""
    q = pos
    while q > 0 and text[q - 1].isspace():
        q -= 1
    gap = text[q:pos]
    if not gap:
        return 0
    if gap.count("\n") >= 2:
        return 4
    prev = text[q - 1] if q > 0 else ""
    if prev in ".!?" or (prev in "\"')]»”’" and q > 1 and text[q - 2] in ".!?"):
        return 3
    if "\n" in gap:
        return 2
    return 1


def _token_start(text: str, span: tuple[int, int]) -> int:
    """Start of a token's visible text (byte-level BPE tokens may carry their leading space)."""
    s, e = span
    while s < e and text[s].isspace():
        s += 1
    return s


def chunk_text(text: str, tokenizer: TokenCounter, max_tokens: int = 256,
               overlap: int = 32) -> list[Chunk]:
    """Cut `text` into chunks of at most `max_tokens` tokens sharing `overlap` tokens."""
    if max_tokens < 1:
        raise UserError(f"chunk size must be at least 1 token, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise UserError(f"overlap must be in [0, {max_tokens - 1}], got {overlap}")
    spans = tokenizer.spans(text)
    n = len(spans)
    chunks: list[Chunk] = []
    s = 0
    while s < n:
        e = min(s + max_tokens, n)
        if e < n:
            lo = s + max(overlap + 1, max_tokens // 2)
            best, best_rank = e, -1
            for b in range(e, lo - 1, -1):
                rank = _boundary_rank(text, _token_start(text, spans[b]))
                if rank > best_rank:
                    best, best_rank = b, rank
                    if rank == 4:
                        break
            e = best
        while True:
            piece = text[spans[s][0]:spans[e - 1][1]]
            lead = len(piece) - len(piece.lstrip())
            start, stripped = spans[s][0] + lead, piece.strip()
            count = tokenizer.count(stripped)
            # a sub-word tokenizer may count a cut-out piece differently from in context
            if count <= max_tokens or e - s <= 1:
                break
            e = max(s + 1, e - (count - max_tokens))
        chunks.append(Chunk(start, start + len(stripped), stripped, count))
        if e >= n:
            break
        s = max(e - overlap, s + 1)
    return chunks


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9가-힣])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: cut after . ! ? followed by space and a capital, digit or Hangul."""
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]
