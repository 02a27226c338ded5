"""The footer of every mode screen: Textual's Footer, rebuilt only when its keys change."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class ClaraFooter(Footer):
    """Textual's Footer recomposes (unmounts and mounts a widget per key, each styled anew)
    whenever the screen's bindings are signalled: on every mode switch and focus change. That
    was most of a mode switch's time; the keys shown rarely change, so this one rebuilds only
    when they do."""

    _shown: tuple | None = None

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        shown = tuple((binding.key, binding.description, enabled, tooltip)
                      for _node, binding, enabled, tooltip in screen.active_bindings.values()
                      if binding.show or binding.action == "app.command_palette")
        if shown != self._shown:
            self._shown = shown
            self.call_after_refresh(self.recompose)
