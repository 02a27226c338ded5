"""The clara workbench: a Textual app whose modes are the workspaces, data, training, runs, chat
and evaluation.

Every action calls the `clara` library (the same functions the commands call) from a thread
worker, so the interface never blocks. Failures of any kind reach one handler, `show_error`,
which opens a dialog and keeps the app running.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
import os
import sys
import time
import traceback
import weakref
from functools import partial
from pathlib import Path
from typing import Iterable

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import WorkerFailed

from clara.errors import UserError
from clara.workspace import Workspace, list_workspaces
from tui.frames import ShownCells
from tui.modes import MODES as MODE_LIST
from tui.screens.base import LoadingScreen, ModeScreen
from tui.widgets.footer import ClaraFooter
from tui.recent import load_recent, remember
from tui.screens.help import HelpScreen
from tui.widgets.dialogs import ErrorDialog

log = logging.getLogger(__name__)

MODE_TITLES = {m.name: m.title for m in MODE_LIST}
# the priority of the trainings the app starts, unless $CLARA_WORKER_PRIORITY says otherwise:
# SCHED_IDLE (nice 10 where there is none); see clara.runs.worker_priority
APP_WORKER_PRIORITY = "idle"


class WorkspaceCommands(Provider):
    """Command palette: `open workspace NAME` for every workspace under the root."""

    def _commands(self) -> list[tuple[str, str, str]]:
        app: WorkbenchApp = self.app  # type: ignore[assignment]
        recent = load_recent(app.root)
        names = [w.name for w in list_workspaces(app.root)]
        names.sort(key=lambda n: (recent.index(n) if n in recent else len(recent), n))
        return [(f"Open workspace {n}", n, "recent" if n in recent else "") for n in names]

    async def discover(self) -> Hits:
        for text, name, help_text in self._commands():
            yield DiscoveryHit(text, partial(self.app.open_workspace, name), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, name, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self.app.open_workspace, name),
                          help=help_text)


def _types_into(widget, event: events.Event) -> bool:
    """Whether `event` is a character that the text field `widget` takes as text: such a key
    neither moves the focus nor runs a command (a field that refuses some characters, such as
    a number field, lets them bubble to the screen's keys, so it is left out)."""
    from textual.widgets import Input, TextArea

    if not isinstance(event, events.Key) or not event.is_printable:
        return False
    if isinstance(widget, TextArea):
        return not widget.read_only
    return (isinstance(widget, Input) and widget.type == "text" and not widget.restrict
            and not widget.max_length)


def _styled(screen: Screen) -> Screen:
    """A new mode screen, marked as styled with the app's current CSS. Textual restyles the whole
    app (reparsing every stylesheet) when it shows a screen not so marked, twice on a mode's
    first visit; the screen's widgets are styled as they mount anyway, and all the CSS was read
    at the start. A theme change still restyles every screen (it raises the app's count)."""
    from textual.app import active_app

    screen._css_update_count = active_app.get()._css_update_count
    return screen


def _mode_screen(mode) -> Screen:
    """The screen of `mode` when it is first shown: the one built in the background if it is
    ready (see WorkbenchApp._prebuild); else, while the app builds screens in the background, a
    placeholder shown at once, replaced when the screen is built; else a new one."""
    from textual.app import active_app

    app = active_app.get()
    built = getattr(app, "_prebuilt", {}).get(mode.name)
    if built is not None and app._screen_ready(built):
        return app._prebuilt.pop(mode.name)
    if getattr(app, "_prebuild_on", False) and app.current_mode != "_default":  # not the first
        placeholder = _styled(LoadingScreen(mode.name, mode.title))
        app.run_worker(app._swap_in(mode.name, placeholder), group=f"build-{mode.name}",
                       exit_on_error=False)
        return placeholder
    if built is not None:  # still composing: shown as it is
        return app._prebuilt.pop(mode.name)
    return _styled(mode.screen_class()())


class WorkbenchApp(App):
    """The workbench over the workspaces under `root`."""

    # Every screen's stylesheet is read at the start: Textual reparses all the CSS and restyles
    # the app each time a screen brings a file it has not seen (seconds on a busy machine).
    CSS_PATH = ["app.tcss", *sorted(f"screens/{p.name}" for p in
                                    (Path(__file__).parent / "screens").glob("*.tcss"))]
    TITLE = "clara"
    # screens are imported when their mode is first shown (the app starts faster)
    MODES = {m.name: (lambda m=m: _mode_screen(m)) for m in MODE_LIST}
    # HRM's puzzle mode (F10), kept off the mode bar
    MODES["hrm"] = lambda: _styled(
        __import__("tui.screens.hrm", fromlist=["HRMScreen"]).HRMScreen())
    COMMANDS = App.COMMANDS | {WorkspaceCommands}
    # Mode keys are F-keys and chords only, never letters: a letter belongs to the text field
    # that has the focus. The mode bar under the header shows them; the footer keeps the
    # screen's own keys.
    BINDINGS = [
        Binding("f1", "help", "Help"),
        *[Binding(m.key, f"switch_mode('{m.name}')", m.title, show=False, priority=True)
          for m in MODE_LIST],
        Binding("f10", "switch_mode('hrm')", "HRM", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]
    _QUIT_KEYS = frozenset(b.key for b in BINDINGS if b.action == "quit")
    _MODE_KEYS = frozenset(b.key for b in BINDINGS if b.action.startswith("switch_mode"))
    # narrow terminals (100 columns) stack a form's help under its field
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (116, "-wide")]

    workspace_name: reactive[str] = reactive("")
    platform_info: reactive[dict | None] = reactive(None)

    def __init__(self, root: str | Path, workspace: str | None = None, *,
                 start_mode: str = "workspaces", platform_info: dict | None = None,
                 prebuild: bool | None = None) -> None:
        """`platform_info` replaces `clara.platform.describe()` (tests pin it for snapshots);
        `prebuild` builds every mode's screen in the background after the first one is shown
        (default: unless the platform is pinned, as tests do)."""
        super().__init__()
        self._prebuild_on = platform_info is None if prebuild is None else prebuild
        self._prebuilt: dict[str, Screen] = {}  # built in the background, not yet shown
        self._laid_out: weakref.WeakSet = weakref.WeakSet()  # of those, the ones laid out
        self.root = Path(root)
        self.start_mode = start_mode
        self._fixed_platform = platform_info
        self.errors: list[str] = []  # every message shown by show_error, for tests and logs
        self.follow_run: str | None = None  # a run the Runs screen should select when it appears
        self.set_reactive(WorkbenchApp.workspace_name, workspace or "")
        self._keys: deque = deque()  # typed ahead, not yet handed on (see on_event)
        self._key_turn = 0  # which handed-on key the app waits for; 0: none
        self._typing_into = None  # the text field the key in flight types into, if it does
        self._shown_cells = ShownCells()  # what the terminal shows (see _display)

    # -- type-ahead ---------------------------------------------------------------------------
    async def on_event(self, event: events.Event) -> None:
        """Keys are handed on one at a time, each once the previous one's effects have landed.
        Textual hands a key to whatever has the focus when the key is read: keys typed fast
        (or queued while the app was busy) after one that moves the focus (ctrl+n, a mode key
        that builds its screen) reached the old focus, or nothing, and were lost. Characters
        typed into a text field go on at once, behind one another: waiting a frame for each
        made fast typing lag behind (a layout and a paint per key instead of one a burst)."""
        if isinstance(event, events.Resize):
            self._shown_cells.forget()  # the terminal cut or moved what it showed
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded:
            self._last_key_at = time.monotonic()
            if isinstance(event, events.Key) and event.key in self._QUIT_KEYS:
                await super().on_event(event)  # quit at once, not after the keys before it
                return
            if not self._keys and self._typing_into is not None \
                    and self._typing_into is self.focused and _types_into(self.focused, event):
                # the key in flight is a character into this field: it cannot have moved the
                # focus, so this one need not wait a frame for its effects
                await super().on_event(event)
                return
            self._keys.append(event)
            if not self._key_turn or (self._key_turn > 0 and len(self._keys) == 1
                                      and getattr(event, "key", None) in self._MODE_KEYS):
                # a mode key with none queued ahead goes on at once, even while the key before
                # it settles (the screen's next refresh: one to three frames after a switch);
                # what is typed after it waits for its own effects (the new screen's focus)
                await self._next_key()
            return
        await super().on_event(event)

    KEY_SETTLE_S = 1.0  # a key whose effects never report back releases the queue after this
    # Worker groups whose work the next key may act on: a run renamed or archived in a thread,
    # then t (tags) typed at once acted on the old name. Keys wait for them too (at most
    # KEY_SETTLE_S).
    KEYS_WAIT_FOR = frozenset({"run-control"})

    def _keys_held(self) -> bool:
        return any(w.group in self.KEYS_WAIT_FOR and not w.is_finished for w in self.workers)

    async def _next_key(self, turn: int | None = None, force: bool = False) -> None:
        if turn is not None and turn != self._key_turn:
            return  # a late report of a key already given up on
        if self._keys and not force and self._keys_held():
            if not self._key_turn:  # no key in flight: hold the queue, for a while at most
                self._key_turn = turn = -2
                self.set_timer(self.KEY_SETTLE_S, lambda: self._next_key(-2, force=True))
            self.set_timer(0.02, lambda: self._next_key(turn))
            return
        self._key_turn = 0
        self._typing_into = None
        if not self._keys:
            return
        screen = self.screen
        if not screen.is_mounted or (isinstance(screen, LoadingScreen)
                                     and getattr(self._keys[0], "key", None) not in self._MODE_KEYS):
            # a screen still being built: its fields cannot take keys (mode keys go on)
            self._key_turn = -1
            self.set_timer(0.02, lambda: self._next_key(-1))
            return
        event = self._keys.popleft()
        target = self.focused or screen
        self._key_turn = turn = id(event)
        await super().on_event(event)
        if _types_into(target, event):
            self._typing_into = target
            while self._keys and _types_into(target, self._keys[0]):  # a burst into the field
                await super().on_event(self._keys.popleft())
        # the key bubbles from the target up to the screen (a binding there acts on it), the
        # app runs what that queued (a focus change), the screen lays out what changed
        self._after_bubbling(target, lambda: self.screen.call_after_refresh(
            self.call_later, self._next_key, turn))
        self.set_timer(self.KEY_SETTLE_S, lambda: self._next_key(turn, force=True))

    def _after_bubbling(self, node, done, rounds: int = 2) -> None:
        """Call `done` once a message just given to `node` has bubbled up to the app. This
        callback runs twice on each node, queued after the message and then after what handling
        it queued there (an Input's Submitted, which a dialog answers by closing), then moves
        on to the node's parent."""
        if rounds == 0:
            node, rounds = node.parent, 2
        if node is None or node is self:
            self.call_later(done)
        elif not node.call_later(self._after_bubbling, node, done, rounds - 1):
            self.call_later(done)  # a node closing (a dialog the key dismissed): no further

    # -- workspace --------------------------------------------------------------------------
    @property
    def workspace(self) -> Workspace | None:
        """The open workspace, or None when none is open or it does not exist (yet)."""
        if not self.workspace_name:
            return None
        ws = Workspace(self.root, self.workspace_name)
        return ws if ws.exists else None

    def open_workspace(self, name: str) -> None:
        """Switch the whole app to workspace `name` and remember it as recent."""
        try:
            ws = Workspace(self.root, name)
            if not ws.exists:
                raise UserError(f"no workspace {name!r} under {self.root}")
            remember(self.root, name)
        except Exception as e:  # noqa: BLE001 - every failure goes to the one handler
            self.show_error(e)
            return
        self.workspace_name = name
        self.notify(f"workspace {name}", title="Opened", timeout=2)

    # -- lifecycle ----------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.workspace is not None:
            remember(self.root, self.workspace_name)
        elif self.workspace_name:
            self.notify(f"no workspace {self.workspace_name!r} under {self.root}: create one "
                        "here", severity="warning", timeout=6)
        self.switch_mode(self.start_mode)
        if self._fixed_platform is not None:
            self.platform_info = self._fixed_platform
        else:
            self._load_platform()
        if self._fixed_platform is None or self._prebuild_on:
            self._warm_modes()
        self.call_after_refresh(self.freeze_heap)
        self.app_resume_signal.subscribe(self, lambda _: self._shown_cells.forget())
        if not self.is_headless:
            self.set_interval(1.0, self._collect_when_idle)

    def freeze_heap(self) -> None:
        """Leave the objects alive now (a screen just built: thousands of widgets, styles and
        caches that live as long as the app) out of every later garbage collection. A full
        collection walked them all, every thread held meanwhile: 0.27 s of CPU at a random
        key, 1.1 s while a training ran. Objects still die as their count drops to zero; only
        cycles among these are never freed. Not in tests (headless): their apps come and go
        in one process."""
        if not self.is_headless:
            import gc

            gc.freeze()

    GC_IDLE_S = 3.0  # a full garbage collection waits for this long without a key
    _gc_after_key = -1.0

    def _collect_when_idle(self) -> None:
        """Once per pause in the typing: a full collection, then what survives is frozen. Left
        to itself Python ran one at a random key (0.25 s at load 6 with the screens frozen):
        now the objects made since the last freeze are few when one comes."""
        if time.monotonic() - self._last_key_at < self.GC_IDLE_S \
                or self._gc_after_key == self._last_key_at:
            return
        import gc

        self._gc_after_key = self._last_key_at
        self._pause_hidden()
        gc.collect()
        gc.freeze()
        # and the whole screen written once more: a frame writes only the cells that changed
        # (tui/frames.py), so anything else that wrote to the terminal (a library printing on
        # its stderr) would stay on screen; a switch used to repaint it all
        self._shown_cells.forget()
        self.screen.refresh()

    @work(thread=True, exclusive=True, group="warm-modes", exit_on_error=False)
    def _warm_modes(self) -> None:
        """Import every mode's screen module now, in the background: the first switch to a mode
        then only composes it (the imports cost seconds on a busy machine); then build them."""
        for m in MODE_LIST:
            m.screen_class()
        if self._prebuild_on:
            self.call_from_thread(self.run_worker, self._prebuild(), group="prebuild",
                                  exit_on_error=False)

    # In the order of the usual loop. Train too: the CLaRa settings its forms import in a
    # thread no longer bring MLX along (that held the event loop for seconds); its first visit
    # took 1-3.5 s at load 10.
    PREBUILD_ORDER = ("data", "train", "runs", "chat", "eval", "models", "workspaces")
    PREBUILD_PAUSE_S = 0.05  # between two steps: keys typed meanwhile are answered first
    PREBUILD_IDLE_S = 0.5  # a step waits until no key came for this long
    _last_key_at = 0.0

    async def _until_idle(self) -> None:
        await asyncio.sleep(self.PREBUILD_PAUSE_S)
        # each step holds the event loop for a while: not while the user types
        while time.monotonic() - self._last_key_at < self.PREBUILD_IDLE_S or self._keys:
            await asyncio.sleep(0.05)

    async def _prebuild(self) -> None:
        """Build (compose, mount, lay out) every mode's screen in the background, one at a
        time, from the first frame on, between keys: composing a form screen took 0.1-0.3 s of
        CPU (seconds on a busy machine), and a first visit waited for it."""
        for name in self.PREBUILD_ORDER:
            await self._until_idle()
            if name in self._screen_stacks:
                continue  # shown already (or its placeholder: built for it)
            await self._build_mode(name, idle=True)
        await self._until_idle()
        self._pause_hidden()

    def _pause_hidden(self) -> None:
        """The repeating timers of every screen not shown wait until it is (ModeScreen.
        pause_timers): those built in the background were never suspended, and a widget of a
        hidden screen can start one (a progress bar that became indeterminate)."""
        shown = self.screen
        for screen in [*self._prebuilt.values(), *(s for stack in self._screen_stacks.values()
                                                   for s in stack)]:
            if screen is not shown and isinstance(screen, ModeScreen) and screen.is_mounted:
                screen.pause_timers()

    def _screen_ready(self, screen: Screen) -> bool:
        return screen.is_mounted and screen in self._laid_out

    async def _build_mode(self, name: str, idle: bool = False) -> Screen:
        """The screen of mode `name`, composed, mounted and laid out off screen (once, whoever
        asks first). `idle`: its layout waits for a pause in the typing too."""
        screen = self._prebuilt.get(name)
        if screen is None:
            screen = _styled(next(m for m in MODE_LIST if m.name == name).screen_class()())
            self._prebuilt[name] = screen
            self._register(self, screen)
        await screen._mounted_event.wait()
        if screen not in self._laid_out:
            if idle:
                await self._until_idle()
            if screen not in self._laid_out and self.size:
                # a first layout of a form screen (Train's hundreds of fields) held its first
                # visit for 2.5 s at load 10
                screen._refresh_layout(self.size)
                if idle:
                    await self._until_idle()
                # and render it once: a first show drew every widget's lines (Train: 0.1 s)
                screen._compositor.render_update(full=True)
                # with the focus it will have and the footer's keys for it: on a first show
                # the focus moved and the footer rebuilt every key (20-40 ms)
                auto_focus = getattr(screen, "_auto_focus", None)
                if auto_focus is not None:
                    auto_focus()
                for footer in screen.query(ClaraFooter):  # in the footer's own context
                    footer.call_later(footer.bindings_changed, screen)
                # what that made lives as long as the screen: out of the collections too (a
                # full one walked it, 0.58 s at a switch while a training ran)
                self.call_after_refresh(self.freeze_heap)
            self._laid_out.add(screen)
        return screen

    async def _swap_in(self, name: str, placeholder: Screen) -> None:
        """Build mode `name`'s screen now and put it where its placeholder is."""
        await asyncio.sleep(0)  # the placeholder is painted first
        screen = await self._build_mode(name)
        self._prebuilt.pop(name, None)
        stack = self._screen_stacks.get(name)
        if not stack or placeholder not in stack:
            return
        stack[stack.index(placeholder)] = screen
        if self.screen is screen:  # shown now: as switch_mode shows a mode's screen
            placeholder.post_message(events.ScreenSuspend())
            self.screen_change_signal.publish(screen)
            screen._screen_resized(self.size)
            screen.post_message(events.ScreenResume())
        await placeholder.remove()

    _dropped = False  # a frame came while a batch update was open (see _end_batch)

    def _display(self, screen: Screen, renderable) -> None:
        """A frame writes only the cells that changed (see tui/frames.py): a mode switch wrote
        the whole screen, and a slow terminal took up to 0.5 s to read it."""
        if renderable is not None and self._batch_count:
            self._dropped = True  # Textual's _display drops it
        if renderable is not None and not self._batch_count and self._running \
                and not self._closed and not self.is_headless and self._driver is not None \
                and not self._driver.is_inline:  # a frame that App._display writes
            renderable = self._shown_cells.update(renderable, self.console)
        super()._display(screen, renderable)
        if screen._callbacks:
            # what waits for this paint (call_after_refresh: the type-ahead's next key, a
            # focus) runs now: Textual runs it on the screen's next idle, and a paint from the
            # screen's update timer is no message, so it waited for whatever message came next
            # (a key typed 10-20 ms after a switch waited for its predecessor's turn to end)
            screen.check_idle()

    _mask_switch = True

    def switch_mode(self, mode: str):
        """Textual holds every paint for 50 ms after a mode switch, to mask a screen composing
        itself: half of the 100 ms a switch may take. A screen shown before, or built in the
        background, is whole at once; only a first visit still composing keeps the mask."""
        self._mask_switch = mode not in self._screen_stacks and mode not in self._prebuilt \
            and not self._prebuild_on  # a placeholder is whole at once too
        stack = self._screen_stacks.get(mode)
        shown_before = bool(stack) and stack[-1].stack_updates > 0 and mode != self.current_mode
        if shown_before:  # Textual's own layout in switch_mode paints it: whole (see below)
            self._prepare_whole_paint(stack[-1])
        leaving = self.screen
        if isinstance(leaving, ModeScreen):  # its refresh there is skipped (ModeScreen.refresh)
            leaving._painted_whole = True
        try:
            result = super().switch_mode(mode)
        finally:
            self._mask_switch = True
            # hidden now (the refresh skipped was the switch's own), or still shown because the
            # mode was the current one: then no resume comes to clear it, and every later
            # repaint of the screen was skipped until the next switch (seen in bench/tui_latency)
            if isinstance(leaving, ModeScreen):
                leaving._painted_whole = False
        screen = self.screen
        if not shown_before and screen in self._laid_out and screen.is_attached \
                and getattr(screen, "stack_updates", 1) == 0:  # built in the background
            self._prepare_whole_paint(screen)
            screen._refresh_layout(self.size)
        return result

    def _prepare_whole_paint(self, screen: Screen) -> None:
        """Have the layout that shows `screen` at a mode switch paint all of it, at once.
        Textual's paints only what moved (almost nothing: the screen was laid out before), and
        the whole screen followed from the screen's update timer one to three turns of the
        event loop later: 15-30 ms of every switch, meanwhile a frame of the old screen with
        bits of the new one. The repaint that Textual then asks for is skipped (ModeScreen.refresh)."""
        if not isinstance(screen, ModeScreen) or not self.size:
            return
        screen.fit_width()
        if screen.mode_bar is not None:  # highlights the mode current when last drawn
            screen.mode_bar.refresh()
        screen._compositor._dirty_regions.add(self.size.region)  # kept by the reflow
        screen._repaint_required = False  # left from its last switch away: this paint is whole
        screen._painted_whole = True

    def _end_batch(self) -> None:
        """Textual drops a frame painted while a batch update is open, and Markdown.update
        holds one across awaits (the Runs report, refilled while a training runs): a mode
        switch's whole paint was lost then, and the repaints after it were skipped as already
        done (ModeScreen.refresh): the new mode showed 3.3-4.2 s late, at the next repaint that
        came for another reason (bench/tui_latency --trace, SCHED_IDLE phase: the app idle,
        nothing written, the benchmark waiting). Now the screen is painted again."""
        super()._end_batch()
        if self._dropped and not self._batch_count:
            self._dropped = False
            screen = self.screen
            if isinstance(screen, ModeScreen):
                screen._painted_whole = False  # that paint is the one lost
            screen.refresh()

    def delay_update(self, delay: float = 0.05) -> None:
        if self._mask_switch:
            super().delay_update(delay)

    async def action_quit(self) -> None:
        """Quit at once: the terminal is restored and the process ends. The orderly shutdown
        closed every widget of every built mode screen (a second on a busy machine) and waited
        for thread workers still loading a model or writing a reply (seconds). Nothing is lost:
        files are written atomically, and training runs are processes of their own that go on.
        In a headless app (tests) the orderly exit stays."""
        if self._driver is not None and not self.is_headless:
            self._driver.stop_application_mode()
            self._driver.close()  # its writer thread sends the terminal's restore, then ends
            sys.stdout.flush()
            os._exit(0)
        self.exit()

    @work(thread=True, exclusive=True, group="platform", exit_on_error=False)
    def _load_platform(self) -> None:
        """What the header shows (backend, dtype, BLAS): mlx.core only, 30 ms. The full
        `platform.describe()` also imports mlx_lm for its version (transformers with it): 2 s
        of CPU holding the GIL in the app's first seconds, when the first keys come."""
        from clara import platform  # imports mlx.core: off the UI thread all the same

        info = {"backend": platform.backend(), "dtype": platform.default_dtype(),
                "blas_preload": platform.blas_library() if platform.blas_preloaded() else None}
        self.call_from_thread(setattr, self, "platform_info", info)

    # -- the one error handler ----------------------------------------------------------------
    def show_error(self, error: BaseException | str, title: str | None = None) -> None:
        """Open an error dialog. A UserError shows its one-line message; anything else also its
        type, and its traceback goes to the log. The app keeps running."""
        if isinstance(error, WorkerFailed):
            error = error.error
        if isinstance(error, str):
            message = error
        elif isinstance(error, UserError):
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}"
            log.error("".join(traceback.format_exception(error)))
        self.errors.append(message)
        self.push_screen(ErrorDialog(message, title=title or "Error"))

    def on_worker_state_changed(self, event) -> None:
        from textual.worker import WorkerState

        if event.state == WorkerState.ERROR:
            self.show_error(event.worker.error)

    # -- actions ----------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for m in MODE_LIST:
            yield SystemCommand(f"Go to {m.title} ({m.key.upper()})", m.help,
                                partial(self.switch_mode, m.name))
        yield SystemCommand("Help (F1)", "Keys and actions of this mode", self.action_help)
        # Screen-specific actions (import, launch, stop, ...) come from the screen itself,
        # then every key binding of the screen that the palette does not list yet.
        titles: set[str] = set()
        extra = getattr(screen, "palette_commands", None)
        if extra is not None:
            for command in extra():
                titles.add(command.title.lower())
                yield command
        tabs = getattr(screen, "tab_commands", None)
        if tabs is not None:
            yield from tabs()
        from tui.screens.help import screen_keys_with_actions

        for key, description, action in screen_keys_with_actions(screen):
            if description.lower() not in titles and action not in ("blur",):
                yield SystemCommand(f"{screen.title or ''}: {description} ({key})".lstrip(": "),
                                    f"key {key}", partial(screen.run_action, action))


def run_app(root: Path, workspace: str | None = None) -> None:
    """Run the workbench over the workspaces under `root`, with `workspace` open.

    Quitting does not wait for thread workers still loading a model or writing a reply (asyncio
    would join them, and Python again at exit: seconds): once the terminal is restored the
    process ends. Training runs are processes of their own and go on."""
    from clara.runs import PRIORITY_ENV

    # trainings started here (and by pipelines started here) run under SCHED_IDLE unless the
    # user says otherwise: at nice 10 the app's keys still waited for a CPU beside them
    os.environ.setdefault(PRIORITY_ENV, APP_WORKER_PRIORITY)
    app = WorkbenchApp(root=root, workspace=workspace)
    app.run(loop=asyncio.new_event_loop())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(app.return_code or 0)
