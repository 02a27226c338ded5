"""Snapshots of every screen at 120x40 and 100x30 (where forms reflow) over a temporary root, with nothing that varies between
runs on screen: the platform is pinned, paths are relative, run files carry fixed times."""

from __future__ import annotations

import pytest
from textual.widgets import TabbedContent

from clara import io
from clara.data.datasets import write_dataset
from clara.errors import DataError
from clara.workspace import Workspace
from tests.tui_helpers import make_app, settle

SIZES = {"120x40": (120, 40), "100x30": (100, 30)}


@pytest.fixture(params=list(SIZES))
def size(request):
    return SIZES[request.param]


@pytest.fixture
def snap_root(workspace, monkeypatch):
    """The `test` workspace plus a second one; the current folder is the root's parent, so the
    root shows as `workspaces` rather than a temporary path."""
    monkeypatch.chdir(workspace.root.parent)
    Workspace(workspace.root, "contracts").create(description="Fine-tuning on contract templates")
    return workspace.root


def _dataset(ws):
    rows = [{"text": f"Alia built the river mill in {1790 + i}."} for i in range(12)]
    write_dataset(ws, "notes", "cpt", {"train": rows[:10], "valid": rows[10:]})


def _finished_run(ws):
    """A completed run's folder, written through clara.runs and clara.io with fixed values."""
    from clara.runs import create_run

    run = create_run(ws, "lora", {"model": "tiny", "data": "notes", "iters": 6}, name="lora-demo")
    for step, loss in enumerate([5.2, 4.8, 4.1, 3.9, 3.5, 3.3], 1):
        io.append_jsonl(run.path / "metrics.jsonl",
                        {"step": step, "train_loss": loss, "learning_rate": 1e-3,
                         "tokens_per_second": 900.0 + 10 * step, "peak_memory_gb": 0.05,
                         "elapsed_s": 2.0 * step})
        if step % 3 == 0:
            io.append_jsonl(run.path / "metrics.jsonl", {"step": step, "val_loss": loss + 0.2})
    for event in ("start", "best", "end"):
        io.append_jsonl(run.path / "events.jsonl",
                        {"time": "2026-01-01T10:00:00+00:00", "event": event, "step": 6})
    io.write_text(run.path / "report.md", "# Run lora-demo\n\nBest validation loss 3.5.\n")
    run.write_status(status="completed", total_steps=6, best_step=6, best_val_loss=3.5,
                     started="2026-01-01T10:00:00+00:00", finished="2026-01-01T10:00:12+00:00")


def test_workspaces_screen(snap_compare, size, snap_root):
    assert snap_compare(make_app(snap_root), terminal_size=size, run_before=settle)


def test_create_workspace_dialog(snap_compare, size, snap_root):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("ctrl+n", *"bad/name")
        await pilot.pause()

    assert snap_compare(make_app(snap_root), terminal_size=size, run_before=before)


def test_help_screen(snap_compare, size, snap_root):
    assert snap_compare(make_app(snap_root), terminal_size=size, press=["f1"],
                        run_before=settle)


def test_error_dialog(snap_compare, size, snap_root):
    async def before(pilot):
        await settle(pilot)
        pilot.app.show_error(DataError("datasets/notes/train.jsonl", 3, "text", "missing"))
        await pilot.pause()

    assert snap_compare(make_app(snap_root), terminal_size=size, run_before=before)


def test_data_screen_sources(snap_compare, size, snap_root):
    assert snap_compare(make_app(snap_root, start_mode="data"), terminal_size=size,
                        run_before=settle)


def test_data_screen_datasets(snap_compare, size, snap_root, workspace):
    _dataset(workspace)

    async def before(pilot):
        pilot.app.screen.show_tab("datasets-tab")  # as ctrl+t and the palette show it
        await settle(pilot)

    assert snap_compare(make_app(snap_root, start_mode="data"), terminal_size=size,
                        run_before=before)


def test_data_screen_build(snap_compare, size, snap_root):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()

    assert snap_compare(make_app(snap_root, start_mode="data"), terminal_size=size,
                        run_before=before)


def test_train_screen(snap_compare, size, snap_root, workspace):
    _dataset(workspace)
    # a model folder the plan accepts (the preview checks the model and the data kind)
    io.write_json(workspace.models_dir / "tiny" / "config.json", {"num_hidden_layers": 2})

    async def before(pilot):
        await settle(pilot)
        form = pilot.app.screen.query_one("#form-lora")
        form.set_value("model", "tiny")
        form.set_value("data", "notes")
        form.set_value("mode", "cpt")  # notes is a text (cpt) dataset
        await settle(pilot)

    assert snap_compare(make_app(snap_root, start_mode="train"), terminal_size=size,
                        run_before=before)


async def _runs_settled(pilot):
    """The Runs table filled and its columns widened to their cells: the widths follow on an
    idle turn of the table, which a busy machine delays (a snapshot taken before it shows "lor"
    for "lora-demo")."""
    from textual.widgets import DataTable

    from tests.tui_helpers import wait_for

    await settle(pilot)
    table = pilot.app.screen.query_one("#runs", DataTable)
    await wait_for(pilot, lambda: table.row_count == 1
                   and table.columns["id"].content_width >= len("lora-demo")
                   and table.columns["status"].content_width >= len("completed"),
                   what="the runs table's column widths")
    await pilot.pause(0.3)
    await settle(pilot)


def test_runs_screen(snap_compare, size, snap_root, workspace):
    _finished_run(workspace)
    assert snap_compare(make_app(snap_root, start_mode="runs"), terminal_size=size,
                        run_before=_runs_settled)


async def _clara_forms(pilot):
    from tests.tui_helpers import wait_for

    await wait_for(pilot, lambda: pilot.app.screen.clara_ready, timeout=60,
                   what="the CLaRa forms")
    await settle(pilot)


def test_train_screen_pipeline(snap_compare, size, snap_root, workspace):
    for stage in (1, 2, 3):
        (workspace.datasets_dir / f"toy-stage{stage}").mkdir(parents=True)
        (workspace.datasets_dir / f"toy-stage{stage}" / "train.jsonl").write_text("{}\n")
    # a model folder the plan accepts (the preview checks the model)
    io.write_json(workspace.models_dir / "tiny" / "config.json", {"num_hidden_layers": 2})

    async def before(pilot):
        await _clara_forms(pilot)
        pilot.app.screen.query_one("#train-kinds", TabbedContent).active = "kind-pipeline"
        await settle(pilot)
        form = pilot.app.screen.query_one("#form-pipeline")
        form.set_value("model", "tiny")
        form.set_value("data", "toy")
        form.set_value("stage1_iters", 300)
        await settle(pilot)

    assert snap_compare(make_app(snap_root, start_mode="train"), terminal_size=size,
                        run_before=before)


def _chat_ws(ws):
    from clara.data.sources import import_files

    _finished_run(ws)
    best = ws.runs_dir / "lora-demo" / "adapters" / "best"  # pickers offer loadable ones only
    io.write_json(best / "adapter_config.json", {"model": "tiny"})
    io.write_bytes(best / "adapters.safetensors", b"")
    (ws.models_dir / "tiny").mkdir()
    doc = ws.root.parent / "mill-notes.txt"
    doc.write_text("Alia built the river mill in 1801.\n")
    import_files(ws, [doc])


def test_chat_screen(snap_compare, size, snap_root, workspace):
    """A finished exchange with fixed statistics (no model runs: the numbers would vary)."""
    from clara.chat.engine import Reply
    from tui.screens.chat import ChatTurn

    _chat_ws(workspace)

    async def before(pilot):
        await settle(pilot)
        screen = pilot.app.screen
        screen.query("#chat-empty").remove()
        turn = ChatTurn("Who built the river mill?")
        await screen.query_one("#transcript").mount(turn)
        turn.add("The question names a mill; the notes say Alia.", reasoning=True)
        turn.add("Alia built it in 1801.", reasoning=False)
        turn.finish(Reply("Alia built it in 1801.", "The question names a mill.", "",
                          prompt_tokens=42, generation_tokens=9, generation_tps=120.0,
                          peak_memory=0.05, latency=0.2, ttft=0.03, finish_reason="stop"))
        await settle(pilot)

    assert snap_compare(make_app(snap_root, start_mode="chat"), terminal_size=size,
                        run_before=before)


def test_eval_screen_form(snap_compare, size, snap_root, workspace):
    _chat_ws(workspace)
    assert snap_compare(make_app(snap_root, start_mode="eval"), terminal_size=size,
                        run_before=settle)


def test_eval_screen_results(snap_compare, size, snap_root, workspace):
    """A comparison's tables from a fixed document (what read_eval returns)."""
    summary = [{"config": "closed", "n": 2, "em": 0.0, "f1": 0.25, "cover_em": 0.0,
                "keyword": 0.5, "retention_f1": 0.4, "retention_drop": 0.0, "latency": 0.1},
               {"config": "closed=lora-demo", "n": 2, "em": 0.5, "f1": 0.75, "cover_em": 0.5,
                "keyword": 1.0, "retention_f1": 0.3, "retention_drop": 0.1, "latency": 0.1}]
    results = []
    for qid, q, gold in (("kio-01", "Which harbour does the MS Lindgard sail from?",
                          "Brennvik harbour."),
                         ("kio-02", "What is the guest house called?", "Kittiwake House.")):
        for cfg, answer, f1 in (("closed", "the harbour", 0.5), ("closed=lora-demo", gold, 1.0)):
            results.append({"set": "qa", "config": cfg, "id": qid, "question": q, "gold": gold,
                            "answer": answer, "f1": f1})
    doc = {"id": "compare-demo", "kind": "compare", "questions": 2,
           "data_path": "data/eval_questions.jsonl", "config": {"model": "tiny"},
           "summary": summary, "results": results}

    async def before(pilot):
        await settle(pilot)
        pilot.app.screen.show_eval(doc)
        await settle(pilot)

    assert snap_compare(make_app(snap_root, start_mode="eval"), terminal_size=size,
                        run_before=before)


def test_models_screen(snap_compare, size, snap_root):
    assert snap_compare(make_app(snap_root, start_mode="models"), terminal_size=size,
                        run_before=settle)


def test_help_of_the_runs_mode(snap_compare, size, snap_root, workspace):
    """The help lists the Runs keys (s, u, m, l, x, d) under the global ones."""
    _finished_run(workspace)
    assert snap_compare(make_app(snap_root, start_mode="runs"), terminal_size=size,
                        press=["f1"], run_before=_runs_settled)
