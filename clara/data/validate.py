"""Validation of dataset files and folders, reporting every problem as
`file:line: field: problem`. The row kinds and their rules are clara.data.formats' (the same
checks every trainer runs); this module reads files, detects kinds and checks whole datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from clara import io
from clara.data.formats import (DOC_KEYS,  # noqa: F401
                                canonical_kind, check_row, lora_row_kind)
from clara.errors import UserError, DataError, ExitCode, ValidationFailed

SPLITS = ("train", "valid", "test")


def _validate_numbered(rows: Iterable[tuple[int, Any]], kind: str, path: str,
                       state: dict | None = None) -> tuple[list[DataError], int]:
    kind = canonical_kind(kind)
    state = {} if state is None else state
    errors: list[DataError] = []
    n = 0
    for line, row in rows:
        n += 1
        errors += check_row(kind, row, path, line, state)
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
        if "data_type" in row or isinstance(row.get("question"), list):
            return "stage1"
        if not isinstance(row.get("question"), str) and len(docs) == 1:
            return "stage1"
        # a question string: stage 2 or 3 (also with one document, as a gold-only stage 2)
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
    raise UserError(f"{path}: cannot tell the dataset kind; give --kind")


def validate_file(path: str | Path, kind: str = "auto", state: dict | None = None
                  ) -> list[DataError]:
    """Every problem of one JSONL file (empty list: the file is valid); a file without rows is
    a problem, as training refuses it."""
    errors, n = _validate_file(Path(path), kind, state)
    if n == 0 and not errors:
        errors = [DataError(path, None, None, "no rows")]
    return errors


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
        raise UserError(f"no dataset folder {folder}")
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


# ---------------------------------------------------------------------------- before training
# What each trainer reads, and the command that trains on each other kind (the hint of a
# kind mismatch).
TRAINS_ON = {"cpt": ("text",), "sft": ("chat", "completions"), "stage1": ("stage1",),
             "stage2": ("stage2",), "stage3": ("stage3",)}
_COMMAND = {"text": "clara train lora --mode cpt", "chat": "clara train lora --mode sft",
            "completions": "clara train lora --mode sft", "stage1": "clara train stage1",
            "stage2": "clara train stage2", "stage3": "clara train stage3"}


def check_training_kind(folder: str | Path, trainer: str) -> str | None:
    """The dataset's kind, or a one-line UserError naming the command that trains on it.

    `trainer` is cpt, sft, stage1, stage2 or stage3. The kind comes from dataset.toml, else the
    first row (where stage 2 and 3 rows look alike, either is taken for the other)."""
    folder = Path(folder)
    wanted = TRAINS_ON[trainer]
    declared = _toml_kind(folder)
    try:
        actual = declared or detect_kind(folder)
    except UserError:
        return None  # no row tells: the row checks will say what is wrong
    if actual in wanted or (declared is None and {actual, trainer} <= {"stage2", "stage3"}):
        return actual
    what = {"cpt": "train lora --mode cpt", "sft": "train lora --mode sft"}.get(
        trainer, f"train {trainer}")
    hint = (f"train it with: {_COMMAND[actual]}" if actual in _COMMAND else
            "build a training set from it first (clara data build)")
    raise UserError(f"{folder}: a {actual} dataset, but clara {what} trains on "
                     f"{' or '.join(wanted)} rows; {hint}", exit_code=ExitCode.BAD_DATA)


def training_problems(folder: str | Path, trainer: str) -> tuple[dict[str, int], list[DataError]]:
    """(rows per split, problems) of train.jsonl and valid.jsonl read as `trainer` reads them
    (the row checks of clara.data.formats, row by row)."""
    folder = Path(folder)
    counts: dict[str, int] = {}
    errors: list[DataError] = []
    state: dict = {}
    for split in ("train", "valid"):
        f = folder / f"{split}.jsonl"
        if not f.is_file():
            continue
        n = 0
        try:
            for line, row in io.iter_jsonl(f, strict=False):
                n += 1
                kind = lora_row_kind(row, trainer) if trainer in ("cpt", "sft") else trainer
                errors += check_row(kind, row, f, line, state)
        except UnicodeDecodeError as e:
            errors.append(DataError(f, None, None, f"not UTF-8 text ({e.reason})"))
        except OSError as e:
            errors.append(DataError(f, None, None, f"cannot read ({e.strerror})"))
        counts[split] = n
    if counts.get("train", 0) == 0 and not errors:
        errors.append(DataError(folder / "train.jsonl", None, None,
                                "no rows" if "train" in counts else "missing"))
    return counts, errors


def require_training_data(folder: str | Path, trainer: str) -> dict[str, int]:
    """Check a dataset before a run is made: its kind, then every row; raise the first problem
    as one line (`file:line: field: problem`, as `clara data validate` prints it)."""
    check_training_kind(folder, trainer)
    counts, errors = training_problems(folder, trainer)
    if errors:
        raise first_problem(errors, folder)
    return counts


def first_problem(errors: list[DataError], folder: str | Path) -> DataError:
    """The first problem, saying how many more there are (one line)."""
    first = errors[0]
    if len(errors) > 1:
        return DataError(first.path, first.line, first.field,
                         f"{first.problem} (and {len(errors) - 1} more problems: "
                         f"clara data validate {folder})")
    return first
