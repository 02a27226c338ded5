"""Data-parallel training on MLX's ring backend: 2 real local processes started by mlx.launch
(clara/train/distributed.py) against the same run at the same global batch in one process."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import asdict

import mlx.core as mx
import pytest

from clara import io
from clara.errors import UserError
from clara.runs import create_run, request_stop, start_worker, wait_until_done
from clara.train import tasks
from clara.train.config import EngineConfig, TrainConfig, merge_config
from clara.train.engine import Engine
from conftest import corpus_sentences

pytestmark = pytest.mark.skipif(not mx.distributed.is_available(), reason="no mx.distributed")

# float32, no dropout: one process and two must agree to float rounding
LORA = {"batch_size": 4, "max_seq_length": 64, "learning_rate": 2e-3, "iters": 14,
        "val_every": 4, "save_every": 2, "dtype": "float32", "warmup_steps": 2}
REL = 1e-4


def chat_rows(n):
    return [{"messages": [{"role": "user", "content": f"Who and what? {s.split()[0]}"},
                          {"role": "assistant", "content": s}]} for s in corpus_sentences(n)[:n]]


@pytest.fixture
def lora_data(tmp_path):
    rows = chat_rows(24)
    d = tmp_path / "chat"
    # 13 rows in batches of 4: the last batch has one row, so rank 1 gets an empty share there
    io.write_jsonl(d / "train.jsonl", rows[:13])
    io.write_jsonl(d / "valid.jsonl", rows[16:21])
    return d


def in_process(run):
    doc = run.config()
    task = tasks.create(doc["kind"], doc, run.path)
    return Engine(task, EngineConfig.from_dict(doc["config"]), run.path).run()


def curve(run):
    rows = [r for r in run.metrics() if "train_loss" in r or "val_loss" in r]
    return [(r["step"], "train" if "train_loss" in r else "val",
             r.get("train_loss", r.get("val_loss"))) for r in rows]


def assert_same_curve(a, b):
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for x, y in zip(a, b):
        assert y[2] == pytest.approx(x[2], rel=REL), x[:2]


def assert_same_weights(dir_a, dir_b, name="adapters.safetensors"):
    wa, wb = mx.load(str(dir_a / name)), mx.load(str(dir_b / name))
    assert wa.keys() == wb.keys()
    for k in wa:
        # Adam divides by sqrt(v): float-rounding of tiny gradients moves weights by ~1e-6
        assert mx.allclose(wa[k].astype(mx.float32), wb[k].astype(mx.float32),
                           rtol=REL, atol=REL).item(), k


def wait_for(predicate, timeout=240.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def last_step(run):
    return (run.last_metric("train_loss") or {}).get("step", 0)


@pytest.mark.slow
def test_lora_on_two_processes_trains_the_one_process_model_and_survives_stop_and_kill(
        workspace, tiny_model_dir, lora_data, cli):
    cfg = lambda **kw: asdict(merge_config(TrainConfig, None, {  # noqa: E731
        "model": str(tiny_model_dir), "data": str(lora_data), **LORA, **kw}))
    one = create_run(workspace, "lora", cfg(), name="one")
    assert in_process(one).status == "completed"

    two = create_run(workspace, "lora", cfg(nproc=2), name="two")
    assert two.config()["distributed"] == {"world_size": 2, "backend": "ring",
                                           "hosts": ["127.0.0.1"]}
    # 1) two processes; stop (the stop file reaches both ranks) once a few steps are done
    proc = start_worker(two, detach=True)
    wait_for(lambda: last_step(two) >= 3 or not two.is_active(), what="step 3")
    assert request_stop(two)
    st = wait_until_done(two, timeout=120)
    proc.wait(timeout=30)
    assert st["status"] == "stopped" and st["world_size"] == 2 and st["backend"] == "ring", st
    stopped_at = st["step"]
    assert 3 <= stopped_at < LORA["iters"]
    assert (two.path / "log.rank1.txt").is_file()
    # rank 0 alone wrote: one start event, one row per step, checkpoints once
    assert [e["event"] for e in two.events()].count("start") == 1
    steps = [r["step"] for r in two.metrics() if "train_loss" in r]
    assert steps == list(range(1, stopped_at + 1))
    assert "Traceback" not in (two.path / "log.rank1.txt").read_text()
    shown = json.loads(cli("-w", "test", "runs", "show", "two", "--format", "json").output)
    assert (shown["world_size"], shown["backend"]) == (2, "ring")

    # 2) resume on two processes; SIGKILL rank 1 mid-run: the run ends within seconds
    proc = start_worker(two, detach=True)
    wait_for(lambda: (two.path / "ranks" / "1.json").is_file() and
             last_step(two) >= stopped_at + 2 or not two.is_active(), what="resumed steps")
    assert two.is_active(), two.status()
    victim = io.read_json(two.path / "ranks" / "1.json")["pid"]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not two.is_active(), timeout=30, what="interrupted")
    took = time.monotonic() - killed
    st = two.status()
    assert st["status"] == "interrupted", st
    assert took < 10, took
    lost = [e for e in two.events() if e["event"] == "rank_lost"]
    assert lost and lost[0]["rank"] == 1, two.events()
    proc.wait(timeout=30)  # mlx.launch and every rank are gone too

    # 3) resume on ONE process (a different world): it ends exactly as the straight run
    proc = start_worker(two, detach=True, world={"nproc": 1})
    proc.wait(timeout=240)
    st = two.status()
    assert st["status"] == "completed" and st["world_size"] == 1, st
    assert_same_curve(curve(one), curve(two))
    assert_same_weights(one.adapters / "last", two.adapters / "last")
    assert_same_weights(one.adapters / "best", two.adapters / "best")


@pytest.mark.slow
def test_clara_stage1_on_two_processes_matches_one(workspace, tiny_model_dir, tmp_path):
    from clara.method import synthetic
    from clara.method.launch import stage_run

    facts = synthetic.facts(7, seed=3)
    data = tmp_path / "s1"
    io.write_jsonl(data / "train.jsonl", synthetic.stage1_rows(facts[:5], paraphrase_every=2))
    io.write_jsonl(data / "valid.jsonl", synthetic.stage1_rows(facts[5:]))
    settings = {"model": str(tiny_model_dir), "data": str(data), "iters": 4, "batch_size": 3,
                "doc_max_tokens": 16, "compression_rate": 4, "max_len": 256, "val_every": 2,
                "save_every": 4, "lora_dropout": 0.0, "learning_rate": 1e-3}
    one = stage_run(workspace, "stage1", settings, name="one")
    assert in_process(one).status == "completed"
    two = stage_run(workspace, "stage1", {**settings, "nproc": 2}, name="two")
    proc = start_worker(two)
    proc.wait(timeout=240)
    assert two.status()["status"] == "completed", (two.path / "log.txt").read_text()[-2000:]
    assert_same_curve(curve(one), curve(two))
    ce = lambda run: [r["train_ce"] for r in run.metrics() if "train_ce" in r]  # noqa: E731
    assert ce(two) == pytest.approx(ce(one), rel=REL)
    from clara.method import checkpoint

    files = sorted(p.name for p in (one.adapters / "last").glob("*.safetensors"))
    assert files
    for name in files:
        assert_same_weights(one.adapters / "last", two.adapters / "last", name)
    assert checkpoint  # the folders are CLaRa checkpoints
    assert (two.adapters / "last" / "clara_config.json").is_file()


def test_bad_world_is_one_line_before_any_run_folder(workspace, tiny_model_dir, lora_data,
                                                     tmp_path, cli):
    base = {"model": str(tiny_model_dir), "data": str(lora_data), **LORA}
    runs = workspace.path / "runs"
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    hostfile = tmp_path / "hosts.json"
    io.write_json(hostfile, [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2)
    try:
        with pytest.raises(UserError, match=f"port 127.0.0.1:{port} is in use"):
            create_run(workspace, "lora", asdict(merge_config(
                TrainConfig, None, {**base, "hostfile": str(hostfile), "dist_port": port})))
    finally:
        held.close()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"ips": ["127.0.0.1"]}]))
    r = cli("-w", "test", "train", "lora", "-m", str(tiny_model_dir), "-d", str(lora_data),
            "--hostfile", str(bad))
    assert r.exit_code != 0 and "hostfile" in r.output and "Traceback" not in r.output
    # a host that cannot be reached (TEST-NET-1, RFC 5737) names itself, from a hostfile too
    far = tmp_path / "far.json"
    io.write_json(far, {"hosts": [{"ssh": "192.0.2.7", "ips": ["192.0.2.7"]},
                                  {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}]})
    r = cli("-w", "test", "train", "lora", "-m", str(tiny_model_dir), "-d", str(lora_data),
            "--hostfile", str(far))
    assert r.exit_code != 0 and "192.0.2.7" in r.output and "unreachable" in r.output, r.output
    r = cli("-w", "test", "train", "lora", "-m", str(tiny_model_dir), "-d", str(lora_data),
            "--hosts", "192.0.2.1,192.0.2.2")
    assert r.exit_code != 0 and "192.0.2.1" in r.output and "unreachable" in r.output, r.output
    r = cli("-w", "test", "train", "lora", "-m", str(tiny_model_dir), "-d", str(lora_data),
            "--nproc", "2", "--backend", "tcp")
    assert r.exit_code != 0 and "backend" in r.output
    assert not runs.exists() or not any(runs.iterdir())


def test_nccl_ranks_run_without_cuda_graphs_unless_chosen(monkeypatch):
    from clara.train.distributed import plan

    monkeypatch.delenv("MLX_USE_CUDA_GRAPHS", raising=False)
    args = plan({"nproc": 2, "backend": "nccl"}, check=False).args
    assert args[args.index("MLX_USE_CUDA_GRAPHS=0") - 1] == "--env"
    assert "MLX_USE_CUDA_GRAPHS=0" not in plan({"nproc": 2, "backend": "ring"}, check=False).args
    monkeypatch.setenv("MLX_USE_CUDA_GRAPHS", "1")  # the user's choice travels as it is
    assert "MLX_USE_CUDA_GRAPHS=0" not in plan({"nproc": 2, "backend": "nccl"}, check=False).args


def test_cuda_ranks_get_disjoint_cpus_of_their_gpus_node(monkeypatch):
    """pin_to_gpu_cpus' share: GPUs on one NUMA node split its CPUs evenly and disjointly (the
    2-H200 host: one node of 32 cores), a GPU alone on its node keeps the node; no pinning
    without a single CUDA device, or with CLARA_PIN_CPUS=0."""
    from clara.train.distributed import pin_to_gpu_cpus, share_of_node

    one_node = [list(range(32))] * 2
    assert share_of_node(one_node, 0) == list(range(16))
    assert share_of_node(one_node, 1) == list(range(16, 32))
    two_nodes = [[0, 1, 2, 3], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert share_of_node(two_nodes, 1) == [2, 3] and share_of_node(two_nodes, 2) == [4, 5, 6, 7]
    assert share_of_node(one_node, 2) is None
    # hyper-threads of a core stay together: CPUs i and i + 16 are one core's two threads
    ht = lambda c: c % 16  # noqa: E731
    assert share_of_node(one_node, 0, ht) == [*range(8), *range(16, 24)]
    assert share_of_node(one_node, 1, ht) == [*range(8, 16), *range(24, 32)]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pin_to_gpu_cpus() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("CLARA_PIN_CPUS", "0")
    assert pin_to_gpu_cpus() is None
