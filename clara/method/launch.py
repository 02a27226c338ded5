"""Start CLaRa training from a request: one stage run, or a pipeline of the three. The CLI, the
app and the demo all start CLaRa runs here (as `clara.train.launch` does for LoRA runs)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from clara.errors import ClaraError
from clara.method.pipeline import STAGES, Pipeline, create_pipeline, resolve_checkpoint
from clara.method.tasks import ClaraTrainConfig
from clara.runs import Run, check_world, create_run, find_run
from clara.train.config import merge_config
from clara.train.launch import resolve_data
from clara.workspace import Workspace


def stage_run(ws: Workspace, stage: str, overrides: dict, config_file: str | Path | None = None,
              name: str | None = None) -> Run:
    """Create (not start) a CLaRa stage run; `init_from` may be a run, pipeline or folder."""
    from clara.models.registry import model_source

    if stage not in STAGES:
        raise ClaraError(f"unknown CLaRa stage {stage!r} (one of {', '.join(STAGES)})")
    cfg = merge_config(ClaraTrainConfig, config_file, overrides)
    if not cfg.model and not cfg.init_from:
        raise ClaraError("model: is required (or --from an earlier stage)")
    if not cfg.data:
        raise ClaraError("data: is required")
    resolved = {"data": str(resolve_data(ws, cfg.data))}
    extra = {}
    if cfg.init_from:
        ref = cfg.init_from
        cfg.init_from = resolved["init_from"] = str(resolve_checkpoint(ws, ref))
        if not (Path(ref).expanduser() / "clara_config.json").is_file():
            try:
                extra["from_run"] = find_run(ws, ref).id
            except ClaraError:
                pass  # a pipeline id: its checkpoint is resolved, there is no single run
    if cfg.model:
        resolved["model"] = model_source(ws, cfg.model)
    return create_run(ws, f"clara-{stage}", asdict(cfg), resolved=resolved, name=name,
                      extra=extra)


def pipeline_datasets(ws: Workspace, prefix: str | None,
                      explicit: dict[str, str] | None = None) -> dict[str, str]:
    """The three stage datasets: given ones, else PREFIX-stage1..3 (as `clara data synth` names
    them)."""
    explicit = explicit or {}
    out = {}
    for s in STAGES:
        ref = explicit.get(s)
        if ref is None:
            if not prefix:
                raise ClaraError(f"data: give --data PREFIX or --{s} DATASET")
            ref = f"{prefix}-{s}"
            if not (ws.datasets_dir / ref).is_dir():
                raise ClaraError(f"data: no dataset {ref!r} in workspace {ws.name} (make the "
                                 f"three with: clara data synth {prefix}, or give --{s})")
        out[s] = str(resolve_data(ws, ref))
    return out


def pipeline(ws: Workspace, overrides: dict, per_stage: dict, prefix: str | None = None,
             explicit: dict[str, str] | None = None, config_file: str | Path | None = None,
             name: str | None = None) -> Pipeline:
    """Create (not start) a pipeline: shared settings, per-stage iters/epochs/lr (and stage 3's
    top_k), and the three datasets."""
    from clara.models.registry import model_source

    cfg = merge_config(ClaraTrainConfig, config_file, overrides)
    if not cfg.model:
        raise ClaraError("model: is required")
    datasets = pipeline_datasets(ws, prefix, explicit)
    config = asdict(cfg)
    check_world(config)  # several processes: hosts and ports checked before the folder
    for k in ("data", "init_from", "top_k"):
        config.pop(k, None)
    return create_pipeline(ws, config, model_source(ws, cfg.model), datasets, per_stage, name)
