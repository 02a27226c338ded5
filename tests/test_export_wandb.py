"""W&B export: without wandb, one line saying how to get it and nothing written; with wandb,
an offline W&B run (no login here) whose history holds every train/val scalar by step, read back
from the run's .wandb log."""

from __future__ import annotations

import builtins
import json
import struct
import time

import pytest

from clara import io


def _run(ws):
    from clara.runs import create_run

    run = create_run(ws, "lora", {"model": "tiny", "data": "notes", "iters": 3}, name="r1")
    for step, loss in ((1, 3.0), (2, 2.5), (3, 2.0)):
        io.append_jsonl(run.path / "metrics.jsonl", {"step": step, "train_loss": loss,
                                                     "elapsed_s": step})
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 3, "val_loss": 2.25})
    return run


def _without_wandb(monkeypatch):
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb" or name.startswith("wandb."):
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)


def test_without_wandb_the_export_says_so_in_one_line(cli, workspace, monkeypatch):
    _without_wandb(monkeypatch)
    run = _run(workspace)
    res = cli("-w", "test", "runs", "export", "r1", "--wandb")
    assert res.exit_code == 1
    assert res.output.strip().endswith("W&B export needs wandb, which is not installed: "
                                       "pip install 'clara[export]' (or pip install wandb)")
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (run.path / "tensorboard").exists()  # refused before anything was written


def test_without_wandb_the_app_says_so_in_a_dialog(workspace, monkeypatch):
    import asyncio

    from tests.tui_helpers import make_app, settle, wait_for

    _without_wandb(monkeypatch)
    _run(workspace)

    async def go():
        app = make_app(workspace.root, start_mode="runs")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            app.screen.select_run("r1")
            app.screen.action_export_wandb()  # the palette's "Export run to W&B"
            await wait_for(pilot, lambda: app.errors, what="the error dialog")
            assert app.errors[-1].startswith("W&B export needs wandb, which is not installed")
            assert type(app.screen).__name__ == "ErrorDialog"
            assert not (workspace.runs_dir / "r1" / "wandb").exists()

    asyncio.run(go())


def _records(path):
    """The protobuf records of a .wandb file (W&B's LevelDB-style log: a 7-byte file header,
    32 KiB blocks of chunks with a 7-byte header: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last chunk of one
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


@pytest.mark.timeout(120)
def test_wandb_export_logs_every_scalar_offline(cli, workspace, monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login: offline, never a prompt
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run = _run(workspace)
    res = cli("-w", "test", "runs", "export", "r1", "--wandb")
    assert res.exit_code == 0, res.output
    assert "logged offline in" in res.output and "wandb sync" in res.output
    logs = list((run.path / "wandb").glob("offline-run-*/*.wandb"))
    assert len(logs) == 1
    # W&B's service process writes the log; it may land a moment after finish() returned
    deadline = time.monotonic() + 30
    while "exit" not in [r.WhichOneof("record_type") for r in _records(logs[0])]:
        assert time.monotonic() < deadline, "the W&B log was not completed"
        time.sleep(0.2)
    history, names = {}, []
    for rec in _records(logs[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            names.append(rec.run.display_name)
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                   for i in rec.history.item}
            history[row["_step"]] = {k: v for k, v in row.items() if not k.startswith("_")}
    assert names == ["r1"]
    assert history == {1: {"train/train_loss": 3.0}, 2: {"train/train_loss": 2.5},
                       3: {"train/train_loss": 2.0, "val/val_loss": 2.25}}
