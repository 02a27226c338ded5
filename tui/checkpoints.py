"""Which checkpoints of a run a picker may offer: those that can be loaded now. A run still
queued or running is not offered (its best checkpoint may still change, a CLaRa stage is
incomplete), nor one without a checkpoint holding files (a run that failed before saving)."""

from __future__ import annotations

ACTIVE = ("queued", "running")


def usable_checkpoints(run) -> list[str]:
    """Checkpoint names of `run` worth offering, best first: best, last, then step-N."""
    if run.status().get("status") in ACTIVE or not run.adapters.is_dir():
        return []
    names = []
    for folder in run.adapters.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if any(folder.iterdir()):
            names.append(folder.name)
    steps = sorted((n for n in names if n.startswith("step-")),
                   key=lambda n: int(n[5:]) if n[5:].isdigit() else 0)
    return [n for n in ("best", "last") if n in names] + steps
