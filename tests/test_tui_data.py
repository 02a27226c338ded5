"""Data mode: import through the path input (with completion), datasets with statistics and
sample rows, building a dataset through its form, and validation problems as file:line lines."""

from __future__ import annotations

import asyncio
import json

from textual.widgets import DataTable, OptionList, Static, TabbedContent

from clara.data.datasets import write_dataset
from clara.data.sources import list_sources
from tests.tui_helpers import make_app, settle, shown, wait_for
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
        # a folder and files sharing a prefix: stop at the shared part, then at the folder
        (tmp_path / "sample").mkdir()
        (tmp_path / "sample_qa.jsonl").write_text("{}\n")
        assert await sugg.get_suggestion(f"{tmp_path}/sa") == f"{tmp_path}/sample"
        assert await sugg.get_suggestion(f"{tmp_path}/sample") == f"{tmp_path}/sample/"

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
            await pilot.press("ctrl+o")
            field = app.screen.query_one("#import-path", PathInput)
            assert field.has_focus
            await pilot.press(*f"{tmp_path}/harb")
            await wait_for(pilot, lambda: field._suggestion == str(doc), what="the completion")
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
            # the kind by the name the table uses, the rows' format beside it
            assert stats["kind"] == "cpt" and stats["format"] == "text"
            assert stats["train"].startswith("rows 10")
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
            await pilot.press("ctrl+n")
            assert app.screen.query_one("#data-tabs", TabbedContent).active == "build-tab"
            status = app.screen.query_one("#build-status", Static)
            # Enter in an empty name says why nothing happens, beside the button
            await pilot.press("enter")
            await pilot.pause()
            assert "give the new dataset a name" in str(status.render())
            form = app.screen.query_one("#build-form-cpt")
            form.set_value("chunk_tokens", 40)
            form.set_value("overlap", 0)
            await pilot.press(*"story-cpt", "enter")
            await settle(pilot)
            assert app.errors == []
            table = app.screen.query_one("#datasets", DataTable)
            assert "story-cpt" in [k.value for k in table.rows]
            command = str(app.screen.query_one("#build-command", Static).render())
            assert command.startswith("clara data build cpt story-cpt --chunk-tokens 40")
            # the same name again: said inline, with the way out (the replace switch)
            await pilot.press("enter")
            await settle(pilot)
            assert "switch on 'replace'" in str(status.render())
            first = (workspace.datasets_dir / "story-cpt" / "train.jsonl").read_text()
            form.set_value("chunk_tokens", 60)
            replace = app.screen.query_one("#build-replace")
            assert "off" in shown(replace).split()
            replace.value = True
            await pilot.pause()
            assert "on" in shown(replace).split()  # the state reads as text, not colour alone
            assert "--force" in str(app.screen.query_one("#build-command", Static).render())
            app.screen.query_one("#build-name").focus()
            await pilot.press("enter")
            await settle(pilot)
            assert "built dataset story-cpt" in str(status.render())
            assert (workspace.datasets_dir / "story-cpt" / "train.jsonl").read_text() != first
            # ctrl+g right after a build validates the dataset just built (not an empty form)
            await pilot.press("ctrl+g")
            await settle(pilot)
            validated = str(app.screen.query_one("#validate-status", Static).render())
            assert "story-cpt (text," in validated and "valid" in validated, validated
            assert app.errors == []

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
            await pilot.press("ctrl+g")
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
            # ctrl+g on the Datasets tab validates the highlighted dataset, every row
            write_dataset(workspace, "good", "cpt", {"train": [{"text": "a b c"}] * 3})
            app.screen.query_one("#data-tabs", TabbedContent).active = "datasets-tab"
            app.screen.query_one("#datasets", DataTable).focus()
            await pilot.press("f6")
            await settle(pilot)
            await pilot.press("ctrl+g")
            await settle(pilot)
            status = app.screen.query_one("#validate-status", Static)
            assert "good (text, 3 rows): valid" in str(status.render())
            # a dataset's name typed in, as `clara data validate NAME` takes it (it said "no
            # such file")
            field = app.screen.query_one("#validate-path")
            for name, said in (("nope", "no dataset of that name"),
                               ("good", "good (text, 3 rows): valid")):
                field.value = name
                field.focus()
                await pilot.press("enter")
                await wait_for(pilot, lambda s=said: s in str(status.render()), what=said)

    asyncio.run(go())


def test_typing_in_the_build_form_never_runs_commands(workspace):
    """Defect 1 as reported: F3, ctrl+n, a name with letters that were once keys (n, b, t, e),
    Tab, a source id: every character lands in a field, Tab goes from the name to the first
    setting, and the screen stays Data."""

    async def go():
        app = make_app(workspace.root, start_mode="workspaces")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("f3", "ctrl+n")
            await settle(pilot)
            await pilot.press(*"nb-cpt", "tab", *"src-tebe")
            await pilot.pause()
            assert app.current_mode == "data"
            assert app.screen.query_one("#build-name").value == "nb-cpt"
            sources = app.screen.query_one("#build-form-cpt #field-sources")
            assert sources.has_focus and sources.value == "src-tebe"
            # the Build button comes after every field of the form
            order = [w.id for w in app.screen.focus_chain
                     if w.id and app.screen.query_one("#build-tab") in w.ancestors]
            assert order.index("build") > order.index("field-seed")
            assert order.index("build-name") < order.index("field-sources")
            # a kind chosen by keys, then letters at once: they go to the name (they were lost
            # on the kind list)
            app.screen.query_one("#build-kind").focus()
            await pilot.press("enter", "down", "enter", *"-x")
            await pilot.pause()
            assert app.screen.build_kind != "cpt"
            assert app.screen.query_one("#build-name").value == "nb-cpt-x"
            # the Build tab shown by ctrl+t: letters at once go to the name, not to the kind
            # list before it (they were lost)
            await pilot.press("ctrl+y", "ctrl+t", *"yz")
            await pilot.pause()
            assert app.screen.query_one("#build-name").value == "nb-cpt-xyz"

    asyncio.run(go())
