"""What a full frame writes to the terminal: only the cells that differ from those on screen.

Textual repaints the whole screen on a mode switch (and on any layout of the whole screen):
every row, each styled segment with its full colour codes, 9-30 thousand characters at 120x40.
The terminal (tmux here) has to read and parse all of it before the frame shows; on a busy
machine that took up to 0.5 s of a switch. Most cells are the same from one screen to the next
(the header, the mode bar, the footer, backgrounds and borders), so the app keeps what the
terminal shows, cell by cell, and a full frame writes only the runs of cells that changed, as
curses does; a partial update likewise (showing a screen built before is one of nearly the
whole screen).
"""

from __future__ import annotations

from itertools import groupby, repeat

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.control import Control
try:  # private to Textual (checked on 8.2.8): where they moved, frames are written whole
    from textual._compositor import ChopsUpdate, CompositorUpdate, LayoutUpdate
except ImportError:  # pragma: no cover
    ChopsUpdate = LayoutUpdate = None
    CompositorUpdate = object
from textual.strip import Strip

# unchanged cells between two changed ones written over rather than jumped (a cursor move
# costs about 8 characters)
GAP = 6


class _Cells(CompositorUpdate):
    """The changed cells of a full frame, already rendered to terminal sequences."""

    def __init__(self, text: str) -> None:
        self.text = text

    def render_segments(self, console) -> str:
        return self.text

    def __rich_console__(self, console, options):  # not used by a full-screen driver
        yield Control(self.text)


def _cells(strips) -> list | None:
    """One (character, style) per cell of a row's strips; None where a character is not one
    cell wide or a segment is a control (such a row is written whole)."""
    cells: list = []
    for strip in strips:
        for text, style, control in strip:
            if control or not text.isascii() and cell_len(text) != len(text):
                return None  # wide characters (CJK, emoji) take two cells
            cells.extend(zip(text, repeat(style)))
    return cells


class ShownCells:
    """The terminal's cells as the app wrote them (a row of None: unknown)."""

    def __init__(self) -> None:
        self.rows: list[list | None] = []
        self.size: tuple[int, int] | None = None

    def forget(self) -> None:
        """The terminal's content is unknown (a resize, a resume): the next frame is whole."""
        self.rows, self.size = [], None

    def update(self, renderable, console):
        """`renderable` as it should go to the terminal: the cells it would write that differ
        from those shown. A full frame (LayoutUpdate) or a partial one (ChopsUpdate: Textual
        makes one of nearly the whole screen when it shows a screen built before)."""
        if LayoutUpdate is None:
            return renderable
        if isinstance(renderable, LayoutUpdate):
            region = renderable.region
            if (region.x, region.y) != (0, 0):
                self.forget()
                return renderable
            if self.size != (region.width, region.height):
                self.size = (region.width, region.height)
                self.rows = [None] * region.height
            pieces = ((y, 0, line) for y, line in enumerate(renderable.strips))
        elif isinstance(renderable, ChopsUpdate) and self.size is not None:
            pieces = self._chops(renderable)
        else:
            return renderable
        color_system = console._color_system or ColorSystem.TRUECOLOR
        render = Strip.render_style
        move_to = Control.move_to
        out: list[str] = []
        rows = self.rows
        for y, x, strips in pieces:
            new = _cells(strips)
            row = rows[y] if 0 <= y < len(rows) else None
            if new is None or row is None or x + len(new) > len(row):
                out.append(move_to(x, y).segment.text)
                out.extend(strip.render(console) for strip in strips)
                if 0 <= y < len(rows):  # known again only when written whole
                    rows[y] = new if x == 0 and new is not None \
                        and len(new) == self.size[0] else None
                continue
            old = row[x:x + len(new)]
            if new == old:
                continue
            row[x:x + len(new)] = new
            i, n = 0, len(new)
            while i < n:
                if new[i] == old[i]:
                    i += 1
                    continue
                end = j = i + 1
                while j < n and j - end <= GAP:
                    if new[j] != old[j]:
                        end = j + 1
                    j += 1
                out.append(move_to(x + i, y).segment.text)
                for style, run in groupby(new[i:end], key=lambda cell: cell[1]):
                    text = "".join(ch for ch, _ in run)
                    out.append(text if style is None else render(style, text, color_system))
                i = end
        return _Cells("".join(out))

    @staticmethod
    def _chops(update: ChopsUpdate):
        """(y, x, [strip]) of each piece a partial update writes, as its render_segments
        writes them."""
        for y, x1, x2 in update.spans:
            for end, (x, strip) in zip(update.chop_ends[y], update.chops[y].items()):
                if strip is None or x > x2 or end <= x1:
                    continue
                if not (x2 > x >= x1 and end <= x2):
                    strip = strip.crop(0, min(end, x2) - x)
                yield y, x, [strip]
