"""TensorBoard export of a run's metrics: the event files hold every train/val scalar by step,
read back with tensorboardX's own protobuf types; the CLI command writes the same."""

from __future__ import annotations

import struct

import pytest

from clara import io
from clara.errors import UserError

pytest.importorskip("tensorboardX")


def read_events(folder):
    """(tag, step, value) of every scalar in the folder's event files (TFRecord framing)."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.append((v.tag, event.step, v.simple_value))
    return out


def _run(ws, name="r1"):
    from clara.runs import create_run

    run = create_run(ws, "lora", {"model": "tiny", "data": "notes", "iters": 3}, name=name)
    for step, loss in ((1, 3.0), (2, 2.5), (3, 2.0)):
        io.append_jsonl(run.path / "metrics.jsonl", {"step": step, "train_loss": loss,
                                                     "tokens_per_second": 100.0 * step,
                                                     "elapsed_s": step})
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 3, "val_loss": 2.25})
    return run


def test_export_writes_every_scalar_by_step(workspace):
    from clara.export import export_tensorboard

    run = _run(workspace)
    folder = export_tensorboard(run)
    assert folder == run.path / "tensorboard"
    events = read_events(folder)
    train = [(s, v) for t, s, v in events if t == "train/train_loss"]
    assert train == [(1, 3.0), (2, 2.5), (3, 2.0)]
    assert [(s, v) for t, s, v in events if t == "val/val_loss"] == [(3, 2.25)]
    assert not [t for t, _s, _v in events if t.endswith("elapsed_s")]
    export_tensorboard(run)  # again: replaces, does not add a second file
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1


def test_export_of_a_run_without_metrics_is_refused(workspace):
    from clara.export import export_tensorboard
    from clara.runs import create_run

    run = create_run(workspace, "lora", {"model": "tiny"}, name="empty")
    with pytest.raises(UserError, match="no metrics yet"):
        export_tensorboard(run)


def test_cli_runs_export(cli, workspace, tmp_path):
    _run(workspace, "r2")
    result = cli("-w", "test", "runs", "export", "r2", "--tensorboard", str(tmp_path / "tb"))
    assert result.exit_code == 0, result.output
    assert read_events(tmp_path / "tb")
