"""Row-by-row validation of dataset files, reporting every problem as `file:line: field: problem`.

Kinds (aliases: `cpt` = text, `sft` = chat):
    text         {"text": str}                                   (mlx-lm text format)
    chat         {"messages": [{"role", "content"}...]}          (mlx-lm chat format; last = assistant)
    completions  {"prompt": str, "completion": str}              (mlx-lm completions format)
    qa           {"question": str, "answer": str, "keywords"?: [str], "source"?: str, "doc"?: ...}
    docs         {"id": str, "text": str}
    stage1       CLaRa SCP rows: data_type "qa" (question list, answers list of equal length) or
                 "paraphrase" (answers list, element 0 the paraphrase); exactly 1 document
    stage2       question, k documents (the same k in every row), answer
    stage3       question, N candidates (the same N in every row), answer, optional pos_index

Stage rows are read as ORIG reads them (clara-method.md §3.1): the documents are the first of
`docs` | `context` | `content` that is a list; the answer is `answer` if a string, else `answers`
if a list, else `golden_answers` if a list. Extra keys are allowed everywhere (mlx-lm and ORIG
ignore them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from clara import io
from clara.errors import ClaraError, DataError, ValidationFailed

KINDS = ("text", "chat", "completions", "qa", "docs", "stage1", "stage2", "stage3")
ALIASES = {"cpt": "text", "sft": "chat"}
CHOICES = ("auto", "cpt", "sft", *KINDS)
SPLITS = ("train", "valid", "test")
ROLES = ("system", "user", "assistant", "tool")
DOC_KEYS = ("docs", "context", "content")


def canonical_kind(kind: str) -> str:
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ClaraError(f"unknown dataset kind {kind!r} (expected one of {', '.join(CHOICES)})")
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


def _doc_key(row: dict) -> str:
    return next((k for k in DOC_KEYS if isinstance(row.get(k), list)), "docs")


def _check_retrieval(r: _Row, state: dict, what: str) -> None:
    r.string("question")
    _answer(r)
    docs = _docs(r)
    if docs is None:
        return
    key = _doc_key(r.row)
    if "docs_count" not in state:
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


def _check_stage2(r: _Row, state: dict) -> None:
    _check_retrieval(r, state, "documents")


def _check_stage3(r: _Row, state: dict) -> None:
    _check_retrieval(r, state, "candidates")


_CHECKS = {"text": _check_text, "chat": _check_chat, "completions": _check_completions,
           "qa": _check_qa, "docs": _check_docs, "stage1": _check_stage1,
           "stage2": _check_stage2, "stage3": _check_stage3}


def _validate_numbered(rows: Iterable[tuple[int, Any]], kind: str, path: str,
                       state: dict | None = None) -> tuple[list[DataError], int]:
    check = _CHECKS[canonical_kind(kind)]
    state = {} if state is None else state
    errors: list[DataError] = []
    n = 0
    for line, row in rows:
        n += 1
        if isinstance(row, DataError):
            errors.append(row)
        elif not isinstance(row, dict):
            errors.append(DataError(path, line, None, f"expected a JSON object, got {_type(row)}"))
        else:
            check(_Row(path, line, row, errors), state)
    return errors, n


def validate_rows(rows: Iterable[Any], kind: str, path: str = "<rows>", start: int = 1,
                  state: dict | None = None) -> list[DataError]:
    """Problems of in-memory rows (numbered from `start`) as if they were lines of `path`."""
    return _validate_numbered(enumerate(rows, start), kind, str(path), state)[0]


def detect_row_kind(row: Any) -> str | None:
    """Guess a kind from one row (stage 2 vs 3: up to 5 documents is stage 2)."""
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "chat"
    if "prompt" in row and "completion" in row:
        return "completions"
    docs = next((row[k] for k in DOC_KEYS if isinstance(row.get(k), list)), None)
    if docs is not None:
        if "data_type" in row or isinstance(row.get("question"), list) or len(docs) == 1:
            return "stage1"
        return "stage2" if len(docs) <= 5 else "stage3"
    if "question" in row and "answer" in row:
        return "qa"
    if "text" in row:
        return "docs" if "id" in row else "text"
    return None


def _toml_kind(folder: Path) -> str | None:
    meta = folder / "dataset.toml"
    if meta.is_file():
        kind = io.read_toml(meta).get("kind")
        if isinstance(kind, str):
            return canonical_kind(kind)
    return None


def detect_kind(path: str | Path) -> str:
    """The kind of a file or dataset folder: from dataset.toml, else from the first row."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    kind = _toml_kind(folder)
    if kind:
        return kind
    files = [path] if path.is_file() else [path / f"{s}.jsonl" for s in SPLITS]
    for f in files:
        if not f.is_file():
            continue
        try:
            for _, row in io.iter_jsonl(f, strict=False):
                if isinstance(row, DataError):
                    continue
                kind = detect_row_kind(row)
                if kind:
                    return kind
                break
        except UnicodeDecodeError:
            continue
    raise ClaraError(f"{path}: cannot tell the dataset kind; give --kind")


def validate_file(path: str | Path, kind: str = "auto", state: dict | None = None
                  ) -> list[DataError]:
    """Every problem of one JSONL file (empty list: the file is valid)."""
    return _validate_file(Path(path), kind, state)[0]


def _validate_file(path: Path, kind: str, state: dict | None) -> tuple[list[DataError], int]:
    if not path.is_file():
        return [DataError(path, None, None, "no such file")], 0
    kind = detect_kind(path) if kind == "auto" else kind
    try:
        return _validate_numbered(io.iter_jsonl(path, strict=False), kind, str(path), state)
    except UnicodeDecodeError as e:
        return [DataError(path, None, None, f"not UTF-8 text ({e.reason})")], 0


def dataset_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return [folder / f"{s}.jsonl" for s in SPLITS if (folder / f"{s}.jsonl").is_file()]


def validate_dataset(folder: str | Path, kind: str = "auto"
                     ) -> tuple[str, dict[str, int], list[DataError]]:
    """(kind, rows per split, problems) of a dataset folder; train.jsonl must exist and have rows.

    Stage 2/3 document counts must agree across the splits too.
    """
    folder = Path(folder)
    kind = detect_kind(folder) if kind == "auto" else canonical_kind(kind)
    errors: list[DataError] = []
    counts: dict[str, int] = {}
    state: dict = {}
    for f in dataset_files(folder):
        errs, n = _validate_file(f, kind, state)
        errors += errs
        counts[f.stem] = n
    if "train" not in counts:
        errors.insert(0, DataError(folder / "train.jsonl", None, None, "missing"))
    elif counts["train"] == 0:
        errors.insert(0, DataError(folder / "train.jsonl", None, None, "no rows"))
    return kind, counts, errors


def require_valid(dataset_dir: str | Path, kind: str | Sequence[str] | None = None
                  ) -> dict[str, int]:
    """Check a dataset before training; return rows per split or raise ValidationFailed.

    `kind` is what the caller can train on (one kind or several, aliases allowed); the dataset's
    own kind (dataset.toml, else its first row) must be one of them.
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise ClaraError(f"no dataset folder {folder}")
    actual = detect_kind(folder)
    if kind is not None:
        wanted = [kind] if isinstance(kind, str) else list(kind)
        wanted = [canonical_kind(k) for k in wanted]
        if actual not in wanted:
            raise ValidationFailed([DataError(folder / "dataset.toml", None, "kind",
                                              f"is {actual!r}, expected {' or '.join(wanted)}")])
    _, counts, errors = validate_dataset(folder, actual)
    if errors:
        raise ValidationFailed(errors)
    return counts
