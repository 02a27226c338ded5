"""Start CLaRa training from a request: one stage run, or a pipeline of the three. The CLI, the
app and the demo all start CLaRa runs here (as `clara.train.launch` does for LoRA runs), from a
plan (clara.plan): nothing is written before every setting and row has been checked."""

from __future__ import annotations

from pathlib import Path

from clara.method.pipeline import Pipeline, create_pipeline
from clara.plan import plan_pipeline, plan_stage
from clara.runs import Run, check_world, create_run
from clara.workspace import Workspace


def stage_run(ws: Workspace, stage: str, overrides: dict, config_file: str | Path | None = None,
              name: str | None = None) -> Run:
    """Create (not start) a CLaRa stage run; `init_from` may be a run, pipeline or folder."""
    from clara.train.estimate import auto_fit

    overrides, fitted = auto_fit(ws, stage, overrides, config_file)
    plan = plan_stage(ws, stage, overrides, config_file)
    return create_run(ws, plan.kind, plan.config, resolved=plan.resolved, name=name,
                      extra={**(plan.extra or {}), **({"auto_fit": fitted} if fitted else {})})


def pipeline(ws: Workspace, overrides: dict, per_stage: dict, prefix: str | None = None,
             explicit: dict[str, str] | None = None, config_file: str | Path | None = None,
             name: str | None = None) -> Pipeline:
    """Create (not start) a pipeline: shared settings, per-stage iters/epochs/lr (and stage 3's
    top_k), and the three datasets."""
    plan = plan_pipeline(ws, overrides, per_stage, prefix, explicit, config_file)
    check_world(plan.config)  # several processes: hosts and ports checked before the folder
    return create_pipeline(ws, plan.config, plan.resolved["model"],
                           {s: e["data"] for s, e in plan.stages.items()},
                           {s: e["overrides"] for s, e in plan.stages.items()}, name)
