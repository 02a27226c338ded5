"""Workspaces mode: every workspace under the root with counts and sizes; create, open, recent."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

from clara.errors import UserError
from clara.workspace import SUBDIRS, Workspace, list_workspaces, validate_name
from tui.widgets.table import Table
from tui.format import display_path, human_size, short
from tui.recent import load_recent
from tui.screens.base import ModeScreen
from tui.widgets.live_text import LiveText, TextInput


def _count(row: dict, sub: str) -> str:
    """A subfolder's item count; the chat log is one file, not items: shown by its size."""
    n = row.get(sub, 0)
    if not n and row.get(f"{sub}_bytes"):
        return f"log {human_size(row[f'{sub}_bytes'])}"
    return str(n)


class CreateWorkspace(ModalScreen[str | None]):
    """A form for a new workspace; the name is checked as it is typed, errors shown inline."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, root) -> None:
        super().__init__(classes="dialog-screen")
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="create-workspace"):
            yield Label("New workspace", classes="dialog-title")
            yield Label("Name")
            yield TextInput(placeholder="letters, digits, . _ - +", id="ws-name")
            yield LiveText("", id="ws-name-error", classes="field-error")
            yield Label("Description")
            yield TextInput(placeholder="what this study is for (optional)", id="ws-description")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create", variant="primary", id="create", disabled=True)
                yield Button("Cancel", id="cancel")

    def _problem(self, name: str) -> str:
        if not name:
            return ""
        try:
            validate_name(name)
        except UserError as e:
            return str(e)
        if Workspace(self.root, name).exists:
            return f"workspace {name!r} already exists"
        return ""

    @on(Input.Changed, "#ws-name")
    def _check(self, event: Input.Changed) -> None:
        problem = self._problem(event.value)
        self.query_one("#ws-name-error", Static).update(problem)
        self.query_one("#create", Button).disabled = bool(problem) or not event.value

    @on(Input.Submitted)
    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        name = self.query_one("#ws-name", Input).value.strip()
        problem = self._problem(name) or ("" if name else "a name is needed")
        if problem:
            self.query_one("#ws-name-error", Static).update(problem)
            return
        description = self.query_one("#ws-description", Input).value.strip()
        try:
            Workspace(self.root, name).create(description=description)
        except UserError as e:  # e.g. created meanwhile by the CLI
            self.query_one("#ws-name-error", Static).update(str(e))
            return
        self.dismiss(name)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class WorkspacesScreen(ModeScreen):
    TITLE = "Workspaces"
    CSS_PATH = "workspaces.tcss"
    BINDINGS = [
        Binding("ctrl+n", "create", "New"),
        Binding("enter", "open", "Open", show=True),
        Binding("f6", "reload", "Refresh"),
    ]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="workspaces-body"):
            yield Static("", id="ws-root")
            yield Table(id="workspaces", cursor_type="row", zebra_stripes=True)
            yield Static("", id="ws-recent")

    def on_mount(self) -> None:
        table = self.query_one("#workspaces", DataTable)
        table.add_column("", key="mark", width=1)
        table.add_column("name", key="name")
        for sub in SUBDIRS:
            table.add_column(sub, key=sub)
        table.add_column("size", key="size", width=9)
        table.add_column("description", key="description")

    def reload(self) -> None:
        self.query_one("#ws-root", Static).update(f"root: {display_path(self.app.root)}")
        self._load()

    def on_resume(self) -> None:
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    @work(thread=True, exclusive=True, group="workspaces", exit_on_error=False)
    def _load(self) -> None:
        rows = [w.summary() for w in list_workspaces(self.app.root)]
        recent = load_recent(self.app.root)
        self.app.call_from_thread(self._fill, rows, recent)

    def _fill(self, rows: list[dict], recent: list[str]) -> None:
        table = self.query_one("#workspaces", DataTable)
        current = self.app.workspace_name
        if self.unchanged("workspaces", (current, rows, recent)):
            return
        table.clear()
        for row in rows:
            table.add_row(
                "●" if row["name"] == current else "",
                row["name"],
                *[_count(row, sub) for sub in SUBDIRS],
                human_size(row["bytes"]),
                short(row.get("description", ""), 40),
                key=row["name"],
            )
        if current in table.rows:
            table.move_cursor(row=table.get_row_index(current))
        names = [n for n in recent if any(r["name"] == n for r in rows)]
        self.query_one("#ws-recent", Static).update(
            "recent: " + (", ".join(names) if names else "(none yet)")
            + "    ctrl+n new · Enter open · ctrl+p open by name"
        )

    def action_open(self) -> None:
        table = self.query_one("#workspaces", DataTable)
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        self.app.open_workspace(str(key.value))
        self.reload()

    @on(DataTable.RowSelected, "#workspaces")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_workspace(str(event.row_key.value))
        self.reload()

    def action_create(self) -> None:
        def created(name: str | None) -> None:
            if name:
                self.app.open_workspace(name)
                self.reload()

        self.app.push_screen(CreateWorkspace(self.app.root), created)

    def palette_commands(self):
        from textual.app import SystemCommand

        yield SystemCommand("New workspace", "Create a workspace under the root", self.action_create)

