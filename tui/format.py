"""Formatting shared by the screens: sizes, durations, losses, ages. Pure functions, no Textual."""

from __future__ import annotations

import math
from pathlib import Path

from clara.io import human_size

__all__ = ["human_size", "display_path", "duration", "loss", "number", "short", "middle"]


def duration(seconds: float | None) -> str:
    """12s, 3m04s, 2h05m: what people read in a table."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def loss(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def middle(text: str, width: int) -> str:
    """`text` cut in its middle to `width` characters: both ends tell such names apart (run ids
    share their start and date, and differ at their end)."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def display_path(path: str | Path) -> str:
    """Relative to the current folder when inside it, else with `~` for home, else absolute."""
    path = Path(path).absolute()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return prefix + str(rel) if str(rel) != "." else (prefix.rstrip("/") or ".")
    return str(path)
