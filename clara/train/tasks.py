"""Run kinds: each kind names a factory that builds the TrainTask of a run.

A factory is `factory(run_config: dict, run_dir: Path) -> TrainTask`, where `run_config` is the
whole parsed `run.toml` (its `config` table holds the task's settings). The worker looks the run's
`kind` up here, so new tasks (the CLaRa stages) only need to call `register` in a module listed
in `MODULES` (or imported before the worker dispatches).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from clara.errors import UserError

Factory = Callable[[dict, Path], object]

_REGISTRY: dict[str, Factory] = {}

# Modules that register kinds when imported; extended by the tasks' authors.
MODULES = ["clara.train.lora", "clara.method.tasks", "clara.hrm.task"]


def register(kind: str, factory: Factory) -> Factory:
    """Make `kind` runnable by the worker; usable as `register("x", f)` or as a decorator."""
    _REGISTRY[kind] = factory
    return factory


def _load_modules() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency inside the module
                raise


def kinds() -> list[str]:
    _load_modules()
    return sorted(_REGISTRY)


def create(kind: str, run_config: dict, run_dir: Path):
    _load_modules()
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise UserError(f"run kind {kind!r} is not known (known: {', '.join(sorted(_REGISTRY))})")
    return factory(run_config, Path(run_dir))
