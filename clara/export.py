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


def require_wandb():
    """The `wandb` module, or a one-line error saying how to get it."""
    try:
        import wandb
    except ImportError:
        raise UserError("W&B export needs wandb, which is not installed: "
                        "pip install 'clara[export]' (or pip install wandb)") from None
    return wandb


def wandb_mode() -> str:
    """WANDB_MODE when set; else online when an API key is known (WANDB_API_KEY or a `wandb
    login` entry in ~/.netrc), offline otherwise: never a login prompt."""
    import netrc
    import os
    from urllib.parse import urlparse

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return "online" if netrc.netrc().authenticators(host or "") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def export_wandb(run, project: str = "clara") -> dict:
    """Log the run's scalars to Weights & Biases as one W&B run named after it: online when the
    user has logged in, else offline under RUN/wandb (upload later with `wandb sync`). Returns
    {"name", "mode", "folder"}."""
    wandb = require_wandb()
    points = scalars(run)
    if not points:
        raise UserError(f"run {run.id} has no metrics yet")
    mode = wandb_mode()
    try:
        wb = wandb.init(project=project, name=run.id, config=run.config().get("config", {}),
                        dir=str(run.path), mode=mode, reinit=True)
    except Exception as e:  # noqa: BLE001 - no network, a bad key: one line, not a traceback
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"W&B export of run {run.id} failed ({mode}): "
                        f"{type(e).__name__}: {first}") from None
    try:
        by_step: dict[int, dict] = {}
        for step, tag, value in points:
            by_step.setdefault(step, {})[tag] = value
        for step in sorted(by_step):
            wb.log(by_step[step], step=step)
        folder = str(Path(wb.dir).parent) if getattr(wb, "dir", None) else str(run.path)
    finally:
        wb.finish()
    return {"name": run.id, "mode": mode, "folder": folder}
