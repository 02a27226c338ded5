"""Data mode's QA pieces in the app: generate QA with a preview before writing, browse and
delete pairs, and read a source's full text with page markers and search."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable, Input, Static, TabbedContent, TextArea

from clara import io
from tests.tui_helpers import make_app, settle, wait_for

from conftest import DATA


def test_generate_preview_write_browse_delete_and_read(workspace):
    from clara.data.sources import import_files

    import_files(workspace, [DATA / "sample" / "karsholm_observatory_handbook.pdf"])

    async def go():
        app = make_app(workspace.root, start_mode="data")
        async with app.run_test(size=(140, 44)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#data-tabs", TabbedContent).active = "qa-tab"
            await settle(pilot)
            screen.query_one("#qa-per-chunk", Input).value = "2"
            await pilot.click("#qa-preview-button")
            table = screen.query_one("#qa-preview", DataTable)
            await wait_for(pilot, lambda: table.row_count > 0, what="the preview")
            status = str(screen.query_one("#qa-status", Static).render())
            assert "nothing written" in status and "rules" in status
            assert table.row_count <= 4  # two chunks, two pairs each
            assert not (workspace.datasets_dir / "hb-qa").exists()

            # Enter in a field writes, or says why not (under the buttons, no dialog)
            screen.query_one("#qa-name", Input).focus()
            await pilot.press("enter")
            await settle(pilot)
            assert "give the new QA dataset a name" in str(
                screen.query_one("#qa-status", Static).render())
            # a generation that fails in its worker says why there too (it said nothing)
            screen.query_one("#qa-sources", Input).value = "nope"
            await pilot.press(*"hb-qa", "enter")
            await wait_for(pilot, lambda: "no imported source 'nope'" in str(
                screen.query_one("#qa-status", Static).render()), what="the failure said")
            screen.query_one("#qa-sources", Input).value = ""
            await pilot.press("enter")
            path = workspace.datasets_dir / "hb-qa" / "train.jsonl"
            await wait_for(pilot, path.is_file, what="the QA dataset")
            rows = io.read_jsonl(path)
            await settle(pilot)
            # the command the form stands for; the same name again says how to replace it,
            # and the form has that way (it said "use --force" with no force in the app)
            command = screen.query_one("#qa-command", Static)
            assert str(command.render()) == "clara data build qa hb-qa --per-chunk 2"
            await pilot.press("enter")
            await settle(pilot)
            assert "switch on 'replace'" in str(screen.query_one("#qa-status", Static).render())
            screen.query_one("#qa-replace").value = True
            await pilot.pause()
            assert str(command.render()).endswith("--per-chunk 2 --force")
            path.unlink()
            await pilot.press("enter")
            await wait_for(pilot, path.is_file, what="the QA dataset replaced")
            assert io.read_jsonl(path) == rows
            await settle(pilot)

            screen.query_one("#data-tabs", TabbedContent).active = "qa-rows-tab"
            await settle(pilot)
            browser = screen.query_one("#qa-rows", DataTable)
            await wait_for(pilot, lambda: browser.row_count == len(rows), what="the rows")
            browser.focus()
            browser.move_cursor(row=1)
            await pilot.press("delete")
            await settle(pilot)
            left = io.read_jsonl(path)
            assert left == rows[:1] + rows[2:] and browser.row_count == len(rows) - 1

            screen.query_one("#data-tabs", TabbedContent).active = "read-tab"
            await settle(pilot)
            text = screen.query_one("#reader-text", TextArea)
            await wait_for(pilot, lambda: "── page 4 ──" in text.text, what="the source text")
            assert text.text.startswith("── page 1 ──")
            search = screen.query_one("#reader-search", Input)
            search.focus()
            search.value = "Fulmar"
            await pilot.press("enter")
            await settle(pilot)
            assert text.selected_text == "Fulmar"
            assert "page 3" in str(screen.query_one("#reader-status", Static).render())
            assert app.errors == []

    asyncio.run(go())
