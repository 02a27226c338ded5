"""Named settings for training forms and scripts, as TOML files beside this module (packaged
with clara). A preset holds settings of a run config (`clara.train.config.merge_config` reads
the same files: `clara train ... --config $(python -c 'import clara.presets as p;
print(p.path("clara-cpu-tiny"))')`)."""

from __future__ import annotations

from pathlib import Path

from clara import io
from clara.errors import UserError

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def path(name: str) -> Path:
    file = HERE / f"{name}.toml"
    if not file.is_file():
        raise UserError(f"no preset {name!r} (presets: {', '.join(names())})")
    return file


def load(name: str) -> dict:
    """The settings of a preset (a [train] table, or the top level)."""
    data = io.read_toml(path(name))
    return dict(data.get("train", data))
