"""File I/O that never leaves a half-written file: write to a temporary name, then rename.

Every file `clara` writes goes through these helpers. Appends to JSONL logs write one whole line
per call, so a reader tailing the file sees complete records or nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import tomli_w

from clara.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# mkstemp creates files readable by their owner alone; give them the usual mode instead.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically; return the row count."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one record as a single write, so concurrent readers never see half a line."""
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = os.write(fd, line)
            if written < len(line):  # a full disk takes part of a line: take it back
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def _decode(path: Path, data: bytes, line: int | None = None) -> str:
    """UTF-8 text, or a DataError naming the file and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if line is None:
            line = data.count(b"\n", 0, e.start) + 1
            column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        else:
            column = e.start + 1
        raise DataError(path, line, None, f"not UTF-8 text (byte 0x{data[e.start]:02x} at "
                                          f"column {column}): save the file as UTF-8") from None


def _open_error(path: Path, e: OSError) -> DataError:
    return DataError(path, None, None, f"cannot read: {e.strerror or type(e).__name__}")


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file; one that cannot be read (a folder, no permission) is a DataError."""
    path = Path(path)
    try:
        return path.read_bytes()
    except (IsADirectoryError, PermissionError, NotADirectoryError) as e:
        raise _open_error(path, e) from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; bad bytes are reported with file, line and column."""
    path = Path(path)
    return _decode(path, read_bytes(path))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None


def iter_jsonl(path: str | Path, strict: bool = True) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line.

    With strict=False a line that is not valid JSON (or not UTF-8) yields (line, DataError)
    instead of raising, so a validator can report every bad line at once. A file that cannot
    be opened (a folder, no permission) raises a DataError naming it.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except (IsADirectoryError, PermissionError, NotADirectoryError) as e:
        raise _open_error(path, e) from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = _decode(path, raw, lineno)
            except DataError as err:
                if strict:
                    raise
                yield lineno, err
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                err = DataError(path, lineno, None, f"invalid JSON: {e.msg} (column {e.colno})")
                if strict:
                    raise err from None
                yield lineno, err


def read_jsonl(path: str | Path) -> list[Any]:
    return [obj for _, obj in iter_jsonl(path)]


def write_toml(path: str | Path, obj: dict) -> None:
    write_text(path, tomli_w.dumps(_toml_safe(obj)))


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as e:
        raise DataError(path, None, None, f"invalid TOML: {e}") from None


def _toml_safe(obj: Any) -> Any:
    """TOML has no null: drop None values; turn tuples and Paths into lists and strings."""
    if isinstance(obj, dict):
        return {str(k): _toml_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_toml_safe(v) for v in obj if v is not None]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dir_size(path: str | Path) -> int:
    """Total bytes of the regular files under `path` (symlinks not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
