"""The clara workbench: a Textual app whose modes are the workspaces, data, training, runs, chat
and evaluation.

Every action calls the `clara` library (the same functions the commands call) from a thread
worker, so the interface never blocks. Failures of any kind reach one handler, `show_error`,
which opens a dialog and keeps the app running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from functools import partial
from pathlib import Path
from typing import Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import WorkerFailed

from clara.errors import UserError
from clara.workspace import Workspace, list_workspaces
from tui.modes import MODES as MODE_LIST
from tui.recent import load_recent, remember
from tui.screens.help import HelpScreen
from tui.widgets.dialogs import ErrorDialog

log = logging.getLogger(__name__)

MODE_TITLES = {m.name: m.title for m in MODE_LIST}


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


def _styled(screen: Screen) -> Screen:
    """A new mode screen, marked as styled with the app's current CSS. Textual restyles the whole
    app (reparsing every stylesheet) when it shows a screen not so marked, twice on a mode's
    first visit; the screen's widgets are styled as they mount anyway, and all the CSS was read
    at the start. A theme change still restyles every screen (it raises the app's count)."""
    from textual.app import active_app

    screen._css_update_count = active_app.get()._css_update_count
    return screen


class WorkbenchApp(App):
    """The workbench over the workspaces under `root`."""

    # Every screen's stylesheet is read at the start: Textual reparses all the CSS and restyles
    # the app each time a screen brings a file it has not seen (seconds on a busy machine).
    CSS_PATH = ["app.tcss", *sorted(f"screens/{p.name}" for p in
                                    (Path(__file__).parent / "screens").glob("*.tcss"))]
    TITLE = "clara"
    # screens are imported when their mode is first shown (the app starts faster)
    MODES = {m.name: (lambda m=m: _styled(m.screen_class()())) for m in MODE_LIST}
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
    # narrow terminals (100 columns) stack a form's help under its field
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (116, "-wide")]

    workspace_name: reactive[str] = reactive("")
    platform_info: reactive[dict | None] = reactive(None)

    def __init__(self, root: str | Path, workspace: str | None = None, *,
                 start_mode: str = "workspaces", platform_info: dict | None = None) -> None:
        """`platform_info` replaces `clara.platform.describe()` (tests pin it for snapshots)."""
        super().__init__()
        self.root = Path(root)
        self.start_mode = start_mode
        self._fixed_platform = platform_info
        self.errors: list[str] = []  # every message shown by show_error, for tests and logs
        self.follow_run: str | None = None  # a run the Runs screen should select when it appears
        self.set_reactive(WorkbenchApp.workspace_name, workspace or "")

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
            self._warm_modes()

    @work(thread=True, exclusive=True, group="warm-modes", exit_on_error=False)
    def _warm_modes(self) -> None:
        """Import every mode's screen module now, in the background: the first switch to a mode
        then only composes it (the imports cost seconds on a busy machine)."""
        for m in MODE_LIST:
            m.screen_class()

    async def action_quit(self) -> None:
        """Quit at once. A thread worker still loading a model or writing a reply holds the
        interpreter (and the GIL), and the orderly shutdown waited seconds for it: when one runs,
        the terminal is restored and the process ends without waiting. Training runs are
        processes of their own and go on."""
        busy = [w for w in self.workers if w.is_running and isinstance(w.node, (App, Screen))
                and not w.group.startswith("tail-") and w.group not in ("warm-modes",)]
        if busy and self._driver is not None and not self.is_headless:
            self._driver.stop_application_mode()
            sys.stdout.flush()
            os._exit(0)
        self.exit()

    @work(thread=True, exclusive=True, group="platform", exit_on_error=False)
    def _load_platform(self) -> None:
        from clara import platform  # imports mlx: slow the first time, so off the UI thread

        info = platform.describe()
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
    app = WorkbenchApp(root=root, workspace=workspace)
    app.run(loop=asyncio.new_event_loop())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(app.return_code or 0)
