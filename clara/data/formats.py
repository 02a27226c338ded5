"""Row formats: one checker per row kind, shared by `clara data validate`, the dataset builders
and every trainer (LoRA cpt/sft, the CLaRa stages), so all of them accept the same rows and
report the same `file:line: field: problem`.

Kinds (aliases: `cpt` = text, `sft` = chat):
    text         {"text": str}                                   (mlx-lm text format)
    chat         {"messages": [{"role", "content"}...]}          (mlx-lm chat format; last = assistant)
    completions  {"prompt": str, "completion": str}              (mlx-lm completions format)
    qa           {"question": str, "answer": str, "keywords"?: [str], "source"?: str, "doc"?: ...}
    docs         {"id": str, "text": str}
    stage1       CLaRa SCP rows: data_type "qa" (question list, answers list of equal length) or
                 "paraphrase" (answers list, element 0 the paraphrase); exactly 1 document
    stage2       question, k documents (the same k in every row), answer
    stage3       question, N candidates (N may differ between rows: a batch takes rows of one
                 N, as the reference needs N equal within a batch only), answer, optional
                 pos_index

Stage rows are read as ORIG reads them (clara-method.md §3.1): the documents are the first of
`docs` | `context` | `content` that is a list; the answer is `answer` if a string, else `answers`
if a list, else `golden_answers` if a list. Extra keys are allowed everywhere (mlx-lm and ORIG
ignore them). Questions and answers of stage rows may not spell a CLaRa token (<MEMi>, <AE>,
<ENC>, <SEP>): the model would read it as one. Documents may (they stay text).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clara.errors import UserError, DataError

KINDS = ("text", "chat", "completions", "qa", "docs", "stage1", "stage2", "stage3")
ALIASES = {"cpt": "text", "sft": "chat"}
CHOICES = ("auto", "cpt", "sft", *KINDS)
ROLES = ("system", "user", "assistant", "tool")
DOC_KEYS = ("docs", "context", "content")
_RESERVED = re.compile(r"<MEM\d+>|<AE>|<ENC>|<SEP>")


def canonical_kind(kind: str) -> str:
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise UserError(f"unknown dataset kind {kind!r} (expected one of {', '.join(CHOICES)})")
    return kind


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


class _Row:
    """Collects the problems of one row."""

    def __init__(self, path: str, line: int, row: dict, out: list[DataError]):
        self.path, self.line, self.row, self.out = path, line, row, out

    def err(self, field: str | None, problem: str) -> None:
        self.out.append(DataError(self.path, self.line, field, problem))

    def string(self, key: str, value: Any = None, required: bool = True, field: str | None = None
               ) -> bool:
        field = field or key
        if value is None:
            if key not in self.row or self.row[key] is None:
                if required:
                    self.err(field, "missing")
                return False
            value = self.row[key]
        if not isinstance(value, str):
            self.err(field, f"expected a string, got {_type(value)}")
            return False
        if not value.strip():
            self.err(field, "empty string")
            return False
        return True

    def string_list(self, key: str, required: bool = True, allow_empty: bool = False,
                    hint: str = "") -> list | None:
        value = self.row.get(key)
        if value is None:
            if required:
                self.err(key, "missing")
            return None
        if not isinstance(value, list):
            self.err(key, f"expected a list of strings, got {_type(value)}{hint}")
            return None
        if not value and not allow_empty:
            self.err(key, "empty list")
            return None
        ok = True
        for i, item in enumerate(value):
            ok &= self.string(key, item, field=f"{key}[{i}]")
        return value if ok else None


def _docs(r: _Row) -> list | None:
    for key in DOC_KEYS:
        if isinstance(r.row.get(key), list):
            return r.string_list(key)
    for key in DOC_KEYS:
        if key in r.row:
            r.err(key, f"expected a list of strings, got {_type(r.row[key])}")
            return None
    r.err("docs", "missing (give the documents as a list in docs, context or content)")
    return None


def _answer(r: _Row) -> None:
    row = r.row
    if isinstance(row.get("answer"), str):
        r.string("answer")
    elif isinstance(row.get("answers"), list):
        r.string_list("answers")
    elif isinstance(row.get("golden_answers"), list):
        r.string_list("golden_answers")
    elif "answer" in row:
        r.err("answer", f"expected a string, got {_type(row['answer'])}")
    elif "answers" in row:
        r.err("answers", f"expected a list of strings, got {_type(row['answers'])}")
    elif "golden_answers" in row:
        r.err("golden_answers", f"expected a list of strings, got {_type(row['golden_answers'])}")
    else:
        r.err("answer", "missing (give answer, answers or golden_answers)")


def _check_text(r: _Row, state: dict) -> None:
    r.string("text")


def _check_docs(r: _Row, state: dict) -> None:
    r.string("id")
    r.string("text")


def _check_completions(r: _Row, state: dict) -> None:
    r.string("prompt")
    r.string("completion")


def _check_qa(r: _Row, state: dict) -> None:
    r.string("question")
    r.string("answer")
    if "keywords" in r.row:
        r.string_list("keywords", allow_empty=True)
    if "source" in r.row:
        r.string("source")
    doc = r.row.get("doc")
    if isinstance(doc, list):
        r.string_list("doc")
    elif doc is not None:
        r.string("doc")


def _check_chat(r: _Row, state: dict) -> None:
    messages = r.row.get("messages")
    if messages is None:
        r.err("messages", "missing")
        return
    if not isinstance(messages, list):
        r.err("messages", f"expected a list of messages, got {_type(messages)}")
        return
    if not messages:
        r.err("messages", "empty list")
        return
    roles = []
    for i, m in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(m, dict):
            r.err(field, f"expected an object with role and content, got {_type(m)}")
            roles.append(None)
            continue
        role = m.get("role")
        if role is None:
            r.err(f"{field}.role", "missing")
        elif role not in ROLES:
            r.err(f"{field}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        elif role == "system" and i != 0:
            r.err(f"{field}.role", "a system message may only come first")
        roles.append(role)
        content = m.get("content")
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            r.err(f"{field}.content", "missing")
        elif content is not None:
            r.string("content", content, field=f"{field}.content")
    if "user" not in roles:
        r.err("messages", "no user message")
    last = len(messages) - 1
    if roles[-1] not in (None, "assistant"):
        r.err(f"messages[{last}].role",
              f"the last message must be from the assistant, got {roles[-1]!r}")


def _check_stage1(r: _Row, state: dict) -> None:
    docs = _docs(r)
    if docs is not None and len(docs) != 1:
        r.err(_doc_key(r.row), f"stage 1 rows need exactly 1 document, got {len(docs)}")
    data_type = r.row.get("data_type", "qa")
    if data_type == "paraphrase":
        answers = r.row.get("answers")
        if isinstance(answers, str):
            r.err("answers", "expected a list (element 0 is the paraphrase), got string")
        else:
            r.string_list("answers")
            _reserved(r, ("answers",))
        return
    if data_type != "qa":
        r.err("data_type", f"expected 'qa' or 'paraphrase', got {data_type!r}")
        return
    question = r.row.get("question")
    if isinstance(question, str):
        r.err("question", "expected a list of questions for a stage 1 qa row, got string")
        questions = None
    else:
        questions = r.string_list("question")
    if isinstance(r.row.get("answers"), str) or (
            "answers" not in r.row and isinstance(r.row.get("answer"), str)):
        r.err("answers", "expected a list of answers, one per question, got string")
        return
    answers = r.string_list("answers")
    if questions is not None and answers is not None and len(questions) != len(answers):
        r.err("answers", f"{len(answers)} answers for {len(questions)} questions "
                         "(the lists must have equal length)")
    _reserved(r, ("question", "answers"))


def _doc_key(row: dict) -> str:
    return next((k for k in DOC_KEYS if isinstance(row.get(k), list)), "docs")


def _check_retrieval(r: _Row, state: dict, what: str) -> None:
    r.string("question")
    _answer(r)
    docs = _docs(r)
    if docs is None:
        return
    key = _doc_key(r.row)
    if what == "candidates":
        pass  # stage 3: N may differ between rows (a batch takes rows of one N)
    elif "docs_count" not in state:
        state["docs_count"] = (len(docs), f"{r.path}:{r.line}")
    elif len(docs) != state["docs_count"][0]:
        n, where = state["docs_count"]
        r.err(key, f"has {len(docs)} {what}, but {where} has {n} "
                   "(every row needs the same number)")
    pos = r.row.get("pos_index")
    if pos is None:
        return
    if not isinstance(pos, list):
        r.err("pos_index", f"expected a list of document indices, got {_type(pos)}")
        return
    for j, i in enumerate(pos):
        if not isinstance(i, int) or isinstance(i, bool):
            r.err(f"pos_index[{j}]", f"expected an integer, got {_type(i)}")
        elif not 0 <= i < len(docs):
            r.err(f"pos_index[{j}]", f"{i} is out of range for {len(docs)} documents")


def _reserved(r: _Row, keys: tuple[str, ...]) -> None:
    """Questions and answers may not spell a CLaRa token (documents may: they stay text)."""
    for key in keys:
        value = r.row.get(key)
        items = [(key, value)] if isinstance(value, str) else \
            [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else []
        for field, text in items:
            found = _RESERVED.search(text) if isinstance(text, str) else None
            if found:
                r.err(field, f"contains the reserved token {found.group(0)}")


_TEXT_KEYS = ("question", "answer", "answers", "golden_answers")


def _check_stage2(r: _Row, state: dict) -> None:
    _check_retrieval(r, state, "documents")
    _reserved(r, _TEXT_KEYS)


def _check_stage3(r: _Row, state: dict) -> None:
    _check_retrieval(r, state, "candidates")
    _reserved(r, _TEXT_KEYS)


_CHECKS = {"text": _check_text, "chat": _check_chat, "completions": _check_completions,
           "qa": _check_qa, "docs": _check_docs, "stage1": _check_stage1,
           "stage2": _check_stage2, "stage3": _check_stage3}


# ---------------------------------------------------------------------------- one row
def check_row(kind: str, row: Any, path: str | Path, line: int,
              state: dict | None = None) -> list[DataError]:
    """Every problem of one row of `kind` (state: what earlier rows of the dataset fixed)."""
    if isinstance(row, DataError):
        return [row]
    if not isinstance(row, dict):
        return [DataError(path, line, None, f"expected a JSON object, got {_type(row)}")]
    errors: list[DataError] = []
    _CHECKS[canonical_kind(kind)](_Row(str(path), line, row, errors),
                                  {} if state is None else state)
    return errors


def _require(kind: str, row: Any, path, line: int, state: dict | None = None) -> dict:
    errors = check_row(kind, row, path, line, state)
    if errors:
        raise errors[0]
    return row


def lora_row_kind(row: Any, mode: str) -> str:
    """The kind a LoRA row is read as: text for cpt; completions or chat for sft."""
    if mode == "cpt":
        return "text"
    return "completions" if isinstance(row, dict) and "prompt" in row and \
        "completion" in row else "chat"


def parse_lora_row(row: Any, mode: str, path, line: int) -> str:
    """The row's kind ("text", "chat", "completions"), or its first problem as a DataError."""
    kind = lora_row_kind(row, mode)
    _require(kind, row, path, line)
    return kind


def stage_docs(row: dict) -> list[str]:
    return next(row[k] for k in DOC_KEYS if isinstance(row.get(k), list))


def _answer_of(row: dict) -> str:
    if isinstance(row.get("answer"), str):
        return row["answer"]
    return row["answers"][0] if isinstance(row.get("answers"), list) else \
        row["golden_answers"][0]


def parse_stage_row(row: Any, stage: str, top_k: int, path, line: int,
                    state: dict | None = None) -> dict:
    """One training sample of a CLaRa stage from a §3 row, or its first problem as a
    DataError: the row's format, then what the run's top_k asks of it."""
    _require(stage, row, path, line, state)
    docs = stage_docs(row)
    key = _doc_key(row)
    if stage in ("stage1", "stage2") and len(docs) != top_k:
        raise DataError(path, line, key, f"has {len(docs)} documents; {stage} needs exactly "
                                         f"top_k = {top_k}")
    if stage == "stage3" and len(docs) < top_k:
        raise DataError(path, line, key, f"has {len(docs)} candidates, fewer than top_k = "
                                         f"{top_k}")
    if stage == "stage1":
        if row.get("data_type", "qa") == "paraphrase":
            return {"kind": "paraphrase", "docs": docs, "answer": row["answers"][0]}
        return {"kind": "qa", "docs": docs, "questions": row["question"],
                "answers": row["answers"]}
    sample = {"kind": "rag", "docs": docs, "question": row["question"],
              "answer": _answer_of(row)}
    if stage == "stage3" or (stage == "stage2" and row.get("pos_index")):
        sample["pos"] = list(row.get("pos_index") or [])
    return sample


def read_stage_rows(path: str | Path, stage: str, top_k: int,
                    state: dict | None = None) -> list[dict]:
    """Every sample of a stage file; the first bad row raises its DataError."""
    from clara import io

    state = {} if state is None else state
    return [parse_stage_row(row, stage, top_k, path, line, state)
            for line, row in io.iter_jsonl(path)]
