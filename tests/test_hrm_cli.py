"""HRM faces: `clara data puzzles`, `clara eval hrm`, `clara solve` and the app's HRM mode, over a
tiny run trained in-process through the engine."""

from __future__ import annotations

import asyncio
import json

import pytest

from clara.hrm.config import hrm_run
from clara.train import tasks
from clara.train.config import EngineConfig
from clara.train.engine import Engine
from tests.tui_helpers import make_app, settle, wait_for

TINY = {"hidden_size": 32, "num_heads": 2, "H_layers": 1, "L_layers": 1, "H_cycles": 1,
        "L_cycles": 1, "halt_max_steps": 2, "norm_eps": 1e-6, "rope_theta": 500.0, "batch_size": 16, "iters": 4, "val_every": 2,
        "save_every": 2, "val_puzzles": 8}


@pytest.fixture
def trained(cli, workspace):
    out = cli("-w", "test", "data", "puzzles", "sudoku", "s4", "--size", "4", "--train", "20",
              "--test", "8", "--augment", "1", "--seed", "3")
    assert out.exit_code == 0, out.output
    run = hrm_run(workspace, {**TINY, "data": "s4"}, name="h1")
    doc = run.config()
    task = tasks.create("hrm", doc, run.path)
    Engine(task, EngineConfig.from_dict(doc["config"]), run.path).run()
    return run


def test_data_puzzles_commands(cli, workspace):
    out = cli("-w", "test", "data", "puzzles", "maze", "m7", "--size", "7", "--train", "4",
              "--test", "2", "--augment", "1")
    assert out.exit_code == 0 and "train 8, test 2" in out.output
    out = cli("-w", "test", "data", "puzzles", "show", "m7", "--index", "1")
    assert out.exit_code == 0 and "S" in out.output and "o" in out.output
    out = cli("-w", "test", "data", "puzzles", "maze", "m7", "--size", "8")
    assert out.exit_code != 0 and "already exists" in out.output
    out = cli("-w", "test", "data", "puzzles", "maze", "bad", "--size", "8")
    assert out.exit_code == 1 and out.output.strip() == \
        "Error: size: maze size must be odd and at least 5"
    assert not (workspace.datasets_dir / "bad").exists()
    out = cli("-w", "test", "data", "list")
    assert "m7" in out.output and "puzzles" in out.output
    out = cli("-w", "test", "data", "validate", "m7")
    assert out.exit_code == 0 and "ok: 10 puzzles" in out.output
    (workspace.datasets_dir / "m7" / "train.safetensors").write_bytes(b"broken")
    out = cli("-w", "test", "data", "validate", "m7")
    assert out.exit_code != 0 and "train.safetensors: not a safetensors file" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_train_refuses_bad_settings_without_a_run_folder(cli, workspace):
    cli("-w", "test", "data", "puzzles", "sudoku", "s4", "--size", "4", "--train", "4",
        "--test", "2")
    out = cli("-w", "test", "train", "hrm", "-d", "s4", "--hidden-size", "30")
    assert out.exit_code == 1 and "num_heads: must divide hidden_size" in out.output
    out = cli("-w", "test", "train", "hrm", "-d", "s4", "--batch-size", "64")
    assert out.exit_code == 1 and "batch_size: 64 is more than the 4" in out.output
    assert not workspace.runs_dir.exists() or not any(workspace.runs_dir.iterdir())


def test_eval_and_solve(cli, trained):
    # every architecture setting of the run is the checkpoint's (one declaration for both)
    from clara.hrm.config import HRMArchitecture

    saved = json.loads((trained.adapters / "last" / "hrm_config.json").read_text())
    for name in HRMArchitecture.__dataclass_fields__:
        assert saved[name] == TINY.get(name, HRMArchitecture.__dataclass_fields__[name].default)
    out = cli("-w", "test", "eval", "hrm", "h1", "--split", "test", "--format", "json")
    assert out.exit_code == 0, out.output
    res = json.loads(out.output)
    assert res["puzzles"] == 8 and 0 <= res["exact_accuracy"] <= 1 and res["segments"] == 2
    assert 1 <= res["act_mean_steps"] <= 2
    out = cli("-w", "test", "solve", "h1", "--puzzle", "1...|..2.|.3..|...4", "--show-steps")
    assert out.exit_code == 0, out.output
    assert "segment 1" in out.output and "segment 2" in out.output and "answer" in out.output
    out = cli("-w", "test", "solve", "h1", "--puzzle", "12345")
    assert out.exit_code == 1 and "puzzle: 5 cells" in out.output


def test_app_hrm_mode_steps_through_segments(root, trained):
    async def go():
        app = make_app(root)
        async with app.run_test(size=(140, 45)) as pilot:
            app.switch_mode("hrm")
            await settle(pilot)
            screen = app.screen
            screen.query_one("#hrm-tabs").active = "hrm-solve"
            await settle(pilot)
            await wait_for(pilot, lambda: screen.query_one("#hrm-run").value == "h1",
                           what="the run choice")
            screen._go()
            await wait_for(pilot, lambda: bool(screen.trace), what="the solve")
            first = str(screen.query_one("#hrm-seg-info").render())
            assert "segment 1/2" in first
            await pilot.press("right_square_bracket")
            assert "segment 2/2" in str(screen.query_one("#hrm-seg-info").render())
            await pilot.press("left_square_bracket", "left_square_bracket")
            assert "the puzzle" in str(screen.query_one("#hrm-seg-info").render())
            assert app.errors == []
    asyncio.run(go())


def test_runs_screen_plots_exact_accuracy_of_puzzle_runs():
    from tui.screens.runs import RunMetrics

    m = RunMetrics()
    m.add([{"step": 1, "train_loss": 2.0}, {"step": 1, "val_loss": 1.5,
                                             "val_exact_accuracy": 0.25}])
    assert m.loss_series()["val exact"] == ([1], [0.25])
    lora = RunMetrics()
    lora.add([{"step": 1, "val_loss": 1.0}])
    assert "val exact" not in lora.loss_series()
