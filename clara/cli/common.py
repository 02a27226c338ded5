"""What every command shares: the selected workspace, output as a table or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click

from clara.workspace import Workspace, default_root, open_workspace


@dataclass
class AppContext:
    root: str | None = None
    workspace_name: str | None = None

    @property
    def root_path(self) -> Path:
        return Path(self.root) if self.root else default_root()

    def workspace(self, create: bool = False) -> Workspace:
        return open_workspace(self.workspace_name, self.root_path, create=create)


pass_app = click.make_pass_decorator(AppContext, ensure=True)

format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Print a table for people or JSON for programs.",
)

Column = tuple[str, str] | tuple[str, str, Callable[[Any], str]]


def _cell(row: dict, column: Column) -> str:
    value = row.get(column[0])
    if len(column) == 3 and value is not None:
        return column[2](value)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    headers = [c[1] for c in columns]
    cells = [[_cell(r, c) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def emit_rows(rows: Sequence[dict], columns: Sequence[Column], fmt: str,
              empty: str = "(none)") -> None:
    """Print a listing: an aligned table, or a JSON list of the full records."""
    if fmt == "json":
        click.echo(json.dumps(list(rows), indent=2, ensure_ascii=False, default=str))
    elif not rows:
        click.echo(empty)
    else:
        click.echo(render_table(rows, columns))


def emit_record(record: dict, fmt: str, fields: Iterable[Column] | None = None) -> None:
    """Print one record: `key  value` lines, or JSON."""
    if fmt == "json":
        click.echo(json.dumps(record, indent=2, ensure_ascii=False, default=str))
        return
    fields = list(fields) if fields else [(k, k) for k in record]
    width = max(len(f[1]) for f in fields) if fields else 0
    for f in fields:
        click.echo(f"{f[1].ljust(width)}  {_cell(record, f)}")
