"""QA sets for evaluation: a JSONL file, or a workspace dataset (its test split, else valid).

A row is {"question", and the reference as "answer" | "reference_answer" | "golden_answers"[0] |
"answers"[0]} with optional "keywords", "category", "id", "source", "docs" (candidate documents,
CLaRa's stage-2/3 rows) and "pos_index" (the gold documents among them); or a chat row
{"messages": [..., user, assistant]} whose last user/assistant turns are question and answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clara import io
from clara.errors import UserError, DataError
from clara.workspace import Workspace

ANSWER_KEYS = ("answer", "reference_answer", "golden_answers", "answers")


@dataclass
class QARow:
    id: str
    question: str
    answer: str
    keywords: list[str] = field(default_factory=list)
    category: str | None = None
    source: str | None = None
    docs: list[str] = field(default_factory=list)
    pos_index: list[int] = field(default_factory=list)
    line: int = 0


def _text(value, path, line, key) -> str:
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, line, key, "must be a non-empty string (or list of them)")
    return value.strip()


def parse_row(row, path, line: int) -> QARow:
    if not isinstance(row, dict):
        raise DataError(path, line, None, "each line must be a JSON object")
    if "messages" in row and "question" not in row:
        msgs = row["messages"]
        if not isinstance(msgs, list):
            raise DataError(path, line, "messages", "must be a list")
        users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        bots = [m for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"]
        if not users or not bots:
            raise DataError(path, line, "messages", "needs a user and an assistant message")
        question = _text(users[-1].get("content"), path, line, "messages")
        answer = _text(bots[-1].get("content"), path, line, "messages")
    else:
        if "question" not in row:
            raise DataError(path, line, "question", "missing")
        question = _text(row["question"], path, line, "question")
        key = next((k for k in ANSWER_KEYS if k in row), None)
        if key is None:
            raise DataError(path, line, "answer", f"missing (one of {', '.join(ANSWER_KEYS)})")
        answer = _text(row[key], path, line, key)
    keywords = row.get("keywords") or []
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise DataError(path, line, "keywords", "must be a list of strings")
    docs = row.get("docs") or []
    if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
        raise DataError(path, line, "docs", "must be a list of strings")
    pos = row.get("pos_index") or []
    pos = [pos] if isinstance(pos, int) else pos
    if not isinstance(pos, list) or not all(isinstance(p, int) and 0 <= p < len(docs)
                                            for p in pos):
        raise DataError(path, line, "pos_index", "must be indices into docs")
    return QARow(str(row.get("id") or line), question, answer, list(keywords),
                 row.get("category"), row.get("source"), list(docs), list(pos), line)


def read_qa_file(path: str | Path, limit: int | None = None) -> list[QARow]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no QA file {path}")
    rows = []
    for line, row in io.iter_jsonl(path):
        rows.append(parse_row(row, path, line))
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise UserError(f"{path}: no QA rows")
    return rows


def qa_path(ws: Workspace | None, ref: str | Path, split: str | None = None) -> Path:
    """The JSONL file of `ref`: a file, or a dataset folder / name (split test, else valid)."""
    from clara.data.datasets import resolve

    target = resolve(ws, ref)
    if target.is_file():
        return target
    for name in ([split] if split else ["test", "valid"]):
        if (target / f"{name}.jsonl").is_file():
            return target / f"{name}.jsonl"
    raise UserError(f"{target}: no {split or 'test or valid'}.jsonl to evaluate on")


def load_qa(ws: Workspace | None, ref: str | Path, split: str | None = None,
            limit: int | None = None) -> tuple[list[QARow], Path]:
    path = qa_path(ws, ref, split)
    return read_qa_file(path, limit), path
