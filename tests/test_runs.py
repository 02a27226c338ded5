"""Runs as real worker processes: foreground, detached, stop, SIGKILL + resume, liveness, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlx.core as mx
import pytest

from clara import io
from clara.runs import Run, create_run, find_run, list_runs
from clara.train import checkpoint as ckpt
from conftest import corpus_sentences


@pytest.fixture
def chat_ws(workspace):
    rows = [{"messages": [{"role": "user", "content": f"Tell me about {s.split()[0]}"},
                          {"role": "assistant", "content": s}]} for s in corpus_sentences(40)[:40]]
    io.write_jsonl(workspace.datasets_dir / "chat" / "train.jsonl", rows[:32])
    io.write_jsonl(workspace.datasets_dir / "chat" / "valid.jsonl", rows[32:])
    return workspace


def train_args(model, *extra):
    return ["-w", "test", "train", "lora", "-m", str(model), "-d", "chat", "--batch-size", "4",
            "--max-seq-length", "64", "--learning-rate", "1e-3", *extra]


def wait_for(predicate, timeout=120.0, poll=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out waiting")


def test_foreground_run_writes_every_file_and_mlx_lm_generate_loads_it(cli, chat_ws,
                                                                        tiny_model_dir):
    res = cli(*train_args(tiny_model_dir, "--iters", "6", "--val-every", "3", "--save-every",
                          "3", "--name", "fg"))
    assert res.exit_code == 0, res.output
    assert "run fg: completed" in res.output
    run = find_run(chat_ws, "fg")
    for name in ("run.toml", "status.json", "metrics.jsonl", "events.jsonl", "log.txt",
                 "report.md", "adapters/best/adapters.safetensors",
                 "adapters/best/adapter_config.json", "adapters/last/trainer_state.json",
                 "adapters/last/optimizer.safetensors", "adapters/step-0000006"):
        assert (run.path / name).exists(), name
    doc = run.config()
    assert doc["kind"] == "lora" and doc["config"]["iters"] == 6
    assert doc["resolved"]["data"] == str((chat_ws.datasets_dir / "chat").resolve())
    assert doc["platform"]["dtype"] == "float32" and "seed" in doc["platform"]
    st = run.status()
    assert st["status"] == "completed" and st["pid"] and st["started"] and st["finished"]
    assert [r["step"] for r in run.metrics() if "train_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert {"start", "checkpoint", "best", "end"} <= {e["event"] for e in run.events()}
    report = (run.path / "report.md").read_text()
    assert "best step" in report and "| lora_rank | 8 |" in report
    out = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "generate", "--model", str(tiny_model_dir),
         "--adapter-path", str(run.adapters / "best"), "--prompt", "Alia", "--max-tokens", "3"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = cli("-w", "test", "runs", "list", "--format", "json")
    assert json.loads(res.output)[0]["status"] == "completed"
    res = cli("-w", "test", "runs", "tail", "fg", "-n", "2", "--no-events")
    assert res.output.splitlines()[-1].startswith("step 6 val_loss=")


def test_stop_saves_then_resume_after_sigkill(cli, chat_ws, tiny_model_dir):
    # stop: a long run is asked to stop; it saves a checkpoint and says stopped
    res = cli(*train_args(tiny_model_dir, "--iters", "100000", "--save-every", "100000",
                          "--val-every", "0", "--detach", "--name", "long"))
    assert res.exit_code == 0 and res.output.strip() == "long"
    run = find_run(chat_ws, "long")
    wait_for(lambda: (run.last_metric() or {}).get("step", 0) >= 2)
    res = cli("-w", "test", "runs", "stop", "long")
    assert res.exit_code == 0 and "stopped" in res.output
    st = run.status()
    state = ckpt.read_state(run.adapters / "last")
    assert st["status"] == "stopped" and st["reason"] == "stop" and state["step"] == st["step"] >= 2
    assert [e["event"] for e in run.events()][-2:] == ["stop", "end"]

    # SIGKILL mid-run: the run is found interrupted, no checkpoint is broken, resume finishes it
    res = cli(*train_args(tiny_model_dir, "--iters", "300", "--save-every", "5", "--val-every",
                          "50", "--keep-checkpoints", "3", "--detach", "--name", "killed"))
    run = find_run(chat_ws, "killed")
    wait_for(lambda: (run.adapters / "last").exists()
             and (run.last_metric() or {}).get("step", 0) > 7)
    pid = run.raw_status()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: run.status()["status"] == "interrupted", timeout=10)
    assert run.events()[-1]["event"] == "interrupted"
    killed_at = run.last_metric()["step"]
    last = ckpt.latest(run.adapters)
    saved_step = ckpt.read_state(last)["step"]
    assert saved_step <= killed_at < 300
    for folder in run.adapters.glob("step-*"):  # every checkpoint on disk is whole
        mx.load(str(folder / "adapters.safetensors"))
        mx.load(str(folder / ckpt.OPTIMIZER_FILE))
    res = cli("-w", "test", "runs", "resume", "killed")
    assert res.exit_code == 0, res.output
    assert run.status()["status"] == "completed"
    steps = [r["step"] for r in run.metrics() if "train_loss" in r]
    assert steps == list(range(1, 301))  # nothing lost, nothing twice
    resume = [e for e in run.events() if e["event"] == "resume"]
    assert resume and resume[0]["step"] == saved_step
    res = cli("-w", "test", "runs", "delete", "long", "--yes")
    assert res.exit_code == 0 and not run.path.with_name("long").exists()


def test_absurd_learning_rate_fails_with_hint_in_the_cli(cli, chat_ws, tiny_model_dir):
    res = cli(*train_args(tiny_model_dir, "--iters", "20", "--learning-rate", "1e20",
                          "--name", "nan"))
    assert res.exit_code == 1
    assert "failed" in res.output and "lower the learning rate" in res.output
    assert find_run(chat_ws, "nan").status()["reason"] == "nan"


def test_dead_worker_is_marked_interrupted_by_any_reader(workspace):
    run = create_run(workspace, "lora", {"seed": 0})
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run.write_status(status="running", pid=proc.pid)
    assert run.status()["status"] == "interrupted"
    assert Run(run.path).raw_status()["status"] == "interrupted"  # written back for all readers
    alive = create_run(workspace, "lora", {"seed": 0}, name="alive")
    alive.write_status(status="running", pid=os.getpid())
    assert alive.status()["status"] == "running"
    assert [r.id for r in list_runs(workspace)] == [run.id, "alive"]


def test_cli_errors_are_one_line(cli, chat_ws, tiny_model_dir, tmp_path):
    res = cli(*train_args(tmp_path / "nowhere", "--iters", "2"))
    assert res.exit_code == 4 and "no model" in res.output and "Traceback" not in res.output
    res = cli(*train_args(tiny_model_dir, "--fine-tune-type", "qlora"))
    assert res.exit_code == 2 and "fine_tune_type" in res.output
    res = cli("-w", "test", "runs", "resume", "nope")
    assert res.exit_code == 1 and "no run 'nope'" in res.output
