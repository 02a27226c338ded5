"""Turn a training request into a run folder: resolve the model, data and starting adapter
against the workspace, then create the run. The CLI, the app and the demo all start runs here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from clara import refs
from clara.data.datasets import resolve
from clara.errors import ClaraError
from clara.runs import Run, create_run
from clara.train.config import TrainConfig, merge_config
from clara.workspace import Workspace


def resolve_data(ws: Workspace, ref: str) -> Path:
    """A training dataset: a workspace dataset name or a folder, holding train.jsonl."""
    path = resolve(ws, ref)
    if not path.is_dir():
        raise ClaraError(f"{path}: a dataset folder (with train.jsonl) is needed, not a file")
    if not (path / "train.jsonl").is_file():
        raise ClaraError(f"{path}: no train.jsonl")
    return path.resolve()


def lora_run(ws: Workspace, overrides: dict, config_file: str | Path | None = None,
             name: str | None = None) -> Run:
    """Create (not start) a LoRA/DoRA/full run from a config file plus overrides."""
    from clara.models.registry import model_source

    cfg = merge_config(TrainConfig, config_file, overrides)
    resolved = {"model": model_source(ws, cfg.model), "data": str(resolve_data(ws, cfg.data))}
    if cfg.from_adapter:
        cfg.from_adapter = resolved["from_adapter"] = str(
            refs.resolve(ws, cfg.from_adapter, want=refs.LORA).path)
    return create_run(ws, "lora", asdict(cfg), resolved=resolved, name=name)
