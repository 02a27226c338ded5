"""A Switch that says its state: the knob, then "on" or "off" (Textual's tells them apart by the
knob's position and colour alone: unreadable in monochrome, in a screenshot, to a new user)."""

from __future__ import annotations

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scrollbar import ScrollBarRender
from textual.widgets import Switch

KNOB = 4  # cells of Textual's slider


class StateSwitch(Switch):
    DEFAULT_CSS = """
    StateSwitch { padding: 0 1 0 2; }
    """

    @property
    def state_text(self) -> str:
        return " on " if self.value else " off"

    def render(self):
        return _Knob(self.get_component_rich_style("switch--slider"), self._slider_position,
                     self.state_text, self.rich_style)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return KNOB + 4

    def watch_value(self, value: bool) -> None:
        super().watch_value(value)
        self.refresh()  # the text changes at once; the knob slides after it


class _Knob:
    def __init__(self, style: Style, position: float, text: str, text_style: Style) -> None:
        self.style, self.position, self.text, self.text_style = style, position, text, text_style

    def __rich_console__(self, console, options):
        bar = ScrollBarRender.render_bar(
            size=KNOB, virtual_size=100, window_size=50, position=self.position * 50,
            thickness=1, vertical=False,
            back_color=self.style.bgcolor or Color.parse("#555555"),
            bar_color=self.style.color or Color.parse("bright_magenta"))
        yield from (s for s in bar.segments if s.text != "\n")
        yield Segment(self.text, self.text_style + Style(bold=self.text == " on "))
