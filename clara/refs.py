"""Which checkpoint: the one grammar every command that takes a trained model reads (train
--from / --from-adapter, chat, eval, ask, compress, fuse) and the app's pickers offer.

    RUN[:best|last|step-N|N]   a run of the workspace (id, unique id prefix, or `last` = the
                               newest): its best checkpoint, else its last; or the one named
    PIPELINE[:stageN]          a CLaRa pipeline: the newest stage with a checkpoint, or stage N
    PATH                       a checkpoint folder (an mlx-lm adapter with adapter_config.json +
                               adapters.safetensors, or a CLaRa checkpoint with
                               clara_config.json), or a run folder (as RUN)

A run of kind `lora` holds mlx-lm adapters; a `clara-stage*` run holds CLaRa checkpoints.
Resolving only reads: it never repairs or writes a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clara.errors import UserError, ModelError, UsageError

LORA, CLARA = "lora", "clara"
ADAPTER_FILES = ("adapter_config.json", "adapters.safetensors")
CLARA_FILES = ("clara_config.json", "adapters.safetensors", "embeddings.safetensors")
STAGES = ("stage1", "stage2", "stage3")
# Run states whose checkpoints a picker offers: a failed run, or one still training, is left out.
SETTLED = ("completed", "stopped", "interrupted")
GRAMMAR = "RUN[:best|last|step-N] | PIPELINE[:stageN] | PATH"


@dataclass(frozen=True)
class Checkpoint:
    kind: str = field(metadata={"help": "'lora' (an mlx-lm adapter) or 'clara' (a CLaRa "
                                        "checkpoint)."})
    path: Path = field(metadata={"help": "The adapter or checkpoint folder."})
    base: str | None = field(default=None, metadata={"help": "The base it was trained on."})
    label: str = field(default="", metadata={"help": "How to name it in logs and tables."})
    run: str | None = field(default=None, metadata={"help": "The run it comes from, if any."})

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "base": self.base,
                "label": self.label}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None


def kind_of(folder: Path) -> str | None:
    """'clara' or 'lora' for a complete checkpoint folder, else None."""
    if all((folder / n).is_file() for n in CLARA_FILES):
        return CLARA
    if all((folder / n).is_file() for n in ADAPTER_FILES) \
            and not (folder / "clara_config.json").exists():
        return LORA
    return None


def checkpoint_at(path: str | Path, label: str | None = None, base: str | None = None,
                  run: str | None = None) -> Checkpoint:
    """The checkpoint in a folder that must be an mlx-lm adapter or a CLaRa checkpoint."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelError(f"{path}: adapter folder does not exist")
    label = label or str(path)
    if (path / "clara_config.json").is_file():
        meta = _read_json(path / "clara_config.json")
        missing = [n for n in CLARA_FILES if not (path / n).is_file()]
        if missing:
            raise ModelError(f"{path}: no {missing[0]}: an incomplete CLaRa checkpoint")
        return Checkpoint(CLARA, path.resolve(),
                          base or (meta.get("config") or {}).get("base_model") or None, label, run)
    missing = [n for n in ADAPTER_FILES if not (path / n).is_file()]
    if missing:
        raise ModelError(f"{path}: no {missing[0]}: not an mlx-lm adapter folder nor a CLaRa "
                         "checkpoint")
    cfg = _read_json(path / "adapter_config.json")
    return Checkpoint(LORA, path.resolve(), base or cfg.get("model") or None, label, run)


def _step_number(which: str) -> int | None:
    digits = which[5:] if which.startswith("step-") else which
    return int(digits) if digits.isdigit() else None


def run_checkpoint(run, which: str | None = None) -> Checkpoint:
    """A run's checkpoint: `which` = best | last | step-N | N, default best, else last."""
    adapters = run.adapters
    present = sorted(p.name for p in adapters.iterdir() if not p.name.startswith(".")
                     and kind_of(p)) if adapters.is_dir() else []
    if which is None:
        name = next((n for n in ("best", "last") if n in present), None)
        if name is None:
            raise ModelError(f"run {run.id} has no checkpoint yet (status: "
                             f"{run.raw_status().get('status')})")
    else:
        step = None if which in ("best", "last") else _step_number(which)
        if which not in ("best", "last") and step is None:
            raise UsageError(f"{run.id}:{which}: not a checkpoint name (best, last, step-N or "
                             f"N; the grammar is {GRAMMAR})")
        name = which if step is None else next(
            (n for n in present if n.startswith("step-") and _step_number(n) == step), "")
        if name not in present:
            if step is not None:
                from clara.train.checkpoint import step_name

                which = step_name(step)
            raise ModelError(f"run {run.id} has no checkpoint {which!r} (it has: "
                             f"{', '.join(present) or 'none'})")
    doc = run.config()
    base = (doc.get("resolved") or {}).get("model") or (doc.get("config") or {}).get("model")
    return checkpoint_at(adapters / name, f"{run.id}:{name}", base, run.id)


def _pipeline_checkpoint(pipe, which: str | None) -> Checkpoint:
    if which is not None:
        stage = f"stage{which}" if which.isdigit() else which
        if stage not in STAGES:
            raise UsageError(f"{pipe.id}:{which}: a pipeline's checkpoints are stage1, stage2 "
                             f"or stage3 (the grammar is {GRAMMAR})")
        run = pipe.run_of(stage)
        if run is None or not run.exists:
            raise ModelError(f"pipeline {pipe.id}: {stage} has not started")
        return run_checkpoint(run)
    for stage in reversed(STAGES):
        run = pipe.run_of(stage)
        if run is not None and run.exists:
            try:
                return run_checkpoint(run)
            except UserError:
                continue
    raise ModelError(f"pipeline {pipe.id}: no stage has a checkpoint yet")


def resolve(ws, ref: str, want: str | None = None) -> Checkpoint:
    """The checkpoint a reference names (see the module docstring); `want` ('lora' or 'clara')
    refuses the other kind with a one-line reason."""
    if not ref or not str(ref).strip():
        raise UsageError(f"empty checkpoint reference (expected {GRAMMAR})")
    found = _resolve(ws, str(ref))
    if want is not None and found.kind != want:
        what = {LORA: "an mlx-lm (LoRA) adapter", CLARA: "a CLaRa checkpoint"}
        raise ModelError(f"{ref}: is {what[found.kind]}; {what[want]} is needed here")
    return found


def _resolve(ws, ref: str) -> Checkpoint:
    from clara.runs import Run, find_run
    from clara.workspace import is_valid_name

    head, _, which = ref.partition(":")
    which = which or None
    # a run or pipeline of the workspace first (its name checked, a link out of it refused),
    # then a folder
    folder = ws.child("runs", head) if ws is not None and is_valid_name(head) else None
    if folder is not None and (folder / "run.toml").is_file():
        return run_checkpoint(Run(folder), which)
    if folder is not None and (folder / "pipeline.toml").is_file():
        from clara.method.pipeline import find_pipeline

        return _pipeline_checkpoint(find_pipeline(ws, head), which)
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "run.toml").is_file():
            return run_checkpoint(Run(path))
        return checkpoint_at(path, ref)
    if ws is None or "/" in head or path.exists():
        raise ModelError(f"{ref}: adapter folder does not exist (nor a run of that name; expected "
                         f"{GRAMMAR})")
    from clara.method.pipeline import find_pipeline

    try:
        run = find_run(ws, head)
    except UserError as run_error:
        try:
            pipe = find_pipeline(ws, head)
        except UserError:
            raise run_error from None
        return _pipeline_checkpoint(pipe, which)
    return run_checkpoint(run, which)


def checkpoint_names(run) -> list[str]:
    """Names of `run`'s loadable checkpoints worth offering, best first (best, last, step-N); none
    for a run still training or one that failed (see SETTLED)."""
    try:
        if run.status().get("status") not in SETTLED or not run.adapters.is_dir():
            return []
        names = [p.name for p in run.adapters.iterdir()
                 if not p.name.startswith(".") and kind_of(p)]
    except (UserError, OSError, ValueError):
        return []
    steps = sorted((n for n in names if n.startswith("step-")), key=lambda n: _step_number(n) or 0)
    return [n for n in ("best", "last") if n in names] + steps


def usable(ws, kind: str | None = None, run_kinds: tuple[str, ...] | None = None) -> list[str]:
    """References to offer in a picker, newest run first: runs that ended without failing
    (completed, stopped, interrupted) and hold a loadable checkpoint of `kind`; `run_kinds`
    keeps runs of those kinds only (e.g. ("clara-stage1",))."""
    from clara.runs import list_runs

    out = []
    for run in reversed(list_runs(ws)):
        try:
            doc = run.config()
            if run_kinds is not None and doc.get("kind") not in run_kinds:
                continue
            if run.status().get("status") not in SETTLED:
                continue
            found = run_checkpoint(run)
        except (UserError, OSError, ValueError):
            continue
        if kind is None or found.kind == kind:
            out.append(run.id)
    return out
