"""A full disk, for real: the workspace lives on a small tmpfs that the test fills while a run
trains. The run ends `failed` with "disk full: free space and resume", readers keep working
without writing (no traceback anywhere), and the run resumes to the end once space is freed.
Links that lead out of a workspace are refused wherever a name is looked up."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest
from click.testing import CliRunner

from clara import io
from clara.errors import DISK_FULL, ExitCode
from clara.runs import create_run, find_run, list_runs, wait_until_done
from clara.workspace import Workspace
from conftest import corpus_sentences


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + r.stderr.decode().strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder) -> int:
    """Write until the disk is full; return the bytes written."""
    n = 0
    with open(folder / "filler", "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            while True:
                try:
                    n += f.write(b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    return n


def cli(root, *args):
    from clara.cli import cli as clara_cli

    return CliRunner().invoke(clara_cli, ["--root", str(root), *args], catch_exceptions=False)


def test_disk_full_fails_cleanly_and_resumes(small_disk, tiny_model_dir):
    root = small_disk / "workspaces"
    ws = Workspace(root, "d").create()
    rows = [{"messages": [{"role": "user", "content": f"Who is {s.split()[0]}?"},
                          {"role": "assistant", "content": s}]} for s in corpus_sentences(24)]
    io.write_jsonl(ws.datasets_dir / "chat" / "train.jsonl", rows[:20])
    io.write_jsonl(ws.datasets_dir / "chat" / "valid.jsonl", rows[20:])
    ghost = create_run(ws, "lora", {"model": "x"}, name="ghost")  # its worker died unseen
    ghost.write_status(status="running", pid=2 ** 22 + 4321)

    r = cli(root, "-w", "d", "train", "lora", "-m", str(tiny_model_dir), "-d", "chat",
            "--iters", "400", "--batch-size", "2", "--max-seq-length", "32", "--save-every", "1",
            "--val-every", "1000", "--name", "full", "--detach")
    assert r.exit_code == 0, r.output
    run = find_run(ws, "full")
    deadline = time.monotonic() + 120
    while (run.last_metric() or {}).get("step", 0) < 3:
        assert time.monotonic() < deadline and run.status()["status"] in ("queued", "running")
        time.sleep(0.05)
    fill(small_disk)
    st = wait_until_done(run, timeout=120)
    assert st["status"] == "failed" and DISK_FULL in st["message"], st
    assert st["reason"] == "disk_full" and "clara runs resume full" in st["message"]
    fill(small_disk)  # the worker's reserve is gone: take that room too

    # readers on a full disk: one line or a table, never a traceback, and they write nothing
    for args in (("runs", "list"), ("runs", "show", "full"), ("runs", "show", "ghost"),
                 ("runs", "tail", "full", "-n", "2"), ("ws", "show", "d")):
        r = cli(root, "-w", "d", *args)
        assert r.exit_code == 0 and "Traceback" not in r.output, (args, r.output)
    assert [x.status()["status"] for x in list_runs(ws)] == ["interrupted", "failed"]
    assert "Traceback" not in (run.path / "log.txt").read_text(encoding="utf-8", errors="replace")
    # a run started on a full disk fails as one line too, and leaves no run folder behind
    r = cli(root, "-w", "d", "runs", "resume", "full")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) <= 3, r.output
    visible = sorted(p.name for p in run.checkpoints())
    for name in visible:  # what is in sight is whole
        if name.startswith("step-"):
            assert (run.adapters / name / "trainer_state.json").is_file()

    os.unlink(small_disk / "filler")
    r = cli(root, "-w", "d", "runs", "resume", "full")
    assert r.exit_code == 0, r.output
    assert run.status()["status"] == "completed"
    steps = [m["step"] for m in run.metrics() if "train_loss" in m]
    assert steps == list(range(1, 401))


def test_links_out_of_the_workspace_are_refused(tmp_path, root, tiny_model_dir):
    ws = Workspace(root, "s").create()
    outside = tmp_path / "outside"
    io.write_text(outside / "run" / "run.toml", 'id = "x"\nkind = "lora"\n')
    io.write_text(outside / "data" / "train.jsonl", '{"text": "secret"}\n')
    os.symlink(outside / "run", ws.runs_dir / "escape")
    os.symlink(outside / "data", ws.datasets_dir / "escape")
    inside = create_run(ws, "lora", {"model": "x"}, name="real")
    os.symlink(inside.path, ws.runs_dir / "alias")  # a link that stays inside is fine
    assert sorted(r.id for r in list_runs(ws)) == ["alias", "real"]
    assert "escape" not in [p.name for p in ws.items("datasets")]
    for args, needle in ((("runs", "show", "escape"), "no run 'escape'"),
                         (("runs", "delete", "escape", "--yes"), "no run 'escape'"),
                         (("data", "show", "escape"), "leaves the workspace"),
                         (("train", "lora", "-m", str(tiny_model_dir), "-d", "escape"),
                          "leaves the workspace")):
        r = cli(root, "-w", "s", *args)
        assert r.exit_code != ExitCode.OK and needle in r.output and "Traceback" not in r.output
    r = cli(root, "-w", "s", "runs", "delete", "alias", "--yes")
    assert r.exit_code == 0, r.output
    assert not (ws.runs_dir / "alias").exists() and inside.exists  # the link went, not the run
    assert (outside / "run" / "run.toml").is_file() and (outside / "data" / "train.jsonl").is_file()
