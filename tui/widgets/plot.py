"""Line plots with axes (textual-plotext): step on x, one or more series on one shared y scale,
linear or log, downsampled so a long run draws as fast as a short one."""

from __future__ import annotations

import math
from typing import Sequence

from textual_plotext import PlotextPlot

MAX_POINTS = 300  # a plot is at most ~200 cells wide: more points only cost render time


def downsample(xs: Sequence[float], ys: Sequence[float], n: int = MAX_POINTS
               ) -> tuple[list[float], list[float]]:
    """At most `n` points: the mean of each of `n` equal buckets, the last point kept as it is."""
    if len(xs) <= n:
        return list(xs), list(ys)
    out_x, out_y = [], []
    size = len(xs) / n
    for i in range(n):
        a, b = int(i * size), max(int((i + 1) * size), int(i * size) + 1)
        out_x.append(sum(xs[a:b]) / (b - a))
        out_y.append(sum(ys[a:b]) / (b - a))
    out_x[-1], out_y[-1] = xs[-1], ys[-1]
    return out_x, out_y


class MetricPlot(PlotextPlot):
    """`set_series({label: (steps, values)})` redraws; `log` switches the y axis to log10."""

    DEFAULT_CSS = """
    MetricPlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str = "", ylabel: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.plot_title = title
        self.ylabel = ylabel
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.log_scale = False

    def set_series(self, series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> None:
        self.series = {}
        for label, (xs, ys) in series.items():
            pairs = [(float(x), float(y)) for x, y in zip(xs, ys)
                     if y is not None and not math.isnan(float(y))]
            self.series[label] = ([p[0] for p in pairs], [p[1] for p in pairs])
        self._draw()

    def set_log(self, log: bool) -> None:
        self.log_scale = log
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(self.plot_title + ("  (log y)" if self.log_scale else ""))
        plt.xlabel("step")
        if self.ylabel:
            plt.ylabel(("log10 " if self.log_scale else "") + self.ylabel)
        drawn = False
        for label, (xs, ys) in self.series.items():
            if self.log_scale:
                keep = [(x, y) for x, y in zip(xs, ys) if y > 0]
                xs, ys = [k[0] for k in keep], [math.log10(k[1]) for k in keep]
            if not xs:
                continue
            xs, ys = downsample(xs, ys)
            # one point is a marker, not a line across the whole width
            plt.plot(xs, ys, label=label, marker="braille" if len(xs) > 1 else "dot")
            drawn = True
        if not drawn:
            plt.title(self.plot_title + "  (no points yet)")
        self.refresh()
