"""Planning a run: the user's values become a validated plan and its preview, before any run
folder exists. The CLI (`clara train ...`), the app's Train screen and the demo plan here, and
`clara.train.launch` / `clara.method.launch` create runs from plans only, so a run that cannot
start never gets a folder.

A plan checks, in order: every setting (types, ranges, finite numbers: the configs' own
`validate`), the model (its layer count against num_layers / lora_layers), the starting
checkpoint (`clara.refs`; a continued CLaRa run takes the checkpoint's geometry and refuses
another), the dataset's kind (with the command that trains on it) and, with check_data, every
row as the trainer will read it (clara.data.formats), including what top_k asks of the rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clara import io, refs
from clara.errors import UserError, UsageError
from clara.workspace import Workspace

STAGES = ("stage1", "stage2", "stage3")


@dataclass
class Plan:
    kind: str = field(metadata={"help": "lora, clara-stage1..3 or clara-pipeline."})
    config: dict = field(metadata={"help": "The effective settings (run.toml's [config]; for a "
                                           "pipeline, the shared ones)."})
    resolved: dict = field(default_factory=dict, metadata={
        "help": "model, data and the starting checkpoint, resolved against the workspace."})
    extra: dict = field(default_factory=dict, metadata={"help": "from_run and the like."})
    stages: dict = field(default_factory=dict, metadata={
        "help": "Pipeline: per stage, its data, overrides and effective settings."})
    rows: dict = field(default_factory=dict, metadata={"help": "Rows per split, when checked."})
    refs: dict = field(default_factory=dict, metadata={
        "help": "The references the user gave (init_from, from_adapter), shown in the preview "
                "instead of the folders they resolve to."})

    def preview(self, first: tuple[str, ...] = ()) -> str:
        """The plan as TOML: `first` fields first, unset ones left out."""
        if self.kind == "clara-pipeline":
            shown = {"model": self.config.get("model"),
                     "data": {s: e["dataset"] for s, e in self.stages.items()},
                     "stages": {s: e["overrides"] for s, e in self.stages.items()},
                     "shared": self.config}
            return _toml(shown)
        config = {**self.config, **self.refs}
        order = list(first)
        keys = sorted(config, key=lambda k: order.index(k) if k in order else len(order))
        return _toml({k: config[k] for k in keys})


def _toml(data: dict) -> str:
    import tomli_w

    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items()
                if v is not None and v != {}}

    return tomli_w.dumps(strip(data))


def _merge(cls, config_file, values: dict):
    from clara.train.config import merge_config

    return merge_config(cls, config_file, values)


def _asked(config_file, values: dict) -> set[str]:
    """The settings the user gave (flags, form values or the config file), not defaults."""
    asked = {k for k, v in (values or {}).items() if v is not None}
    if config_file:
        data = io.read_toml(config_file)
        data = data.get("train", data) if isinstance(data.get("train"), dict) else data
        asked |= {k.replace("-", "_") for k in data}
    return asked


def _model_layers(ws, model: str) -> tuple[str, int | None]:
    """(source, number of blocks from its config.json when the model is a local folder)."""
    from clara.models.registry import model_source

    source = model_source(ws, model)
    cfg = Path(source).expanduser() / "config.json"
    if not cfg.is_file():
        return source, None
    try:
        doc = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return source, None
    doc = doc.get("text_config", doc) if isinstance(doc.get("text_config"), dict) else doc
    layers = doc.get("num_hidden_layers") or doc.get("n_layer") or doc.get("num_layers")
    return source, layers if isinstance(layers, int) else None


def _check_layers(name: str, value: int, layers: int | None, model: str) -> None:
    if value == 0 or value < -1:
        raise UsageError(f"{name}: {value} must be -1 (all blocks) or at least 1")
    if layers is not None and value > layers:
        raise UsageError(f"{name}: {value}, but model {model} has {layers} blocks")


def _data(ws, ref: str, trainer: str, check_data: bool) -> tuple[Path, dict]:
    from clara.data.validate import check_training_kind, require_training_data
    from clara.train.launch import resolve_data

    folder = resolve_data(ws, ref)
    if check_data:
        return folder, require_training_data(folder, trainer)
    check_training_kind(folder, trainer)
    return folder, {}


# ---------------------------------------------------------------------------- LoRA
def plan_lora(ws: Workspace | None, values: dict, config_file: str | Path | None = None,
              check_data: bool = True) -> Plan:
    """A LoRA / DoRA / full run: settings, model, starting adapter, data kind and rows."""
    from clara.train.config import TrainConfig

    cfg = _merge(TrainConfig, config_file, values)
    resolved: dict[str, Any] = {}
    given = {"from_adapter": cfg.from_adapter} if cfg.from_adapter else {}
    if ws is not None:
        resolved["model"], layers = _model_layers(ws, cfg.model)
        _check_layers("num_layers", cfg.num_layers, layers, cfg.model)
        folder, rows = _data(ws, cfg.data, cfg.mode, check_data)
        resolved["data"] = str(folder)
        if cfg.from_adapter:
            cfg.from_adapter = resolved["from_adapter"] = str(
                refs.resolve(ws, cfg.from_adapter, want=refs.LORA).path)
    else:
        _check_layers("num_layers", cfg.num_layers, None, cfg.model)
        rows = {}
    return Plan("lora", asdict(cfg), resolved, rows=rows, refs=given)


# ---------------------------------------------------------------------------- CLaRa stages
def _continue_from(ws, cfg, asked: set[str]) -> tuple[refs.Checkpoint, dict]:
    """The starting checkpoint, and its saved config; geometry the user asked must match it,
    and the run takes the checkpoint's (so run.toml records what the model is)."""
    from clara.method.config import check_geometry, geometry_fields

    found = refs.resolve(ws, cfg.init_from, want=refs.CLARA)
    saved = io.read_json(found.path / "clara_config.json").get("config") or {}
    check_geometry(saved, {k: getattr(cfg, k) for k in asked if hasattr(cfg, k)}, found.label)
    for name in geometry_fields():
        if name in saved and hasattr(cfg, name):
            setattr(cfg, name, saved[name])
    return found, saved


def plan_stage(ws: Workspace | None, stage: str, values: dict,
               config_file: str | Path | None = None, check_data: bool = True) -> Plan:
    """A CLaRa stage run: settings, starting checkpoint and its geometry, model, data kind and
    every row with this stage's top_k."""
    from clara.method.config import ClaraTrainConfig

    if stage not in STAGES:
        raise UserError(f"unknown CLaRa stage {stage!r} (one of {', '.join(STAGES)})")
    cfg = _merge(ClaraTrainConfig, config_file, values)
    if not cfg.model and not cfg.init_from:
        raise UserError("model: is required (or --from an earlier stage)")
    if not cfg.data:
        raise UserError("data: is required")
    resolved: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    given = {"init_from": cfg.init_from} if cfg.init_from else {}
    if cfg.init_from and ws is not None:
        found, saved = _continue_from(ws, cfg, _asked(config_file, values))
        cfg.init_from = resolved["init_from"] = str(found.path)
        if found.run:
            extra["from_run"] = found.run
        base = cfg.model or saved.get("base_model")
    else:
        base = cfg.model
    rows: dict = {}
    folder = None
    if ws is not None:
        folder, rows = _data(ws, cfg.data, stage, check_data)
        resolved["data"] = str(folder)
        if stage == "stage2" and cfg.top_k is None:  # as a pipeline: k of the rows
            from clara.method.pipeline import docs_per_row

            cfg.top_k = docs_per_row(folder)
    method = cfg.method_config(stage)  # the method's own checks, for this stage
    cfg.top_k = method.top_k  # run.toml records the effective value
    if ws is not None:
        if cfg.model:
            resolved["model"], layers = _model_layers(ws, cfg.model)
        else:  # the checkpoint's base; the worker checks it when it loads it
            try:
                layers = _model_layers(ws, base)[1] if base else None
            except UserError:
                layers = None
        _check_layers("lora_layers", cfg.lora_layers, layers, base)
        if check_data:
            check_stage_rows(folder, stage, method.top_k)
    return Plan(f"clara-{stage}", asdict(cfg), resolved, extra, rows=rows, refs=given)


def check_stage_rows(folder: str | Path, stage: str, top_k: int) -> None:
    """Every row of train.jsonl / valid.jsonl read as the stage's trainer reads it."""
    from clara.data.formats import read_stage_rows

    folder, state = Path(folder), {}
    for split in ("train", "valid"):
        f = folder / f"{split}.jsonl"
        if f.is_file():
            read_stage_rows(f, stage, top_k, state)


# ---------------------------------------------------------------------------- pipelines
def pipeline_datasets(ws: Workspace, prefix: str | None,
                      explicit: dict[str, str] | None = None) -> dict[str, str]:
    """The three stage datasets: given ones, else PREFIX-stage1..3 (as `clara data synth` names
    them)."""
    from clara.train.launch import resolve_data

    explicit = explicit or {}
    out = {}
    for s in STAGES:
        ref = explicit.get(s)
        if ref is None:
            if not prefix:
                raise UserError(f"data: give --data PREFIX or --{s} DATASET")
            ref = f"{prefix}-{s}"
            if not (ws.datasets_dir / ref).is_dir():
                raise UserError(f"data: no dataset {ref!r} in workspace {ws.name} (make the "
                                 f"three with: clara data synth {prefix}, or give --{s})")
        out[s] = str(resolve_data(ws, ref))
    return out


def plan_pipeline(ws: Workspace | None, values: dict, per_stage: dict | None = None,
                  prefix: str | None = None, explicit: dict[str, str] | None = None,
                  config_file: str | Path | None = None, check_data: bool = True) -> Plan:
    """A pipeline: shared settings, per-stage iters/epochs/lr (and stage 3's top_k), the three
    datasets; each stage's effective settings are checked as its run will have them."""
    from clara.method.config import ClaraTrainConfig
    from clara.method.pipeline import STAGE_OVERRIDES, effective_stage_config

    cfg = _merge(ClaraTrainConfig, config_file, values)
    if not cfg.model:
        raise UserError("model: is required")
    per_stage = per_stage or {}
    bad = [k for o in per_stage.values() for k in (o or {}) if k not in STAGE_OVERRIDES]
    if bad:
        raise UserError(f"pipeline: {bad[0]}: not a per-stage setting "
                         f"({', '.join(STAGE_OVERRIDES)})")
    config = asdict(cfg)
    for k in ("data", "init_from", "top_k"):
        config.pop(k, None)
    config = {k: v for k, v in config.items() if v is not None}
    overrides = {s: {k: v for k, v in (per_stage.get(s) or {}).items() if v is not None}
                 for s in STAGES}
    data = None if ws is None else pipeline_datasets(ws, prefix, explicit)
    if not prefix and len(explicit or {}) < len(STAGES):
        raise UserError("data: choose a dataset prefix (PREFIX-stage1..3)")
    names = {s: (explicit or {}).get(s) or f"{prefix}-{s}" for s in STAGES}
    data = data or names
    stages = {s: {"data": data[s], "dataset": names[s], "overrides": overrides[s]}
              for s in STAGES}
    doc = {"config": config, "stages": stages}
    resolved: dict[str, Any] = {}
    if ws is not None:
        resolved["model"], layers = _model_layers(ws, cfg.model)
        _check_layers("lora_layers", cfg.lora_layers, layers, cfg.model)
    for s in STAGES:
        effective = effective_stage_config(doc, s, None, check_rows=ws is not None)
        method = ClaraTrainConfig(**effective).method_config(s)
        stages[s]["config"] = effective
        if ws is not None:
            from clara.data.validate import check_training_kind, require_training_data

            if check_data:
                stages[s]["rows"] = require_training_data(data[s], s)
                check_stage_rows(data[s], s, method.top_k)
            else:
                check_training_kind(data[s], s)
    return Plan("clara-pipeline", config, resolved, stages=stages)


def split_pipeline_values(values: dict) -> tuple[dict, dict, str | None, dict]:
    """(shared settings, per-stage overrides, dataset prefix, explicit stage datasets) from
    flat values: stageN_iters / stageN_epochs / stageN_lr / stageN_data, top_k (stage 3's) and
    data (the prefix) — the pipeline's flags and form fields."""
    values = dict(values)
    per_stage = {s: {"iters": values.pop(f"{s}_iters", None),
                     "epochs": values.pop(f"{s}_epochs", None),
                     "learning_rate": values.pop(f"{s}_lr", None)} for s in STAGES}
    explicit = {s: values.pop(f"{s}_data", None) for s in STAGES}
    top_k = values.pop("top_k", None)
    if top_k is not None:
        per_stage["stage3"]["top_k"] = top_k
    prefix = values.pop("data", None)
    return values, per_stage, prefix, {s: v for s, v in explicit.items() if v}
