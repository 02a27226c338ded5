"""Commands that do not touch a model start without importing MLX or mlx-lm (issue 14, defect 6):
each is run as the real `clara` process with `-X importtime`, whose log names every module the
process imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clara import io
from clara.data.datasets import write_dataset

HEAVY = ("mlx", "mlx_lm")


def imported(args: list[str], cwd, module: str = "clara") -> tuple[set[str],
                                                                  subprocess.CompletedProcess]:
    env = {**os.environ, "CLARA_BLAS_REEXEC": "1"}  # no restart with the BLAS preloaded
    command = [sys.executable, "-X", "importtime", *(["-m", module] if module else []), *args]
    proc = subprocess.run(command, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names, proc


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A root with one workspace holding a dataset, a run and an evaluation folder."""
    from clara.runs import create_run
    from clara.workspace import Workspace

    root = tmp_path_factory.mktemp("imports") / "workspaces"
    ws = Workspace(root, "test").create()
    rows = [{"text": f"line {i}"} for i in range(6)]
    write_dataset(ws, "notes", "cpt", {"train": rows[:4], "valid": rows[4:]})
    run = create_run(ws, "lora", {"model": "tiny", "data": "notes", "iters": 2}, name="r1")
    io.append_jsonl(run.path / "metrics.jsonl", {"step": 1, "train_loss": 2.0})
    run.write_status(status="completed", total_steps=2)
    return root


COMMANDS = [
    ["--version"], ["--help"], ["ws", "list"], ["ws", "show", "test"], ["data", "list"],
    ["data", "show", "notes"], ["data", "validate", "datasets/notes/train.jsonl"],
    ["runs", "list"], ["runs", "show", "r1"], ["eval", "list"], ["train", "--help"],
    ["data", "--help"], ["runs", "--help"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_commands_without_a_model_do_not_import_mlx(filled, args):
    cwd = filled / "test" if "validate" in args else filled.parent
    env_args = ["--root", str(filled), "-w", "test", *args] if args[0] != "--version" else args
    names, proc = imported(env_args, cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "clara.cli" in names  # the log is real: it names what was imported
    assert not {n for n in names if n.split(".")[0] in HEAVY}, (
        f"`clara {' '.join(args)}` imported " + ", ".join(sorted(
            n for n in names if n.split(".")[0] in HEAVY)[:5]))


def test_the_check_sees_mlx_when_it_is_imported(tmp_path):
    """The check can fail: the module of the CLaRa training stages imports MLX, and the log says
    so."""
    names, proc = imported(["-c", "import clara.method.tasks"], tmp_path, module="")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mlx.core" in names and "clara.method.config" in names
