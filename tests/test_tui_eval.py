"""Eval mode with a real tiny model: an evaluation of the bundled questions run from the form in a
thread worker, its tables, the History tab; compare mode (base vs an adapter + retention)."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from textual.widgets import DataTable, ProgressBar, Select, SelectionList, Static, TabbedContent

from clara.data.datasets import write_dataset
from clara.evaluation.runner import list_evals, read_eval
from tests.conftest import corpus_sentences
from tests.tui_helpers import make_app, settle, wait_for


@pytest.fixture
def eval_ws(workspace, tiny_model_dir):
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    return workspace


def _set(form, **values):
    for k, v in values.items():
        form.set_value(k, v)


@pytest.mark.timeout(90)
def test_run_an_evaluation_and_read_its_tables_and_history(eval_ws):
    progress_seen = []

    async def go():
        app = make_app(eval_ws.root, start_mode="eval")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            data = screen.query_one("#eval-data", Select)
            assert str(data.value).endswith("eval_questions.jsonl")  # the bundled default
            assert screen.query_one("#eval-model", Select).value == "tiny"
            assert screen.query_one("#eval-configs", SelectionList).selected == ["closed"]
            _set(screen.query_one("#eval-form"), limit=3, max_tokens=4)
            await pilot.press("ctrl+l")
            bar = screen.query_one("#eval-progress", ProgressBar)
            await wait_for(pilot, lambda: (progress_seen.append(bar.progress) or
                                           screen.shown is not None), timeout=60,
                           what="the evaluation")
            await settle(pilot)
            assert bar.total == 3 and bar.progress == 3
            assert screen.query_one("#eval-tabs", TabbedContent).active == "eval-results-tab"
            summary = screen.query_one("#eval-summary", DataTable)
            assert summary.row_count == 1
            assert summary.get_cell("closed", "n") == "3"
            f1 = summary.get_cell("closed", "f1")
            answers = screen.query_one("#eval-answers", DataTable)
            assert answers.row_count == 3
            assert "Brennvik" in str(answers.get_cell("kio-01", "gold"))
            history = screen.query_one("#eval-list", DataTable)
            assert history.row_count == 1
            assert "written to evals/" in str(screen.query_one("#eval-status", Static).render())
            assert app.errors == []
            return f1

    f1 = asyncio.run(go())
    (record,) = list_evals(eval_ws)
    doc = read_eval(eval_ws, record["id"])
    assert doc["questions"] == 3 and doc["config"]["max_tokens"] == 4
    assert f1 == f"{doc['summary'][0]['f1']:.3f}"

    # a new app finds it under History; selecting it fills the Results tab
    async def again():
        app = make_app(eval_ws.root, start_mode="eval")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#eval-tabs", TabbedContent).active = "eval-history-tab"
            await settle(pilot)
            table = screen.query_one("#eval-list", DataTable)
            table.focus()
            await pilot.press("enter")
            await settle(pilot)
            assert screen.shown["id"] == record["id"]
            assert screen.query_one("#eval-answers", DataTable).row_count == 3

    asyncio.run(again())


@pytest.mark.timeout(120)
def test_compare_mode_puts_the_base_and_an_adapter_side_by_side(eval_ws):
    from clara.runs import start_worker
    from clara.train.launch import lora_run

    text = corpus_sentences(40, seed=2)
    rows = [{"text": " ".join(text[i:i + 2])} for i in range(0, 40, 2)]
    write_dataset(eval_ws, "notes", "cpt", {"train": rows[:16], "valid": rows[16:]})
    run = lora_run(eval_ws, {"model": "tiny", "data": "notes", "iters": 2, "batch_size": 2,
                             "max_seq_length": 48, "mode": "cpt", "lora_rank": 4,
                             "val_every": 0, "save_every": 2}, name="sft")
    start_worker(run).wait(timeout=90)

    async def go():
        app = make_app(eval_ws.root, start_mode="eval")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            configs = screen.query_one("#eval-configs", SelectionList)
            configs.select("closed=sft")
            await pilot.click("#eval-compare")
            _set(screen.query_one("#eval-form"), limit=2, max_tokens=3, retention=2)
            await pilot.pause()
            screen.action_start()
            await wait_for(pilot, lambda: screen.shown is not None, timeout=90,
                           what="the comparison")
            summary = screen.query_one("#eval-summary", DataTable)
            assert [str(k.value) for k in summary.rows] == ["closed", "closed=sft"]
            columns = [str(c.value) for c in summary.columns]
            assert "retention_f1" in columns
            answers = screen.query_one("#eval-answers", DataTable)
            assert [str(c.value) for c in answers.columns][2:] == ["closed", "closed=sft"]
            # answers as long as max_tokens 32 gives: at 100 columns both configurations'
            # headers whole and on screen (the second was cut off to "closed")
            for row in screen.shown["results"]:
                row["answer"] = "the answer, as a tiny model rambles on " * 2
            screen.show_eval(screen.shown)
            await pilot.pause()
            assert [str(c.label) for c in answers.columns.values()][2:] == ["closed",
                                                                             "closed=sft"]
            assert answers.virtual_size.width <= answers.scrollable_content_region.width
            assert app.errors == []

    asyncio.run(go())
    (record,) = list_evals(eval_ws)
    assert record["kind"] == "compare"
    doc = read_eval(eval_ws, record["id"])
    assert {r["set"] for r in doc["results"]} == {"qa", "general"}


@pytest.mark.timeout(30)
def test_nothing_ticked_is_an_error_dialog(eval_ws):
    async def go():
        app = make_app(eval_ws.root, start_mode="eval")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            app.screen.query_one("#eval-configs", SelectionList).deselect_all()
            await pilot.press("ctrl+l")
            await pilot.pause()
            assert app.errors == ["configurations: tick at least one"]
            assert app.is_running

    asyncio.run(go())


def test_the_questions_picker_offers_question_answer_sets_only(workspace):
    """A new user's QA set (Generate QA writes train.jsonl only) is offered; a text dataset,
    whose rows have no question, is not (its evaluation failed at row 1)."""
    from tui.screens.eval import data_options

    write_dataset(workspace, "notes", "cpt", {"train": [{"text": "a b"}],
                                              "valid": [{"text": "c d"}]})
    write_dataset(workspace, "hb-qa", "qa", {"train": [{"question": "Who?", "answer": "Lise"}]})
    options = data_options(workspace)
    assert [label for label, _ in options][1:] == ["hb-qa (QA pairs)"]
    assert options[1][1] == str(workspace.datasets_dir / "hb-qa" / "train.jsonl")
