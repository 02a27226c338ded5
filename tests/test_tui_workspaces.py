"""Workspaces mode: the table with counts and sizes, create with inline name errors, open, recent."""

from __future__ import annotations

import asyncio

from textual.widgets import Button, DataTable, Static

from clara.workspace import Workspace
from tests.tui_helpers import make_app, settle
from tui.recent import load_recent


def test_table_lists_counts_and_sizes(workspace):
    (workspace.sources_dir / "a").mkdir()
    (workspace.sources_dir / "a" / "f.txt").write_text("x" * 2048)
    Workspace(workspace.root, "second").create()

    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#workspaces", DataTable)
            assert table.row_count == 2
            assert table.get_cell("test", "sources") == "1"
            assert table.get_cell("test", "size") == "2.0 KB"
            assert table.get_cell("second", "size") == "0 B"
            assert table.get_cell("test", "mark") == "●"

    asyncio.run(go())


def test_create_shows_name_errors_inline_then_creates_and_opens(workspace):
    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+n")
            await pilot.pause()
            dialog = app.screen
            assert type(dialog).__name__ == "CreateWorkspace"
            await pilot.press(*"../x")
            await pilot.pause()
            error = str(dialog.query_one("#ws-name-error", Static).render())
            assert "path separators are not allowed" in error
            assert dialog.query_one("#create", Button).disabled
            dialog.query_one("#ws-name").value = ""
            await pilot.press(*"test")
            await pilot.pause()
            assert "already exists" in str(dialog.query_one("#ws-name-error", Static).render())
            dialog.query_one("#ws-name").value = ""
            await pilot.press(*"study-2")
            await pilot.pause()
            assert str(dialog.query_one("#ws-name-error", Static).render()) == ""
            await pilot.press("tab")
            await pilot.press(*"contracts")
            await pilot.press("enter")
            await settle(pilot)
            assert app.workspace_name == "study-2"
            table = app.screen.query_one("#workspaces", DataTable)
            assert table.get_cell("study-2", "mark") == "●"
            assert "contracts" in table.get_cell("study-2", "description")

    asyncio.run(go())
    ws = Workspace(workspace.root, "study-2")
    assert ws.exists and ws.meta()["description"] == "contracts"
    assert load_recent(workspace.root)[0] == "study-2"


def test_enter_opens_the_highlighted_workspace_and_it_is_remembered(workspace):
    Workspace(workspace.root, "zeta").create()

    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#workspaces", DataTable)
            table.focus()
            table.move_cursor(row=table.get_row_index("zeta"))
            await pilot.press("enter")
            await settle(pilot)
            assert app.workspace_name == "zeta"
            assert "recent: zeta, test" in str(app.screen.query_one("#ws-recent").render())

    asyncio.run(go())
    assert load_recent(workspace.root)[:2] == ["zeta", "test"]


def test_models_mode_lists_models_and_adds_one_with_its_command(workspace, tiny_model_dir):
    """The Models mode: the table of workspace models and an action form (Add) that shows its
    `clara model add` command and runs the library's add_model in a worker."""
    import asyncio

    from textual.widgets import DataTable, Static

    from tests.tui_helpers import make_app, settle, wait_for

    async def go():
        app = make_app(workspace.root, start_mode="models")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            table = screen.query_one("#models", DataTable)
            assert table.row_count == 0
            # an action chosen by keys: what is typed next goes to its first field (it was
            # lost on the action list)
            screen.query_one("#model-action").focus()
            await pilot.press("enter", "down", "down", "down", "down", "enter", *"tiny")
            await pilot.pause()
            assert screen.action == "bench"
            assert screen.query_one("#model-form-bench").field_widget("names").value == "tiny"
            # picked in the palette, the focus left in the bench form now hidden: the letters
            # typed next go to the add form's first field (they were lost)
            screen._pick("add")
            await pilot.pause()
            await pilot.press(*"tiny2")
            form = screen.query_one("#model-form-add")
            assert form.field_widget("name").value == "tiny2"
            screen._say("add: give a name and a source", error=True)  # as a run without one
            form.set_value("source", str(tiny_model_dir))
            await pilot.pause()
            result = screen.query_one("#model-result", Static)
            assert str(result.render()) == ""  # what was missing is no longer said
            command = str(screen.query_one("#model-command", Static).render())
            assert command == f"clara model add tiny2 {tiny_model_dir}"
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: table.row_count == 1, timeout=60, what="the model")
            assert str(table.get_row_at(0)[0]) == "tiny2"
            assert app.errors == []

    asyncio.run(go())


def test_a_chat_log_is_not_shown_as_zero_chats(workspace):
    import asyncio

    from textual.widgets import DataTable

    from tests.tui_helpers import make_app, settle

    (workspace.chats_dir / "chat_log.jsonl").write_text('{"prompt": "hi"}\n')

    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            cell = str(app.screen.query_one("#workspaces", DataTable).get_cell("test", "chats"))
            assert cell.startswith("log ") and cell != "0"

    asyncio.run(go())


def test_the_focused_field_is_unmistakable(workspace):
    """Defect 1: the focus ring. A focused text field and a focused button look different from
    their unfocused selves (background, style), not only by a faint border colour."""
    import asyncio

    from tests.tui_helpers import make_app, settle

    async def go():
        app = make_app(workspace.root, start_mode="data")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+n")
            await settle(pilot)
            name = app.screen.query_one("#build-name")
            field = app.screen.query_one("#build-form-cpt #field-chunk_tokens")
            assert name.has_focus
            field_before = field.styles.background
            field.focus()
            await pilot.pause()
            assert field.styles.background != field_before
            assert field.styles.text_style.bold
            button = app.screen.query_one("#build")
            plain = (button.styles.text_style.reverse, button.styles.outline_top)
            button.focus()
            await pilot.pause()
            assert (button.styles.text_style.reverse, button.styles.outline_top) != plain

    asyncio.run(go())
