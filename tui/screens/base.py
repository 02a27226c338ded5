"""What every mode screen shares: the header and footer, workspace changes, and worker errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import TabbedContent
from textual.worker import Worker, WorkerState

from tui.widgets.demo_banner import DemoBanner
from tui.widgets.footer import ClaraFooter
from tui.widgets.header import ClaraHeader, ModeBar

if TYPE_CHECKING:
    from tui.app import WorkbenchApp



def focus_at_end(field) -> None:
    """Focus a text field with its cursor after its text: what was typed there before stays
    (Tab into a field selects it all, and the next letter replaced it)."""
    field.select_on_focus = False
    field.focus(scroll_visible=False)
    field.action_end()
    field.call_after_refresh(setattr, field, "select_on_focus", True)

class ModeScreen(Screen):
    """A mode screen. Subclasses write `compose_body` and `reload` (called again whenever the app
    switches workspace). Their workers use `exit_on_error=False`: a failure is routed here to the
    app's one error handler, which opens a dialog and keeps the app running."""

    app: "WorkbenchApp"

    BINDINGS = [
        Binding("escape", "blur", "Leave field", show=False),
        Binding("ctrl+t", "next_tab", "Next tab", show=False),  # in the mode bar
        Binding("ctrl+y", "previous_tab", "Previous tab", show=False),
    ]

    # Textual's auto focus took the first focusable widget: the tab bar on Data, Train and
    # Eval, where the letters a user types at once (a path, a name) were lost. See _auto_focus.
    AUTO_FOCUS = ""

    def _auto_focus(self) -> None:
        """Focus the screen's first field, skipping tab bars and the hidden tabs' fields, when
        nothing has the focus (a screen that names its own AUTO_FOCUS keeps it)."""
        if self.focused is not None or type(self).AUTO_FOCUS:
            return
        from textual.widgets import Tabs

        tabs = self.main_tabs()
        pane = tabs.get_pane(tabs.active) if tabs is not None and tabs.active else None
        for widget in self.focus_chain:
            if isinstance(widget, Tabs):
                continue
            if pane is None or tabs not in widget.ancestors or pane in widget.ancestors:
                self.set_focus(widget, scroll_visible=False)
                return

    def action_blur(self) -> None:
        """Esc leaves the focused field (its focus ring goes away)."""
        self.set_focus(None)

    def compose(self) -> ComposeResult:
        yield ClaraHeader()
        self.mode_bar = ModeBar()  # kept: a DOM query for it walked every widget (2-7 ms)
        yield self.mode_bar
        yield from self.compose_body()
        yield DemoBanner()
        yield ClaraFooter(compact=True)

    # -- sub-tabs by key -------------------------------------------------------------------------
    def main_tabs(self) -> TabbedContent | None:
        """The screen's outermost tabs (Sources/Datasets/..., Progress/Config/..., ...)."""
        tabs = self.query(TabbedContent)
        return tabs.first() if tabs else None

    def _cycle_tab(self, step: int) -> None:
        tabs = self.main_tabs()
        if tabs is None:
            return
        panes = [p.id for p in tabs.query("TabPane") if p.parent.parent is tabs]
        panes = [p for p in panes if p] or []
        if not panes:
            return
        index = panes.index(tabs.active) if tabs.active in panes else 0
        self.show_tab(panes[(index + step) % len(panes)])

    def show_tab(self, pane_id: str) -> None:
        """Show the main tab `pane_id`, the focus on its first field."""
        tabs = self.main_tabs()
        if tabs is None:
            return
        tabs.active = pane_id
        self.set_focus(None)  # a field of the hidden tab would pull it back into view
        # then the new tab's first field: with no focus, Tab went to the tab bar first and
        # letters typed at once were lost
        self._focus_pane(tabs.get_pane(pane_id))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """A main tab shown by code (the palette, a key, a test) while a field of another tab
        has the focus: that field would pull its tab back into view (TabbedContent shows the
        tab of whatever is focused). The focus goes to the new tab's first field instead."""
        tabs = self.main_tabs()
        if event.tabbed_content is not tabs or self.focused is None:
            return
        pane = tabs.get_pane(tabs.active) if tabs.active else None
        if pane is None or tabs not in self.focused.ancestors or pane in self.focused.ancestors:
            return
        self.set_focus(None)
        self._focus_pane(pane)

    def _focus_pane(self, pane) -> None:
        """The focus to `pane`'s field a user types into first: the one of class `entry` where
        the pane names one (Data's Build: the name, not the kind list before it, where letters
        typed at once were lost), at once (focus() is queued ahead of the keys held behind the
        tab key, even when the app is too busy to paint before they are released); else its
        first field, once the pane is laid out (the focus chain holds only what is shown)."""
        entry = [w for w in pane.query(".entry") if w.focusable]
        if entry:
            focus_at_end(entry[0])
        else:
            self.call_after_refresh(self._focus_first_in, pane)

    def _focus_first_in(self, pane) -> None:
        if self.focused is not None:
            return  # the user has moved the focus meanwhile
        for widget in self.focus_chain:
            if pane in widget.ancestors:
                widget.focus(scroll_visible=False)
                return

    def action_next_tab(self) -> None:
        self._cycle_tab(1)

    def action_previous_tab(self) -> None:
        self._cycle_tab(-1)

    def tab_commands(self):
        """Palette entries `Tab: TITLE` for the main tabs."""
        tabs = self.main_tabs()
        if tabs is None:
            return
        for pane in tabs.query("TabPane"):
            if pane.parent.parent is tabs and pane.id:
                title = str(tabs.get_tab(pane.id).label)
                yield SystemCommand(f"{self.TITLE}: show tab {title}", "Switch the tab (ctrl+t)",
                                    lambda p=pane.id: self.show_tab(p))

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        import time

        self.watch(self.app, "workspace_name", self._workspace_changed, init=False)
        self._resumed_at = time.monotonic()  # reload() below reads it all: no second pass
        # its widgets were styled as they mounted: the first show need not restyle them (a
        # screen built in the background took 3.6 s to restyle on its first show, at load 10)
        self._styled_for = self.app.theme
        self.fit_width()
        self.reload()
        self.call_after_refresh(self.app.freeze_heap)

    _fitted_width: int | None = None

    def fit_width(self) -> None:
        """Give the screen the app's width class (`-narrow` under 116 columns: forms stack their
        help under the field). Textual sets it only on a Resize of the current screen: a screen
        built in the background, or hidden while the terminal was resized, kept the wrong one
        (at 100 columns Train's help column was squeezed to 14 characters)."""
        width = self.app.size.width
        if not width or width == self._fitted_width:
            return
        self._fitted_width = width
        points = sorted(self.app.HORIZONTAL_BREAKPOINTS or [])
        current = [name for at, name in points if width >= at][-1:]
        self.update_classes({name: name in current for _at, name in points}, animate=False)

    RESUME_REFRESH_S = 3.0  # a mode shown again re-reads the workspace at most this often
    _resumed_at = 0.0

    _styled_for: str | None = None

    def on_screen_resume(self, event) -> None:
        """Paint first, then refresh: the refresh's workers start after the new screen is on
        the terminal, and a mode switched to and fro quickly does not re-read everything.

        Textual restyles every widget of a screen each time it is shown again (in case the
        theme changed meanwhile): most of a mode switch's CPU time. This handler runs before
        Screen's own, so it turns that off unless the theme did change."""
        import time

        if self._styled_for == self.app.theme:
            event.refresh_styles = False
        self._styled_for = self.app.theme
        self.fit_width()
        if self._painted_whole:  # Screen's refresh after this is skipped (see refresh)
            self.call_next(setattr, self, "_painted_whole", False)
        elif self.mode_bar is not None:  # drawn in the background: another mode was current
            self.mode_bar.refresh()
        for timer in self._paused_timers:
            timer.resume()
        self._paused_timers = ()
        self.call_after_refresh(self._auto_focus)  # once laid out: the focus chain's order
        self.on_shown()
        now = time.monotonic()
        if now - self._resumed_at >= self.RESUME_REFRESH_S:
            self._resumed_at = now
            self.call_after_refresh(self.on_resume)

    mode_bar: ModeBar | None = None
    _paused_timers: tuple = ()  # paused by pause_timers, resumed when the screen is shown

    def on_screen_suspend(self) -> None:
        self.pause_timers()

    def pause_timers(self) -> None:
        """A hidden screen's repeating timers wait until it is shown again: animations (an idle
        progress bar's pulse, 30 a second; the Chat's loading indicator, 16), cursors blinking
        in the fields each hidden screen keeps focused, the demo banners. With a training
        running they woke the app 60 times a second for screens no one saw. Also called on a
        screen built in the background (WorkbenchApp._build_mode)."""
        paused = []
        for widget in self.walk_children(with_self=False):
            for timer in widget._timers:
                if timer._repeat is None and timer._active.is_set():
                    timer.pause()
                    paused.append(timer)
        self._paused_timers = (*self._paused_timers, *paused)
    _painted_whole = False  # set by the app's switch_mode, until this screen's resume is handled

    def refresh(self, *regions, repaint: bool = True, layout: bool = False,
                recompose: bool = False):
        """Screen's resume handler refreshes the whole screen: a render of every widget again
        (and of the screen's background, its cache cleared) for a frame that changes no cell,
        when the mode switch has just painted all of it (WorkbenchApp._prepare_whole_paint).
        Textual's switch_mode refreshes the screen it leaves too: a repaint of it all when it is
        next shown, which paints it whole anyway."""
        if self._painted_whole and not (regions or layout or recompose):
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def on_resume(self) -> None:
        """Called when the mode is shown again; refresh what may have changed meanwhile."""

    def on_shown(self) -> None:
        """Called each time the mode is shown, before it is painted: keep it cheap (draw what
        was left undrawn while the mode was hidden)."""

    _last_fill: dict | None = None

    def unchanged(self, what: str, data) -> bool:
        """True when `data` (what a worker read for the widget `what`) equals what was last
        shown there; else remembers it. A refresh that finds nothing new then costs nothing on
        the event loop: clearing and refilling a table or a Select restyles every row."""
        if self._last_fill is None:
            self._last_fill = {}
        if self._last_fill.get(what, self) == data:
            return True
        self._last_fill[what] = data
        return False

    def forget_shown(self, what: str | None = None) -> None:
        """The next fill of `what` (or of everything) is done even if its data did not change."""
        if self._last_fill:
            if what is None:
                self._last_fill.clear()
            else:
                self._last_fill.pop(what, None)

    def _workspace_changed(self, _name: str) -> None:
        self.reload()

    def reload(self) -> None:
        """Read the workspace again (in workers) and refill the widgets."""

    def action_reload(self) -> None:
        """The mode's reload key: read the workspace again."""
        self.reload()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.show_error(event.worker.error)


class LoadingScreen(ModeScreen):
    """What a mode shows for the moment its screen is still being built (in the background,
    see WorkbenchApp._build_mode): the header, the mode bar and one line, at once. The app
    swaps the built screen in when it is ready, and holds the keys typed meanwhile (other
    than mode keys) for it."""

    DEFAULT_CSS = """
    LoadingScreen .loading { padding: 1 2; color: $text-muted; }
    """

    def __init__(self, mode_name: str, title: str) -> None:
        super().__init__()
        self.mode_name = mode_name
        self.title = title

    def compose_body(self) -> ComposeResult:
        from textual.widgets import Static

        yield Static(f"Opening {self.title} …", classes="loading")
