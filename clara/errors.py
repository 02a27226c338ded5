"""Errors that reach users as one line: the CLI prints them and exits non-zero, the app shows a dialog.

Every error carries the exit code the `clara` command ends with (`ExitCode`, listed in the README),
so scripts can tell bad data from a model that does not load or a run stopped by a guard.
"""

from __future__ import annotations

import enum
from pathlib import Path


class ExitCode(enum.IntEnum):
    """How a `clara` command ended."""

    OK = 0
    FAILURE = 1  # anything else that went wrong (a failed run, a full disk, an internal error)
    USAGE = 2  # a bad option, argument, name or setting
    BAD_DATA = 3  # a data file that cannot be read or breaks the rules of its kind
    MODEL = 4  # a model or adapter that is missing, does not load or does not fit
    GUARD = 5  # a run stopped by a guard (memory) before it finished
    INTERRUPTED = 130  # Ctrl-C (or a run stopped on request while the command followed it)


class UserError(Exception):
    """An error with a message fit to show a user as it is (no traceback)."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, *args, exit_code: ExitCode | int | None = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = ExitCode(exit_code)


class UsageError(UserError):
    """A bad option, argument, name or setting."""

    exit_code = ExitCode.USAGE


class ModelError(UserError):
    """A model or adapter that is missing, does not load or does not fit."""

    exit_code = ExitCode.MODEL


class DataError(UserError):
    """A problem in a data file, located as `file:line: field: problem`."""

    exit_code = ExitCode.BAD_DATA

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        super().__init__(self.location())

    def location(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.problem}" if self.field else f"{where}: {self.problem}"


class ValidationFailed(UserError):
    """Several data problems at once; the message lists every one of them."""

    exit_code = ExitCode.BAD_DATA

    def __init__(self, problems: list[DataError], limit: int = 50):
        self.problems = problems
        lines = [p.location() for p in problems[:limit]]
        if len(problems) > limit:
            lines.append(f"... and {len(problems) - limit} more problems")
        super().__init__("\n".join(lines))


DISK_FULL = "disk full: free space and resume"


def os_error_message(e: OSError) -> str:
    """One line for an OS error: the file and the reason, without Python's decoration."""
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{e.filename + ': ' if e.filename else ''}{DISK_FULL}"
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or type(e).__name__}"


def is_disk_full(e: BaseException) -> bool:
    import errno

    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
