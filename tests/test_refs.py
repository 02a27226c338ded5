"""The checkpoint grammar (clara.refs): RUN[:best|last|step-N] | PIPELINE[:stageN] | PATH, the
kind a command needs, and what pickers offer (no failed run, no stage still training)."""

from __future__ import annotations

import hashlib

import pytest

from clara import io, refs
from clara.errors import UserError
from clara.method.pipeline import create_pipeline
from clara.runs import Run, create_run


def _lora_ckpt(folder, model="base-model"):
    folder.mkdir(parents=True, exist_ok=True)
    io.write_json(folder / "adapter_config.json", {"model": model, "fine_tune_type": "lora"})
    io.write_bytes(folder / "adapters.safetensors", b"x")


def _clara_ckpt(folder, model="base-model"):
    folder.mkdir(parents=True, exist_ok=True)
    io.write_json(folder / "clara_config.json", {"format": 1, "config": {"base_model": model}})
    for name in ("adapters.safetensors", "embeddings.safetensors"):
        (folder / name).write_bytes(b"x")


def _run(ws, name, kind="lora", status="completed", steps=(2, 4), best=2, clara=False):
    run = create_run(ws, kind, {"model": "cfg-model"}, resolved={"model": "/models/base"},
                     name=name)
    make = _clara_ckpt if clara else _lora_ckpt
    for s in steps:
        make(run.adapters / f"step-{s:07d}")
    if steps:
        (run.adapters / "last").symlink_to(f"step-{steps[-1]:07d}")
    if best is not None:
        make(run.adapters / "best")
    Run(run.path).write_status(status=status)
    return run


def _digest(path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_run_grammar(workspace, tmp_path):
    ws = workspace
    run = _run(ws, "lora-a")
    before = _digest(ws.path)
    best = refs.resolve(ws, "lora-a")
    assert best.kind == "lora" and best.path.name == "best" and best.label == "lora-a:best"
    assert best.base == "/models/base" and best.run == "lora-a"
    assert refs.resolve(ws, "lora-a:last").path.name == "step-0000004"
    assert refs.resolve(ws, "lora-a:step-2").path.name == "step-0000002"
    assert refs.resolve(ws, "lora-a:2").path.name == "step-0000002"
    assert refs.resolve(ws, "lora-").path.name == "best"  # unique prefix
    assert refs.resolve(ws, "last").run == "lora-a"
    assert refs.resolve(ws, str(run.path)).path.name == "best"  # a run folder
    folder = refs.resolve(ws, str(run.adapters / "step-0000002"))
    assert folder.path.name == "step-0000002" and folder.base == "base-model"
    with pytest.raises(UserError, match=r"no checkpoint 'step-0000009' \(it has: best, last"):
        refs.resolve(ws, "lora-a:9")
    with pytest.raises(UserError, match="not a checkpoint name"):
        refs.resolve(ws, "lora-a:newest")
    with pytest.raises(UserError, match="no run 'nope'"):
        refs.resolve(ws, "nope")
    with pytest.raises(UserError, match="adapter folder does not exist"):
        refs.resolve(ws, str(tmp_path / "missing"))
    with pytest.raises(UserError, match="a CLaRa checkpoint is needed here"):
        refs.resolve(ws, "lora-a", want=refs.CLARA)
    # a run without a best falls back to its last; with none, the status is named
    _run(ws, "lora-b", best=None)
    assert refs.resolve(ws, "lora-b").path.name == "step-0000004"
    _run(ws, "lora-c", status="failed", steps=(), best=None)
    with pytest.raises(UserError, match=r"lora-c has no checkpoint yet \(status: failed\)"):
        refs.resolve(ws, "lora-c")
    assert _digest(ws.path) != before  # (the runs made above)
    again = _digest(ws.path)
    refs.resolve(ws, "lora-a:last")
    assert _digest(ws.path) == again  # resolving only reads


def test_pipeline_grammar_and_pickers(workspace):
    ws = workspace
    pipe = create_pipeline(ws, {"model": "m"}, "m", {s: "d" for s in refs.STAGES}, name="pp")
    s1 = _run(ws, "pp-stage1", kind="clara-stage1", clara=True)
    s2 = _run(ws, "pp-stage2", kind="clara-stage2", status="running", clara=True, best=None,
              steps=(1,))
    pipe.update_stage("stage1", run=s1.id)
    pipe.update_stage("stage2", run=s2.id)
    assert refs.resolve(ws, "pp").run == "pp-stage2"  # the newest stage with a checkpoint
    assert refs.resolve(ws, "pp:stage1").label == "pp-stage1:best"
    assert refs.resolve(ws, "pp:1").kind == "clara"
    with pytest.raises(UserError, match="stage3 has not started"):
        refs.resolve(ws, "pp:stage3")
    with pytest.raises(UserError, match="stage1, stage2 or stage3"):
        refs.resolve(ws, "pp:stage9")
    with pytest.raises(UserError, match="mlx-lm \\(LoRA\\) adapter is needed"):
        refs.resolve(ws, "pp", want=refs.LORA)
    _run(ws, "lora-ok")
    _run(ws, "lora-failed", status="failed")
    _run(ws, "lora-running", status="running")
    _run(ws, "lora-empty", steps=(), best=None)
    # pickers: settled runs with a loadable checkpoint of the wanted kind, newest first
    assert refs.usable(ws, refs.LORA) == ["lora-ok"]
    assert refs.usable(ws, refs.CLARA) == ["pp-stage1"]
    assert refs.usable(ws, run_kinds=("clara-stage2",)) == []  # stage 2 is still training
    assert refs.usable(ws) == ["lora-ok", "pp-stage1"]
