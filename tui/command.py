"""The `clara ...` command a form stands for, shown under the form so it can be copied and run."""

from __future__ import annotations

import shlex
from typing import Any


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def command_line(words: list[str], values: dict[str, Any], flags: dict[str, bool] | None = None,
                 short: dict[str, str] | None = None) -> str:
    """`words` then one flag per value the user changed from its default: `--name VALUE`, a list
    as the flag repeated, a bool as `--name`/`--no-name`, None (a default switched off) as
    `--no-name`; `flags` adds bare flags that are on (`--force`); `short` names flags the CLI
    spells differently (`{"model": "-m"}`)."""
    short = short or {}
    out = [shlex.quote(w) for w in words]
    for name, value in values.items():
        flag = short.get(name, _flag(name))
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + name.replace("_", "-"))
        elif value is None:
            out.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            for item in value:
                out += [flag, shlex.quote(str(item))]
        else:
            out += [flag, shlex.quote(str(value))]
    out += [_flag(name) for name, on in (flags or {}).items() if on]
    return " ".join(out)
