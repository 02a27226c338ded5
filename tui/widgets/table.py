"""The app's data table: Textual's DataTable, drawn anew when its columns widen.

DataTable measures added and changed cells on an idle turn and widens their columns, but its
caches of rendered cells and lines are keyed without the widths: in a table of fixed size a
cell rendered before that turn kept its old width ("lor" for "lora-demo" in Runs; "runnin"
after "queued" -> "running"; Textual 8.2.8), until something else redrew the table.
"""

from __future__ import annotations

from textual.widgets import DataTable


class Table(DataTable):
    async def _on_idle(self, event) -> None:
        widths = [c.content_width for c in self.columns.values()]
        await super()._on_idle(event)  # where DataTable measures new and changed cells
        if widths != [c.content_width for c in self.columns.values()]:
            self._update_count += 1  # a part of every cache key: cells render at the new widths
            self.refresh()
