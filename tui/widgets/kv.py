"""A two-column key/value view (configuration, statistics) that wraps long values."""

from __future__ import annotations

from typing import Any, Iterable

from rich.table import Table
from textual.widgets import Static


def _flatten(data: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


class KeyValues(Static):
    """`set_data(dict)` shows nested dicts flattened as `a.b  value` rows."""

    DEFAULT_CSS = "KeyValues { height: auto; }"

    def __init__(self, data: dict | None = None, empty: str = "(nothing)", **kwargs) -> None:
        super().__init__(**kwargs)
        self.empty = empty
        self.set_data(data or {})

    def set_data(self, data: dict) -> None:
        self.data = dict(data)
        if not data:
            self.update(self.empty)
            return
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in _flatten(data):
            if isinstance(value, float):
                value = f"{value:.6g}"
            elif isinstance(value, (list, tuple)):
                value = ", ".join(map(str, value))
            table.add_row(key, str(value))
        self.update(table)
