"""A labelled sparkline of one metric with its last and best values beside it."""

from __future__ import annotations

import math
from typing import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline


class MetricSparkline(Horizontal):
    """`set_values([...])` redraws the curve and the `last`/`best` labels (best = min, for losses)."""

    DEFAULT_CSS = """
    MetricSparkline { height: 3; }
    MetricSparkline > .metric-name { width: 12; padding: 1 1 0 0; text-style: bold; }
    MetricSparkline > Sparkline { width: 1fr; height: 3; }
    MetricSparkline > .metric-values { width: 26; padding: 0 0 0 1; }
    """

    def __init__(self, name: str, lower_is_better: bool = True, fmt: str = "{:.4f}",
                 best_label: str = "best", **kwargs) -> None:
        super().__init__(**kwargs)
        self.best_label = best_label
        self.metric_name = name
        self.lower_is_better = lower_is_better
        self.fmt = fmt
        self.values: list[float] = []

    def compose(self) -> ComposeResult:
        yield Label(self.metric_name, classes="metric-name")
        yield Sparkline([], summary_function=max)
        yield Label(f"last -\n{self.best_label} -", classes="metric-values")

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    @property
    def best(self) -> float | None:
        if not self.values:
            return None
        return min(self.values) if self.lower_is_better else max(self.values)

    def set_values(self, values: Sequence[float | None]) -> None:
        self.values = [float(v) for v in values
                       if v is not None and not (isinstance(v, float) and math.isnan(v))]
        self.query_one(Sparkline).data = list(self.values)
        last = "-" if self.last is None else self.fmt.format(self.last)
        best = "-" if self.best is None else self.fmt.format(self.best)
        self.query_one(".metric-values", Label).update(f"last {last}\n{self.best_label} {best}")
