"""Train mode beyond plain LoRA: a LoRA run that continues an earlier run's adapter, the CLaRa
stage forms (preview, validation, a real stage-1 run launched from the form) and the pipeline
form (a real pipeline folder and driver)."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from textual.widgets import Button, DataTable, Static, TabbedContent

from clara import io
from clara.data.datasets import write_dataset
from clara.data.synth import build_synth
from clara.runs import Run, list_runs
from tests.conftest import corpus_sentences
from tests.tui_helpers import make_app, settle, wait_for

CLARA_TINY = dict(iters=2, batch_size=2, doc_max_tokens=32, compression_rate=8, max_len=256,
                  lora_rank=4, val_every=0, val_batches=1, save_every=2, learning_rate=1e-3)


@pytest.fixture
def ready(workspace, tiny_model_dir):
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    text = corpus_sentences(60, seed=1)
    rows = [{"text": " ".join(text[i:i + 3])} for i in range(0, 60, 3)]
    write_dataset(workspace, "notes", "cpt", {"train": rows[:16], "valid": rows[16:]})
    build_synth(workspace, "toy", entities=12)
    return workspace


async def _clara_forms(pilot):
    await wait_for(pilot, lambda: pilot.app.screen.clara_ready, timeout=60,
                   what="the CLaRa forms")
    await settle(pilot)


def _preview(app) -> str:
    return str(app.screen.query_one("#preview", Static).render())


@pytest.mark.timeout(120)
def test_stage_forms_preview_validate_and_launch_a_stage1_run(ready):
    async def go():
        app = make_app(ready.root, start_mode="train")
        async with app.run_test(size=(120, 40)) as pilot:
            await _clara_forms(pilot)
            screen = app.screen
            screen.query_one("#train-kinds", TabbedContent).active = "kind-stage1"
            await settle(pilot)
            assert screen.kind == "stage1"
            form = screen.query_one("#form-stage1")
            assert form.query_one("#field-model").value == "tiny"  # the only model, chosen
            assert "data: is required" in _preview(app)
            assert screen.query_one("#launch", Button).disabled
            # only this stage's datasets are offered; stage 1 has no init_from field
            assert [v for _, v in form.query_one("#field-data")._options[1:]] == ["toy-stage1"]
            assert not form.query("#field-init_from")
            form.set_value("model", "tiny")
            form.set_value("data", "toy-stage1")
            form.set_value("compression_rate", 300)  # the method's own check refuses it
            await settle(pilot)
            assert "not valid yet: compression_rate: 300 is outside" in _preview(app)
            for key, value in CLARA_TINY.items():
                form.set_value(key, value)
            await settle(pilot)
            text = _preview(app)
            assert "compression_rate = 8" in text and 'data = "toy-stage1"' in text
            assert not screen.query_one("#launch", Button).disabled
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: app.current_mode == "runs", what="the Runs screen")
            table = app.screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1, what="the stage run")
            run_id = str(table.coordinate_to_cell_key((0, 0)).row_key.value)
            assert app.screen.selected == run_id
            await wait_for(pilot, lambda: Run(ready.runs_dir / run_id).status().get("status")
                           not in ("queued", "running"), timeout=90, what="the run to end")
            assert app.errors == []

    asyncio.run(go())
    (run,) = list_runs(ready)
    doc = run.config()
    assert doc["kind"] == "clara-stage1"
    assert doc["resolved"]["data"] == str((ready.datasets_dir / "toy-stage1").resolve())
    assert doc["config"]["compression_rate"] == 8
    assert run.status()["status"] == "completed", run.status()
    assert (run.adapters / "last" / "clara_config.json").is_file()

    # stage 2 offers the stage-1 run as its starting point and hands it to the run
    async def stage2():
        app = make_app(ready.root, start_mode="train")
        async with app.run_test(size=(120, 40)) as pilot:
            await _clara_forms(pilot)
            screen = app.screen
            screen.query_one("#train-kinds", TabbedContent).active = "kind-stage2"
            await settle(pilot)
            form = screen.query_one("#form-stage2")
            assert [v for _, v in form.query_one("#field-init_from")._options[1:]] == [run.id]
            form.set_value("init_from", run.id)
            form.set_value("data", "toy-stage2")
            # top_k: the documents per row of toy-stage2 (the launch reads every row)
            k = len(io.read_jsonl(ready.datasets_dir / "toy-stage2" / "train.jsonl")[0]["docs"])
            for key, value in {**CLARA_TINY, "top_k": k}.items():
                form.set_value(key, value)
            await settle(pilot)
            assert f'init_from = "{run.id}"' in _preview(app)
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: len(list_runs(ready)) == 2, what="the stage-2 run")
            new = list_runs(ready)[-1]
            cfg = new.config()
            assert cfg["kind"] == "clara-stage2" and cfg["from_run"] == run.id
            assert cfg["resolved"]["init_from"] in {str((run.adapters / n).resolve())
                                                    for n in ("best", "last")}
            from clara.runs import request_stop

            await wait_for(pilot, lambda: app.current_mode == "runs", what="the Runs screen")
            request_stop(new)  # the hand-off is what this test is about: stop it now

    asyncio.run(stage2())


@pytest.mark.timeout(60)
def test_pipeline_form_creates_the_pipeline_and_starts_its_driver(ready):
    from clara.method.pipeline import find_pipeline, stop_pipeline

    async def go():
        app = make_app(ready.root, start_mode="train")
        async with app.run_test(size=(120, 40)) as pilot:
            await _clara_forms(pilot)
            screen = app.screen
            screen.query_one("#train-kinds", TabbedContent).active = "kind-pipeline"
            await settle(pilot)
            form = screen.query_one("#form-pipeline")
            # only prefixes with all three stage datasets are offered
            assert [v for _, v in form.query_one("#field-data")._options[1:]] == ["toy"]
            # the method's choices are lists to pick from, as the CLI's flags
            assert [v for _, v in form.query_one("#field-stage3_negatives")._options] == \
                ["rows", "batch", "pool"]
            form.set_value("stage3_negatives", "pool")
            form.set_value("model", "tiny")
            form.set_value("data", "toy")
            form.set_value("stage1_iters", 3)
            form.set_value("stage3_lr", 3e-3)
            for key, value in CLARA_TINY.items():
                if key != "iters":
                    form.set_value(key, value)
            await settle(pilot)
            text = _preview(app)
            assert 'stage1 = "toy-stage1"' in text and "iters = 3" in text
            assert "learning_rate = 0.003" in text and 'stage3_negatives = "pool"' in text
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: app.current_mode == "runs", what="the Runs screen")
            assert app.errors == []

    asyncio.run(go())
    pipe = find_pipeline(ready, "last")
    doc = pipe.doc()
    assert doc["stages"]["stage1"]["overrides"] == {"iters": 3}
    assert doc["stages"]["stage3"]["overrides"] == {"learning_rate": 3e-3}
    assert doc["config"]["compression_rate"] == 8 and "data" not in doc["config"]
    assert doc["stages"]["stage2"]["data"] == str((ready.datasets_dir / "toy-stage2").resolve())
    stop_pipeline(pipe)


@pytest.mark.timeout(120)
def test_lora_run_continues_an_earlier_runs_adapter(ready):
    """from_adapter takes a run id; lora_run resolves it to that run's checkpoint folder."""
    from clara.runs import start_worker
    from clara.train.launch import lora_run

    first = lora_run(ready, {"model": "tiny", "data": "notes", "iters": 2, "batch_size": 2,
                             "max_seq_length": 48, "mode": "cpt", "lora_rank": 4,
                             "val_every": 0, "save_every": 2}, name="first")
    start_worker(first).wait(timeout=90)
    assert first.status()["status"] == "completed"

    async def go():
        app = make_app(ready.root, start_mode="train")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            form = app.screen.query_one("#form-lora")
            for key, value in {"model": "tiny", "data": "notes", "mode": "cpt", "iters": 2,
                               "batch_size": 2, "max_seq_length": 48, "lora_rank": 4,
                               "from_adapter": "first"}.items():
                form.set_value(key, value)
            await settle(pilot)
            assert 'from_adapter = "first"' in _preview(app)
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: len(list_runs(ready)) == 2, what="the second run")
            await wait_for(pilot, lambda: app.current_mode == "runs", what="the Runs screen")
            second = list_runs(ready)[-1]
            await wait_for(pilot, lambda: second.status().get("status") not in
                           ("queued", "running"), timeout=90, what="the second run to end")
            assert app.errors == []

    asyncio.run(go())
    second = list_runs(ready)[-1]
    doc = second.config()
    assert doc["resolved"]["from_adapter"] == str((first.adapters / "best").resolve()) or \
        doc["resolved"]["from_adapter"] == str((first.adapters / "last").resolve())
    assert second.status()["status"] == "completed", second.status()


def test_lora_form_offers_training_datasets_and_keeps_set_choices(ready):
    async def go():
        app = make_app(ready.root, start_mode="train")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            form = app.screen.query_one("#form-lora")
            data = [v for _, v in form.query_one("#field-data")._options[1:]]
            assert "notes" in data and "toy-sft" in data
            assert not [d for d in data if "stage" in d or d in ("toy-qa", "toy-docs")]
            # a choice with a default (mode) cannot be emptied
            assert not form.query_one("#field-mode")._allow_blank
            assert form.query_one("#field-model").value == "tiny"

    asyncio.run(go())


def test_the_form_shows_its_command_and_saves_and_loads_settings(ready):
    """Missing piece: the `clara train ...` command of the form (what the CLI takes), settings
    saved as TOML and loaded back into a fresh form; Enter in a field with the form not valid
    says why beside the button (defect 7) and launches nothing."""
    from clara import io

    async def go():
        app = make_app(ready.root, start_mode="train")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            form = screen.query_one("#form-lora")
            form.set_value("model", "tiny")
            form.set_value("iters", 7)
            form.set_value("learning_rate", 0.002)
            await settle(pilot)
            command = str(screen.query_one("#train-command", Static).render())
            assert command == "clara train lora -m tiny --iters 7 --learning-rate 0.002"
            form.query_one("#field-iters").focus()
            await pilot.press("enter")
            await pilot.pause()
            status = str(screen.query_one("#train-status", Static).render())
            assert "data: is required" in status and not list_runs(ready)
            await pilot.press("end", "0", "backspace")  # the form changed: the refusal is stale
            await settle(pilot)
            assert str(screen.query_one("#train-status", Static).render()) == ""
            await pilot.press("ctrl+s")  # no file named yet: said, and its field focused
            await pilot.pause()
            assert "type a path first" in str(screen.query_one("#train-status").render())
            assert app.focused is screen.query_one("#settings-path")
            await pilot.press(*"fast.toml", "enter")  # Enter does what ctrl+s asked the path for
            await pilot.pause()
            assert io.read_toml(ready.path / "fast.toml") == {
                "model": "tiny", "iters": 7, "learning_rate": 0.002}
            # the command it names runs from any folder (it said --config fast.toml)
            assert f"--config {ready.path / 'fast.toml'}" in str(
                screen.query_one("#train-status").render()).replace("\n", "")
            form.set_value("iters", 300)
            await pilot.press("enter")  # Enter alone: which key does what, nothing done
            await pilot.pause()
            assert "ctrl+s saves" in str(screen.query_one("#train-status").render())
            await pilot.press("ctrl+r")
            await settle(pilot)
            assert form.raw_values()["iters"] == 7
            assert "loaded 3 setting(s)" in str(screen.query_one("#train-status").render())

    asyncio.run(go())


def test_the_apps_trainings_run_under_sched_idle(monkeypatch):
    """The app starts trainings under SCHED_IDLE (nice 10 where there is none) unless
    $CLARA_WORKER_PRIORITY says otherwise; a bad setting is refused before any run starts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from clara.errors import UsageError
    from clara.runs import PRIORITY_ENV, WORKER_NICE, worker_priority
    from tui.app import APP_WORKER_PRIORITY

    probe = [sys.executable, "-S", "-c",
             "import os; print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))"]
    monkeypatch.setenv(PRIORITY_ENV, APP_WORKER_PRIORITY)
    policy, nice = subprocess.run([*worker_priority(), *probe], capture_output=True, text=True,
                                  check=True).stdout.split()
    if hasattr(os, "SCHED_IDLE") and shutil.which("chrt"):
        assert int(policy) == os.SCHED_IDLE
    else:
        assert int(nice) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
    if Path("/proc/self/autogroup").is_file():  # its own session weighs least against others
        from clara.runs import lower_autogroup

        worker = subprocess.Popen([*worker_priority(), sys.executable, "-S", "-c",
                                   "import time; time.sleep(30)"], start_new_session=True)
        ours = Path("/proc/self/autogroup").read_text()
        try:
            lower_autogroup(worker.pid)
            nice = Path(f"/proc/{worker.pid}/autogroup").read_text().split()[-1]
            assert nice == str(WORKER_NICE)
            assert Path("/proc/self/autogroup").read_text() == ours  # its session's, not ours
        finally:
            worker.kill()
            worker.wait()
    monkeypatch.setenv(PRIORITY_ENV, "7")
    out = subprocess.run([*worker_priority(), *probe], capture_output=True, text=True,
                         check=True).stdout.split()
    base = os.getpriority(os.PRIO_PROCESS, 0)  # nice adds to the caller's niceness
    assert int(out[0]) == os.SCHED_OTHER and int(out[1]) == min(19, base + 7)
    monkeypatch.delenv(PRIORITY_ENV)  # the CLI's default: nice WORKER_NICE
    assert worker_priority()[-2:] == ["-n", str(WORKER_NICE)]
    monkeypatch.setenv(PRIORITY_ENV, "fast")
    with pytest.raises(UsageError, match=PRIORITY_ENV):
        worker_priority()


def test_a_number_field_holding_only_a_space_is_an_error_not_the_default():
    """A space typed over a number field's value (Eval's `limit`) ran with the default unseen:
    all 21 questions instead of 10. Empty still means the default; a space says why not."""
    from clara.errors import UserError
    from tui.widgets.config_form import parse_value

    assert parse_value("limit", "", int | None) is None
    assert parse_value("limit", " 12 ", int | None) == 12
    assert parse_value("lr", "1e-3", float) == 1e-3
    for tp in (int | None, float):
        with pytest.raises(UserError, match="limit: a space is not a number"):
            parse_value("limit", " ", tp)
    assert parse_value("name", " ", str) is None  # text fields: blank is the default, as before
