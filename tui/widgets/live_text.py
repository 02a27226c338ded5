"""Widgets that change on every keystroke (a text field; a form's command line, its preview, a
field's error) without laying the whole screen out each time: a layout re-arranges every widget
of the screen, and was most of a keystroke's CPU time."""

from __future__ import annotations

from textual.geometry import Size
from textual.widgets import Input, Static


class LiveText(Static):
    """`update` lays the screen out again only when the text's height changes (Static's own asks
    for a layout on every call)."""

    def update(self, content="", *, layout: bool | None = None) -> None:
        width = self.content_size.width
        if layout is not None or not width or (self.styles.width and self.styles.width.is_auto):
            super().update(content, layout=True if layout is None else layout)
            return
        size = self.parent.size if self.parent is not None else self.size
        before = self.get_content_height(size, self.app.size, width)
        super().update(content, layout=False)
        self.clear_cached_dimensions()
        if self.get_content_height(size, self.app.size, width) != before:
            self.refresh(layout=True)


class TextInput(Input):
    """Textual's Input, without a screen layout per keystroke: Input sets its scrollable width
    (a reactive that asks for a layout) to the text's width on every change. A field's size
    does not depend on its text (unless its width is `auto`), so the new width is stored
    without one; the field repaints and scrolls to its cursor as before."""

    def _watch_value(self, value: str) -> None:
        if not self.styles.auto_dimensions:
            self.set_reactive(Input.virtual_size, Size(self.content_width, 1))
        super()._watch_value(value)
