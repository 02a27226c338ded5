"""Errors that reach users as one line: the CLI prints them and exits non-zero, the app shows a dialog."""

from __future__ import annotations

from pathlib import Path


class ClaraError(Exception):
    """An error with a message fit to show a user as it is (no traceback)."""

    exit_code = 1


class DataError(ClaraError):
    """A problem in a data file, located as `file:line: field: problem`."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        super().__init__(self.location())

    def location(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.problem}" if self.field else f"{where}: {self.problem}"


class ValidationFailed(ClaraError):
    """Several data problems at once; the message lists every one of them."""

    def __init__(self, problems: list[DataError], limit: int = 50):
        self.problems = problems
        lines = [p.location() for p in problems[:limit]]
        if len(problems) > limit:
            lines.append(f"... and {len(problems) - limit} more problems")
        super().__init__("\n".join(lines))
