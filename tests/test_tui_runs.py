"""Runs and Train modes with real training: launch a tiny LoRA run from the Train screen and watch
the sparkline and the run table change; reattach to a run started outside the app."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import asdict

import pytest
from textual.widgets import DataTable, Static

from clara.data.datasets import write_dataset
from tests.conftest import corpus_sentences
from tests.tui_helpers import make_app, settle, wait_for

TINY = dict(iters=8, batch_size=2, max_seq_length=48, val_every=4, save_every=4, lora_rank=4,
            learning_rate=1e-3, mode="cpt")


@pytest.fixture
def ready(workspace, tiny_model_dir):
    """A workspace with the tiny model and a small text dataset."""
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    text = corpus_sentences(60, seed=1)
    rows = [{"text": " ".join(text[i:i + 3])} for i in range(0, 60, 3)]
    write_dataset(workspace, "notes", "cpt", {"train": rows[:16], "valid": rows[16:]})
    return workspace


class _Loss:
    """The loss plot's train and val points (what the Progress tab draws)."""

    def __init__(self, screen) -> None:
        self.plot = screen.query_one("#plot-loss")

    @property
    def values(self) -> list[float]:
        return self.plot.series.get("train", ([], []))[1]

    @property
    def val(self) -> list[float]:
        return self.plot.series.get("val", ([], []))[1]


def _cell(table: DataTable, run_id: str, column: str) -> str:
    return str(table.get_cell(run_id, column)) if run_id in table.rows else ""


@pytest.mark.timeout(180)
def test_launch_from_the_train_screen_and_watch_it(ready):
    seen_train_values = []

    async def go():
        app = make_app(ready.root, start_mode="train")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            form = app.screen.query_one("#form-lora")
            form.set_value("model", "tiny")
            form.set_value("data", "notes")
            for key, value in TINY.items():
                form.set_value(key, value)
            await settle(pilot)
            preview = str(app.screen.query_one("#preview", Static).render())
            assert 'model = "tiny"' in preview and "iters = 8" in preview
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: app.current_mode == "runs", what="the Runs screen")
            screen = app.screen
            table = screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1, what="the run in the table")
            run_id = str(table.coordinate_to_cell_key((0, 0)).row_key.value)
            spark = _Loss(screen)
            await wait_for(pilot, lambda: len(spark.values) >= 1, timeout=120,
                           what="train loss in the plot")
            seen_train_values.append(list(spark.values))
            await wait_for(pilot, lambda: _cell(table, run_id, "status") == "completed",
                           timeout=120, what="the run to complete in the table")
            await wait_for(pilot, lambda: len(spark.values) == 8, what="all 8 train rows")
            assert spark.val and min(spark.val) > 0
            assert _cell(table, run_id, "step") == "8/8"
            assert _cell(table, run_id, "best_val") != "-"
            assert app.errors == []

    asyncio.run(go())
    assert seen_train_values[0]


@pytest.mark.timeout(180)
def test_reattach_to_a_run_started_outside_the_app(ready):
    """A run started through the library (as `clara train lora --detach` does) while no app is
    open: the app finds it, follows it live, and stops it."""
    from clara.models.registry import model_source
    from clara.runs import Run, create_run, start_worker
    from clara.train.config import merge_config, TrainConfig

    # long enough never to end by itself: the test stops it (twice); at 400 steps it could end
    # before the plot, drawn every 2 s while a run trains, had shown it growing
    cfg = merge_config(TrainConfig, overrides={**TINY, "model": "tiny", "data": "notes",
                                               "iters": 100000, "save_every": 50,
                                               "val_every": 50})
    run = create_run(ready, "lora", asdict(cfg), name="outside",
                     resolved={"model": model_source(ready, "tiny"),
                               "data": str(ready.datasets_dir / "notes")})
    proc = start_worker(run, detach=True)
    try:
        async def go():
            app = make_app(ready.root, start_mode="runs")
            async with app.run_test(size=(120, 40)) as pilot:
                screen = app.screen
                table = screen.query_one("#runs", DataTable)
                await wait_for(pilot, lambda: _cell(table, "outside", "status") == "running",
                               timeout=60, what="the outside run, running")
                spark = _Loss(screen)
                await wait_for(pilot, lambda: len(spark.values) >= 2, timeout=90,
                               what="live train loss")
                first = len(spark.values)
                await wait_for(pilot, lambda: len(spark.values) > first, timeout=60,
                               what="the sparkline to grow")
                await pilot.press("s")
                await wait_for(pilot, lambda: _cell(table, "outside", "status") == "stopped",
                               timeout=60, what="the run to stop")
                # the title follows the run's own files (the tail worker), the table its own
                # timer: each shows the stop within a poll
                title = screen.query_one("#run-title", Static)
                await wait_for(pilot, lambda: "stopped" in str(title.render()), timeout=30,
                               what="the title to say stopped")
                stopped_at = len(spark.values)
                # resume: a new worker continues from the checkpoint the stop saved
                await pilot.press("u")
                await wait_for(pilot, lambda: len(spark.values) > stopped_at + 1, timeout=90,
                               what="the resumed run to add train rows")
                # the table's status follows its own refresh, maybe after the first rows
                await wait_for(pilot, lambda: _cell(table, "outside", "status") == "running",
                               timeout=30, what="the resumed run, running")
                await pilot.press("s")
                await wait_for(pilot, lambda: _cell(table, "outside", "status") == "stopped",
                               timeout=60, what="the resumed run to stop")
                assert app.errors == []

        asyncio.run(go())
        proc.wait(timeout=30)
        assert Run(run.path).raw_status()["status"] == "stopped"
        assert [e["event"] for e in Run(run.path).events()].count("resume") == 1
        assert (run.adapters / "last").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def _run_with(ws, name, status, checkpoint=True, kind="lora"):
    """A run folder written through clara.runs: `status`, with or without a saved checkpoint."""
    import os

    from clara import io
    from clara.runs import _proc_start, create_run

    run = create_run(ws, kind, {"model": "tiny", "data": "notes", "iters": 4}, name=name)
    if checkpoint:  # the files that make a folder a loadable mlx-lm adapter (clara.refs)
        step = run.adapters / "step-2"
        step.mkdir(parents=True)
        io.write_json(step / "adapter_config.json", {"model": "tiny"})
        (step / "adapters.safetensors").write_bytes(b"0")
        (run.adapters / "best").symlink_to("step-2")
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 1, "train_loss": 2.5})
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 2, "train_loss": 2.0})
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 2, "val_loss": 2.2})
    extra = {"pid": os.getpid(), "pid_start": _proc_start(os.getpid())} \
        if status == "running" else {}
    run.write_status(status=status, total_steps=4, **extra)
    return run


def test_pickers_offer_only_usable_checkpoints(workspace):
    """Defect 4: a failed run without a checkpoint and a run still training are not offered as
    adapters (Chat, Eval, Train's from_adapter); a finished run's best and steps are."""
    from tui.screens.chat import adapter_options
    from tui.screens.eval import config_options

    _run_with(workspace, "done", "completed")
    _run_with(workspace, "broken", "failed", checkpoint=False)
    _run_with(workspace, "going", "running")
    _run_with(workspace, "stage-going", "running", kind="clara-stage1")
    assert [ref for _label, ref in adapter_options(workspace)] == ["done:best", "done:step-2"]
    # the checkpoint first: a narrow picker cut `RUN-ID:best` and `RUN-ID:last` to one text
    assert [label for label, _ref in adapter_options(workspace)] == ["best · done",
                                                                     "step 2 · done"]
    specs = [spec for _label, spec, _on in config_options(workspace)]
    assert specs == ["closed", "rag", "closed=done", "memory=done"]  # its memory: a dataset
    # two runs of one day: their ids are cut in the middle, keeping what tells them apart
    _run_with(workspace, "lora-20261130-201824-330a", "completed")
    _run_with(workspace, "lora-20261130-201502-c616", "completed")
    labels = [label for label, ref in adapter_options(workspace) if ref.endswith(":best")]
    assert len(labels) == 3 and len(set(labels)) == 3 and all(len(t) <= 21 for t in labels)


def test_delete_a_run_after_confirming(workspace):
    """Defect 4: d asks first (Esc keeps the run), y deletes its folder; a running run is
    refused with a message and kept."""
    _run_with(workspace, "old", "failed", checkpoint=False)
    _run_with(workspace, "going", "running")

    async def go():
        app = make_app(workspace.root, start_mode="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            table = screen.query_one("#runs", DataTable)
            assert [r.key.value for r in table.ordered_rows] == ["going", "old"]  # newest first
            table.focus()
            await pilot.press("down")
            await wait_for(pilot, lambda: screen.selected == "old", what="old, highlighted")
            # a run started meanwhile (by the CLI) comes on top; the cursor stays on its run
            # (the table is updated row by row, not refilled with the cursor kept by index)
            newer = _run_with(workspace, "newer", "queued")
            await pilot.press("f6")
            await wait_for(pilot, lambda: "newer" in [k.value for k in table.rows],
                           what="the new run")
            assert [r.key.value for r in table.ordered_rows] == ["newer", "going", "old"]
            assert table.cursor_row == 2 and screen.selected == "old"
            newer.write_status(status="completed")  # a cell grows: its column too, not cut
            await pilot.press("f6")
            await wait_for(pilot, lambda: _cell(table, "newer", "status") == "completed",
                           what="the new status")
            assert table.columns["status"].content_width >= len("completed")
            screen.select_run("old")
            await pilot.press("d")
            await pilot.pause()
            assert type(app.screen).__name__ == "ConfirmDialog"
            await pilot.press("escape")
            await pilot.pause()
            assert (workspace.runs_dir / "old").is_dir()
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            await wait_for(pilot, lambda: "old" not in [k.value for k in table.rows],
                           what="the run to leave the table")
            assert not (workspace.runs_dir / "old").exists()
            screen.select_run("going")
            await pilot.press("d", "y")
            await wait_for(pilot, lambda: app.errors, what="the refusal")
            assert "stop it first" in app.errors[-1]
            assert (workspace.runs_dir / "going").is_dir()

    asyncio.run(go())


def test_rename_archive_and_tag_from_the_runs_screen(workspace):
    """Housekeeping in the Runs screen: r renames (a name in use is refused in a dialog), a
    archives after a confirmation (the run leaves the table and the pickers; h shows it again,
    a unarchives), t edits the tags shown in the table, f filters by a tag."""
    from tui.screens.chat import adapter_options

    _run_with(workspace, "first", "completed")
    _run_with(workspace, "second", "completed")

    async def go():
        app = make_app(workspace.root, start_mode="runs")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            table = screen.query_one("#runs", DataTable)
            ids = lambda: [k.value for k in table.rows]  # noqa: E731
            screen.select_run("first")
            await pilot.press("r")
            await pilot.pause()
            assert type(app.screen).__name__ == "PromptDialog"
            await pilot.press("ctrl+u", *"second", "enter")  # a name in use: refused
            await wait_for(pilot, lambda: app.errors, what="the refusal")
            assert "'second' is already in use" in app.errors[-1]
            await pilot.press("escape")
            screen.select_run("first")
            await pilot.press("r", "ctrl+u", *"first-v2", "enter")
            await wait_for(pilot, lambda: "first-v2" in ids(), what="the new name")
            assert "first" not in ids() and (workspace.runs_dir / "first-v2").is_dir()
            assert screen.selected == "first-v2"
            # tags: typed in a dialog, shown in the table, then a filter by one of them
            await pilot.press("t", *"baseline handbook", "enter")
            await wait_for(pilot, lambda: "baseline" in _cell(table, "first-v2", "tags"),
                           what="the tags column")
            await pilot.press("f", *"baseline", "enter")
            await settle(pilot)
            assert ids() == ["first-v2"]
            assert "tag baseline" in str(screen.query_one("#runs-filter").render())
            await pilot.press("f", "ctrl+u", "enter")  # an empty filter: every run again
            await settle(pilot)
            assert sorted(ids()) == ["first-v2", "second"]
            # archive: asks first; Esc keeps it
            screen.select_run("second")
            await pilot.press("a")
            await pilot.pause()
            assert type(app.screen).__name__ == "ConfirmDialog"
            await pilot.press("escape", "a", "y")
            await wait_for(pilot, lambda: "second" not in ids(), what="the run to be hidden")
            assert [ref.split(":")[0] for _l, ref in adapter_options(workspace)] == \
                ["first-v2", "first-v2"]  # best and step-2; no longer "second"
            assert "1 archived hidden" in str(screen.query_one("#runs-filter").render())
            await pilot.press("h")
            await settle(pilot)
            assert "second" in ids() and "archived" in _cell(table, "second", "tags")
            screen.select_run("second")
            await pilot.press("a")  # an archived run: unarchived at once
            await wait_for(pilot, lambda: "archived" not in _cell(table, "second", "tags"),
                           what="the run to be unarchived")
            assert not (workspace.runs_dir / "second" / "status.json").read_text().count(
                '"archived": true')

    asyncio.run(go())


def test_keys_typed_after_a_dialog_closes_reach_the_screen_below(workspace):
    """Typed in one burst: rename the run, then tag it. The t right after the Enter that closes
    the rename dialog went to the closing dialog; now it opens the tags of the renamed run."""
    from textual import events

    from clara.runs import find_run

    _run_with(workspace, "one", "completed")

    async def go():
        app = make_app(workspace.root, start_mode="runs")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            app.screen.select_run("one")
            for key in ("r", "ctrl+u", *"two", "enter", "t", *"tag1", "enter"):
                app.post_message(events.Key(key, key if len(key) == 1 else None))
            await wait_for(pilot, lambda: (workspace.runs_dir / "two").is_dir() and
                           find_run(workspace, "two").raw_status().get("tags"),
                           timeout=60, what="the renamed run's tags")  # 14 keys, busy CI
            assert find_run(workspace, "two").raw_status()["tags"] == ["tag1"]
            assert not app.errors

    asyncio.run(go())


def test_loss_plot_has_axes_and_compare_shares_one_scale(workspace):
    """Defect 9: the Progress tab plots train and val against the step; Compare draws both runs
    on one plot (one scale); l switches to a log axis."""
    _run_with(workspace, "a", "completed")
    _run_with(workspace, "b", "completed")

    async def go():
        app = make_app(workspace.root, start_mode="runs")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.select_run("a")
            plot = screen.query_one("#plot-loss")
            await wait_for(pilot, lambda: plot.series.get("train", ([], []))[1],
                           what="the loss plot")
            assert plot.series["train"] == ([1.0, 2.0], [2.5, 2.0])
            assert plot.series["val"] == ([2.0], [2.2])
            screen.compare_with = "b"
            await pilot.press("m")
            cmp = screen.query_one("#plot-compare")
            await wait_for(pilot, lambda: len(cmp.series) == 4, what="the comparison")
            assert set(cmp.series) == {"A train", "A val", "B train", "B val"}
            await pilot.press("l")
            assert cmp.log_scale and plot.log_scale

    asyncio.run(go())


def test_downsampling_keeps_the_shape_and_the_last_point():
    from tui.widgets.plot import downsample

    xs = list(range(1, 10001))
    ys = [1000.0 / x for x in xs]
    dx, dy = downsample(xs, ys, 200)
    assert len(dx) == 200 and dx[-1] == 10000 and dy[-1] == ys[-1]
    assert dy == sorted(dy, reverse=True)  # still falling
