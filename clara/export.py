"""Export a run's metrics to other trackers: TensorBoard event files (through tensorboardX, an
optional dependency that needs neither torch nor tensorflow) and Weights & Biases (when `wandb`
is installed). metrics.jsonl stays the record; these are copies for the tools people already use.
"""

from __future__ import annotations

from pathlib import Path

from clara.errors import UserError

SKIP = {"step", "time", "elapsed_s"}


def scalars(run) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every number in metrics.jsonl: `train/...` rows, `val/...` rows."""
    out = []
    for i, row in enumerate(run.metrics(), 1):
        step = int(row.get("step", i))
        group = "val" if any(k.startswith("val_") for k in row) else "train"
        for key, value in row.items():
            if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out.append((step, f"{group}/{key}", float(value)))
    return out


def export_tensorboard(run, out: str | Path | None = None) -> Path:
    """Write the run's scalars as TensorBoard event files under `out` (default RUN/tensorboard);
    an earlier export there is replaced. Returns the folder."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise UserError("TensorBoard export needs tensorboardX: pip install 'clara[export]'"
                         ) from None
    points = scalars(run)
    if not points:
        raise UserError(f"run {run.id} has no metrics yet")
    folder = Path(out) if out else run.path / "tensorboard"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(logdir=str(folder))
    try:
        for step, tag, value in points:
            writer.add_scalar(tag, value, step)
        writer.add_text("run", f"{run.id}: {run.config().get('kind', '')}", 0)
    finally:
        writer.close()
    return folder


def export_wandb(run, project: str = "clara") -> str:
    """Log the run's scalars to Weights & Biases as one W&B run named after it (offline unless
    the user has logged in). Returns the W&B run's name."""
    try:
        import wandb
    except ImportError:
        raise UserError("W&B export needs wandb: pip install wandb") from None
    points = scalars(run)
    if not points:
        raise UserError(f"run {run.id} has no metrics yet")
    wb = wandb.init(project=project, name=run.id, config=run.config().get("config", {}),
                    dir=str(run.path), reinit=True)
    try:
        by_step: dict[int, dict] = {}
        for step, tag, value in points:
            by_step.setdefault(step, {})[tag] = value
        for step in sorted(by_step):
            wb.log(by_step[step], step=step)
    finally:
        wb.finish()
    return run.id
