"""Following a run (the one follower every face uses), the facts of `Run.summary`, and the exit
codes a followed run ends a command with (a run stopped by the memory guard exits 5)."""

from __future__ import annotations

import json
import os

from clara import io
from clara.errors import ExitCode
from clara.runs import ACTIVE, Follower, Run, create_run, outcome_code
from clara.workspace import Workspace
from conftest import corpus_sentences


def _append_raw(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_follower_reads_whole_lines_once_and_restarts_on_a_rewrite(root):
    ws = Workspace(root, "f").create()
    run = create_run(ws, "lora", {"model": "x"}, name="r")
    f = Follower(run)
    assert f.read().metrics == []
    for step in (1, 2):
        io.append_jsonl(run.path / "metrics.jsonl", {"step": step, "train_loss": 3.0 - step})
    _append_raw(run.path / "metrics.jsonl", b'{"step": 3, "train_lo')  # a line being written
    io.append_jsonl(run.path / "events.jsonl", {"event": "start"})
    u = f.read()
    assert [r["step"] for r in u.metrics] == [1, 2] and [e["event"] for e in u.events] == ["start"]
    assert not u.reset and u.last_train == {"step": 2, "train_loss": 1.0}
    _append_raw(run.path / "metrics.jsonl", b'ss": 0.5}\nnot json\n')
    u = f.read()
    assert u.metrics == [{"step": 3, "train_loss": 0.5}] and u.events == []  # damaged: skipped
    # a resume rewrites metrics.jsonl (rows up to its checkpoint): read again, flagged
    io.write_jsonl(run.path / "metrics.jsonl", [{"step": 1, "train_loss": 2.0}])
    u = f.read()
    assert u.reset and [r["step"] for r in u.metrics] == [1]
    # a new follower continues from where an earlier one stopped
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 2, "train_loss": 1.5})
    later = Follower(run, *u.offsets).read()
    assert [r["step"] for r in later.metrics] == [2]


def test_follow_ends_with_done_when_the_run_is_no_longer_active(root):
    ws = Workspace(root, "f").create()
    run = create_run(ws, "lora", {"model": "x"}, name="r")
    run.write_status(status="running", pid=os.getpid())
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 1, "train_loss": 2.0})
    seen = []
    for update in run.follow(poll=0.01):
        seen.append(update)
        if len(seen) == 2:
            io.append_jsonl(run.path / "metrics.jsonl", {"step": 2, "train_loss": 1.0})
            run.write_status(status="completed", best_val_loss=0.9)
    assert [u.done for u in seen] == [False, False, True]
    assert [r["step"] for u in seen for r in u.metrics] == [1, 2]
    assert seen[-1].status["status"] == "completed" not in ACTIVE


def test_summary_holds_best_val_loss_and_duration(root):
    ws = Workspace(root, "f").create()
    run = create_run(ws, "lora", {"model": "m", "data": "d"}, name="r")
    for row in ({"step": 1, "train_loss": 2.0, "elapsed_s": 1.5}, {"step": 1, "val_loss": 1.8},
                {"step": 2, "train_loss": 1.0, "elapsed_s": 3.25}, {"step": 2, "val_loss": 1.2},
                {"step": 3, "val_loss": 1.4}):
        io.append_jsonl(run.path / "metrics.jsonl", row)
    s = run.summary()
    assert (s["best_val_loss"], s["duration_s"], s["step"], s["val_loss"]) == (1.2, 3.25, 2, 1.4)
    assert s["status"] == "queued" and s["active"] and (s["model"], s["data"]) == ("m", "d")
    run.write_status(status="completed", best_val_loss=1.1, started="2026-01-01T10:00:00+00:00",
                     finished="2026-01-01T10:01:40+00:00")
    io.write_text(run.path / "metrics.jsonl", "")
    s = run.summary()
    assert (s["best_val_loss"], s["duration_s"], s["active"]) == (1.1, 100.0, False)


def test_outcome_codes():
    assert outcome_code({"status": "completed"}) == ExitCode.OK
    assert outcome_code({"status": "stopped", "reason": "memory"}) == ExitCode.GUARD
    assert outcome_code({"status": "stopped", "reason": "stop"}) == ExitCode.INTERRUPTED
    assert outcome_code({"status": "interrupted"}) == ExitCode.INTERRUPTED
    assert outcome_code({"status": "failed", "exit_code": 3}) == ExitCode.BAD_DATA
    assert outcome_code({"status": "failed"}) == ExitCode.FAILURE


def test_a_run_stopped_by_the_memory_guard_exits_5(cli, workspace, tiny_model_dir):
    rows = [{"text": s} for s in corpus_sentences(20)]
    io.write_jsonl(workspace.datasets_dir / "t" / "train.jsonl", rows[:16])
    io.write_jsonl(workspace.datasets_dir / "t" / "valid.jsonl", rows[16:])
    cfg = workspace.path / "guard.toml"
    io.write_text(cfg, "memory_limit_gb = 1e-06\n")  # any step passes it
    r = cli("-w", "test", "train", "lora", "-m", str(tiny_model_dir), "-d", "t", "--mode", "cpt",
            "--iters", "50", "--batch-size", "2", "--max-seq-length", "32", "--config", str(cfg),
            "--name", "guarded")
    assert r.exit_code == ExitCode.GUARD, r.output
    assert "memory guard" in r.output and "Traceback" not in r.output
    st = Run(workspace.runs_dir / "guarded").status()
    assert (st["status"], st["reason"], st["step"]) == ("stopped", "memory", 1)
    assert json.loads((workspace.runs_dir / "guarded" / "adapters" / "last" /
                       "trainer_state.json").read_text())["step"] == 1
