"""Checkpoints of a run: `adapters/step-N/`, `adapters/best/`, and `adapters/last` -> newest step.

A checkpoint folder holds what the task writes (adapter_config.json + adapters.safetensors, so
mlx-lm can load it) and what the engine needs to resume exactly: optimizer.safetensors and
trainer_state.json (step, data position, RNG key, early-stopping state). Each is written into a
hidden temporary folder and renamed into place, so a SIGKILL never leaves a half-written one;
`last` is a symlink replaced in one rename, so it always names a complete checkpoint. Pruning
renames a folder out of sight (`.step-N.del`) before deleting it, so a kill mid-delete never
leaves a visible, half-deleted checkpoint; `repair` (run on every open) finishes such deletes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from clara import io

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def write_dir_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling folder, then swap it in for `target` (replacing an old one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
    except BaseException:  # a full disk, a failed save: give the space back at once
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)
    return target


def repair(adapters: Path) -> None:
    """Undo a swap cut short by a kill: `.X.old` without `X` goes back; stray temp folders and
    folders a prune had renamed for deletion go."""
    if not adapters.is_dir():
        return
    for p in adapters.iterdir():
        if p.name.startswith(".") and p.name.endswith(".old"):
            target = adapters / p.name[1:-4]
            if not target.exists():
                p.rename(target)
            else:
                shutil.rmtree(p)
        elif p.name.startswith(".") and p.name.endswith((".tmp", ".del")):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def save_optimizer(path: Path, optimizer) -> None:
    mx.save_safetensors(str(path), dict(tree_flatten(optimizer.state)))


def load_optimizer(path: Path, optimizer) -> None:
    optimizer.state = tree_unflatten(list(mx.load(str(path)).items()))


def point_last(adapters: Path, name: str) -> None:
    link = adapters / "last"
    tmp = adapters / ".last.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(name, tmp)
    os.replace(tmp, link)


def latest(adapters: Path) -> Path | None:
    """The newest complete checkpoint: where `last` points, if it holds a trainer state."""
    repair(adapters)
    link = adapters / "last"
    if link.exists() and (link / STATE_FILE).is_file():
        return link.resolve()
    steps = sorted(p for p in adapters.glob("step-*") if (p / STATE_FILE).is_file())
    return steps[-1] if steps else None


def prune(adapters: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` step folders (never the one `last` points to)."""
    current = (adapters / "last").resolve() if (adapters / "last").exists() else None
    steps = sorted(p for p in adapters.glob("step-*") if p.is_dir())
    removed = []
    for p in steps[:-keep] if keep > 0 else []:
        if current is not None and p.resolve() == current:
            continue
        gone = p.with_name(f".{p.name}.del")
        if gone.exists():  # left by an earlier kill
            shutil.rmtree(gone)
        p.rename(gone)  # out of sight first: a kill from here on leaves no visible step-N
        shutil.rmtree(gone)
        removed.append(p.name)
    return removed


def read_state(folder: Path) -> dict:
    return io.read_json(folder / STATE_FILE)
