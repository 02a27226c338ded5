"""Line plots with axes (textual-plotext): step on x, one or more series on one shared y scale,
linear or log, downsampled so a long run draws as fast as a short one."""

from __future__ import annotations

import math
from typing import Sequence

from rich.text import Text
from textual import work
from textual.strip import Strip
from textual.visual import Visual, visualize
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from tui.widgets.worker_errors import RoutesWorkerErrors

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


class MetricPlot(RoutesWorkerErrors, PlotextPlot):
    """`set_series({label: (steps, values)})` redraws; `log` switches the y axis to log10.

    The plot is built in a thread worker, down to the lines of cells the terminal gets: plotext
    (pure Python) and turning its text into styled lines took 30-40 ms of the event loop's CPU
    each time the Runs mode was shown with new points, the most of any mode switch, and again
    every half second while a run trained. The plot last built stays on screen until the new
    one is ready."""

    DEFAULT_CSS = """
    MetricPlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str = "", ylabel: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.plot_title = title
        self.ylabel = ylabel
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.log_scale = False
        self._version = 0  # raised by each change of the data or the scale
        self._strips: list[Strip] | None = None  # the plot as last built
        self._built_for: tuple | None = None  # (version, width, height, theme) of _strips
        self._building: tuple | None = None  # what the worker under way builds

    def set_series(self, series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> None:
        new = {}
        for label, (xs, ys) in series.items():
            pairs = [(float(x), float(y)) for x, y in zip(xs, ys)
                     if y is not None and not math.isnan(float(y))]
            new[label] = ([p[0] for p in pairs], [p[1] for p in pairs])
        self.series = new  # a new dict each time: the worker reads the one it was given
        self._draw()

    def set_log(self, log: bool) -> None:
        self.log_scale = log
        self._draw()

    def _draw(self) -> None:
        self._version += 1
        self._start_build()

    def _start_build(self) -> None:
        width, height = self.size
        wanted = (self._version, width, height, self._get_plotext_theme_name(self.app.theme))
        if width and height and wanted not in (self._built_for, self._building):
            self._building = wanted
            self._build(wanted, self.series, self.log_scale, self.visual_style)

    def render_line(self, y: int) -> Strip:
        self._start_build()  # a new size or theme
        width = self.size.width
        if self._strips is None or y >= len(self._strips):
            return Strip.blank(width, self.visual_style.rich_style)
        return self._strips[y].adjust_cell_length(width, self.visual_style.rich_style)

    @work(thread=True, exclusive=True, group="plot", exit_on_error=False)
    def _build(self, wanted: tuple, series: dict, log_scale: bool, style) -> None:
        _version, width, height, theme = wanted
        text = plot_text(series, self.plot_title, self.ylabel, log_scale, width, height, theme)
        strips = Visual.to_strips(self, visualize(self, text), width, height, style)
        self.app.call_from_thread(self._built, wanted, strips)

    def _built(self, wanted: tuple, strips: list[Strip]) -> None:
        if self._building == wanted:
            self._building = None
        if self._built_for is not None and wanted[0] < self._built_for[0]:
            return  # a build overtaken by a newer one
        self._strips, self._built_for = strips, wanted
        self.refresh()


def plot_text(series: dict, title: str, ylabel: str, log_scale: bool, width: int, height: int,
              theme: str) -> Text:
    """The plot of `series` ({label: (xs, ys)}) as text of `width` x `height` cells."""
    plt = Plot()
    plt.theme(theme)  # first: the series take their colours from it
    plt.title(title + ("  (log y)" if log_scale else ""))
    plt.xlabel("step")
    if ylabel:
        plt.ylabel(("log10 " if log_scale else "") + ylabel)
    drawn = False
    for label, (xs, ys) in series.items():
        if log_scale:
            keep = [(x, y) for x, y in zip(xs, ys) if y > 0]
            xs, ys = [k[0] for k in keep], [math.log10(k[1]) for k in keep]
        if not xs:
            continue
        xs, ys = downsample(xs, ys)
        # one point is a marker, not a line across the whole width
        plt.plot(xs, ys, label=label, marker="braille" if len(xs) > 1 else "dot")
        drawn = True
    if not drawn:
        plt.title(title + "  (no points yet)")
    # as PlotextPlot.render does: the size twice (textual-plotext issue 5)
    plt.plotsize(width, height)
    plt._set_size(width, height)
    return Text.from_ansi(plt.build())
