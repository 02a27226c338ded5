"""Turn a training request into a run folder: plan it (clara.plan: settings, model, data and
starting adapter checked against the workspace), then create the run. The CLI, the app and the
demo all start runs here.
"""

from __future__ import annotations

from pathlib import Path

from clara.data.datasets import resolve
from clara.errors import UserError, ExitCode
from clara.runs import Run, create_run
from clara.workspace import Workspace


def resolve_data(ws: Workspace, ref: str) -> Path:
    """A training dataset: a workspace dataset name or a folder, holding train.jsonl."""
    path = resolve(ws, ref)
    if not path.is_dir():
        raise UserError(f"{path}: a dataset folder (with train.jsonl) is needed, not a file", exit_code=ExitCode.BAD_DATA)
    if not (path / "train.jsonl").is_file():
        raise UserError(f"{path}: no train.jsonl", exit_code=ExitCode.BAD_DATA)
    return path.resolve()


def lora_run(ws: Workspace, overrides: dict, config_file: str | Path | None = None,
             name: str | None = None) -> Run:
    """Create (not start) a LoRA/DoRA/full run from a config file plus overrides, once its plan
    (clara.plan.plan_lora: settings, model, adapter, data kind and rows) holds."""
    from clara.plan import plan_lora
    from clara.train.estimate import auto_fit

    overrides, fitted = auto_fit(ws, "lora", overrides, config_file)
    plan = plan_lora(ws, overrides, config_file)
    return create_run(ws, plan.kind, plan.config, resolved=plan.resolved, name=name,
                      extra={"auto_fit": fitted} if fitted else None)
