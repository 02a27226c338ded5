"""A SelectionList whose unticked rows show an empty box: `▐✓▌` ticked, `▐ ▌` not (Textual draws
the same `X` in both states and tells them apart by colour alone)."""

from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import SelectionList
from textual.widgets._toggle_button import ToggleButton

TICK = "✓"


class TickList(SelectionList):
    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        index = self.scroll_offset[1] + y
        if index >= self.option_count:
            return strip
        ticked = self.get_option_at_index(index).value in self._selected
        out, done = [], False
        for seg in strip:
            if not done and seg.text == ToggleButton.BUTTON_INNER:
                seg, done = Segment(TICK if ticked else " ", seg.style, seg.control), True
            out.append(seg)
        return Strip(out, strip.cell_length)

    def on_focus(self) -> None:
        """The first row is highlighted on arrival: with none, the first space ticked nothing
        and showed nothing (a user believed a row ticked)."""
        if self.highlighted is None and self.option_count:
            self.highlighted = 0
