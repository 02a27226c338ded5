"""Data mode: import through the path input (with completion), datasets with statistics and
sample rows, building a dataset through its form, and validation problems as file:line lines."""

from __future__ import annotations

import asyncio
import json

from textual.widgets import DataTable, OptionList, Static, TabbedContent

from clara.data.datasets import write_dataset
from clara.data.sources import list_sources
from tests.tui_helpers import make_app, settle
from tui.widgets.path_input import PathInput, PathSuggester


def test_path_suggester_completes_files_and_folders(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "handbook.md").write_text("# hi\n")
    (tmp_path / "numbers.jsonl").write_text("{}\n")
    sugg = PathSuggester()

    async def go():
        assert await sugg.get_suggestion(f"{tmp_path}/no") == f"{tmp_path}/notes/"
        assert await sugg.get_suggestion(f"{tmp_path}/notes/h") == f"{tmp_path}/notes/handbook.md"
        assert await sugg.get_suggestion(f"{tmp_path}/zz") is None
        only_jsonl = PathSuggester(suffixes=(".jsonl",))
        assert await only_jsonl.get_suggestion(f"{tmp_path}/nu") == f"{tmp_path}/numbers.jsonl"

    asyncio.run(go())


def test_import_a_file_through_the_input_with_tab_completion(workspace, tmp_path):
    doc = tmp_path / "harbour-notes.txt"
    doc.write_text("The harbour bell rang in 1801.\n\nAlia repaired the river mill.\n")

    async def go():
        app = make_app(workspace.root, start_mode="data")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#sources", DataTable)
            assert table.row_count == 0
            await pilot.press("i")
            field = app.screen.query_one("#import-path", PathInput)
            assert field.has_focus
            await pilot.press(*f"{tmp_path}/harb")
            await pilot.pause(0.3)
            await pilot.press("tab")
            assert field.value == str(doc)
            await pilot.press("enter")
            await settle(pilot)
            assert table.row_count == 1
            row = table.get_row_at(0)
            assert row[1] == "harbour-notes.txt" and row[2] == "txt"
            assert app.errors == []
            # a bad file is an error dialog, not the end of the app
            field.value = str(tmp_path / "missing.pdf")
            await pilot.press("enter")
            await settle(pilot)
            assert app.errors and "does not exist" in app.errors[-1]
            assert app.is_running

    asyncio.run(go())
    assert [s.name for s in list_sources(workspace)] == ["harbour-notes.txt"]


def _dataset(ws, name="notes"):
    rows = [{"text": f"Alia built the river mill in {1790 + i}."} for i in range(12)]
    return write_dataset(ws, name, "cpt", {"train": rows[:10], "valid": rows[10:]})


def test_dataset_browser_shows_statistics_and_sample_rows(workspace):
    _dataset(workspace)

    async def go():
        app = make_app(workspace.root, start_mode="data")
        async with app.run_test(size=(120, 40)) as pilot:
            app.screen.query_one("#data-tabs", TabbedContent).active = "datasets-tab"
            await settle(pilot)
            table = app.screen.query_one("#datasets", DataTable)
            assert table.get_row("notes") == ["notes", "cpt", "10", "2", "-"]
            stats = app.screen.query_one("#dataset-stats").data
            assert stats["kind"] == "text" and stats["train"].startswith("rows 10")
            samples = str(app.screen.query_one("#dataset-samples", Static).render())
            assert "text: Alia built the river mill" in samples
            problems = app.screen.query_one("#dataset-problems", OptionList)
            assert str(problems.get_option_at_index(0).prompt) == "(no problems)"

    asyncio.run(go())


def test_build_a_cpt_dataset_through_its_form(workspace, tmp_path):
    from clara.data.sources import import_files

    doc = tmp_path / "story.txt"
    doc.write_text("\n\n".join(f"Borun painted the glass tower in {1800 + i}. " * 3
                               for i in range(30)))
    import_files(workspace, [doc])

    async def go():
        app = make_app(workspace.root, start_mode="data")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("n")
            assert app.screen.query_one("#data-tabs", TabbedContent).active == "build-tab"
            form = app.screen.query_one("#build-form-cpt")
            form.set_value("chunk_tokens", 40)
            form.set_value("overlap", 0)
            await pilot.press(*"story-cpt", "enter")
            await settle(pilot)
            assert app.errors == []
            table = app.screen.query_one("#datasets", DataTable)
            assert "story-cpt" in [k.value for k in table.rows]
            # building it again under the same name is an error dialog, and nothing breaks
            await pilot.press("escape", "n", *"story-cpt", "enter")
            await settle(pilot)
            assert app.errors and "story-cpt" in app.errors[-1]

    asyncio.run(go())
    assert (workspace.datasets_dir / "story-cpt" / "train.jsonl").is_file()


def test_validation_lists_every_problem_as_file_line_field(workspace, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([json.dumps({"text": "fine"}), json.dumps({"text": 3}),
                              "{not json", json.dumps({"text": ""})]) + "\n")

    async def go():
        app = make_app(workspace.root, start_mode="data")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("v")
            await pilot.press(*str(bad))
            await pilot.click("#validate")
            await settle(pilot)
            out = app.screen.query_one("#validate-problems", OptionList)
            lines = [str(out.get_option_at_index(i).prompt) for i in range(out.option_count)]
            assert lines[0] == "bad.jsonl:2: text: expected a string, got number"
            assert lines[1].startswith("bad.jsonl:3: invalid JSON")
            assert lines[2] == "bad.jsonl:4: text: empty string"
            status = str(app.screen.query_one("#validate-status", Static).render())
            assert "3 problem(s)" in status

    asyncio.run(go())
