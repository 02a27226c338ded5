"""The clara workbench: a Textual app whose modes are the workspaces, data, training, runs, chat
and evaluation.

Every action calls the `clara` library (the same functions the commands call) from a thread
worker, so the interface never blocks. Failures of any kind reach one handler, `show_error`,
which opens a dialog and keeps the app running.
"""

from __future__ import annotations

import logging
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

from clara.errors import ClaraError
from clara.workspace import Workspace, list_workspaces
from tui.recent import load_recent, remember
from tui.screens.chat import ChatScreen
from tui.screens.data import DataScreen
from tui.screens.eval import EvalScreen
from tui.screens.help import HelpScreen
from tui.screens.hrm import HRMScreen
from tui.screens.runs import RunsScreen
from tui.screens.train import TrainScreen
from tui.screens.workspaces import WorkspacesScreen
from tui.widgets.dialogs import ErrorDialog

log = logging.getLogger(__name__)

MODE_TITLES = {"workspaces": "Workspaces", "data": "Data", "train": "Train", "runs": "Runs",
               "chat": "Chat", "eval": "Eval", "hrm": "HRM"}


class WorkspaceCommands(Provider):
    """Command palette: `open workspace NAME` for every workspace under the root."""

    def _commands(self) -> list[tuple[str, str, str]]:
        app: ClaraApp = self.app  # type: ignore[assignment]
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


class ClaraApp(App):
    """The workbench over the workspaces under `root`."""

    CSS_PATH = "app.tcss"
    TITLE = "clara"
    MODES = {
        "workspaces": WorkspacesScreen,
        "data": DataScreen,
        "train": TrainScreen,
        "runs": RunsScreen,
        "chat": ChatScreen,
        "eval": EvalScreen,
        "hrm": HRMScreen,
    }
    COMMANDS = App.COMMANDS | {WorkspaceCommands}
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("f2", "switch_mode('workspaces')", "Workspaces"),
        Binding("f3", "switch_mode('data')", "Data"),
        Binding("f4", "switch_mode('train')", "Train"),
        Binding("f5", "switch_mode('runs')", "Runs"),
        Binding("f7", "switch_mode('chat')", "Chat"),
        Binding("f8", "switch_mode('eval')", "Eval"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("w", "switch_mode('workspaces')", "Workspaces", show=False),
        Binding("d", "switch_mode('data')", "Data", show=False),
        Binding("t", "switch_mode('train')", "Train", show=False),
        Binding("r", "switch_mode('runs')", "Runs", show=False),
        Binding("c", "switch_mode('chat')", "Chat", show=False),
        Binding("e", "switch_mode('eval')", "Eval", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

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
        self.set_reactive(ClaraApp.workspace_name, workspace or "")

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
                raise ClaraError(f"no workspace {name!r} under {self.root}")
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

    @work(thread=True, exclusive=True, group="platform", exit_on_error=False)
    def _load_platform(self) -> None:
        from clara import platform  # imports mlx: slow the first time, so off the UI thread

        info = platform.describe()
        self.call_from_thread(setattr, self, "platform_info", info)

    # -- the one error handler ----------------------------------------------------------------
    def show_error(self, error: BaseException | str, title: str | None = None) -> None:
        """Open an error dialog. A ClaraError shows its one-line message; anything else also its
        type, and its traceback goes to the log. The app keeps running."""
        if isinstance(error, WorkerFailed):
            error = error.error
        if isinstance(error, str):
            message = error
        elif isinstance(error, ClaraError):
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
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, title in MODE_TITLES.items():
            yield SystemCommand(f"Go to {title}", f"Switch to the {title} screen",
                                partial(self.switch_mode, mode))
        yield SystemCommand("Help", "Keys and modes", self.action_help)
        # Screen-specific actions (import, launch, stop, ...) come from the screen itself.
        extra = getattr(screen, "palette_commands", None)
        if extra is not None:
            yield from extra()


def run_app(root: Path, workspace: str | None = None) -> None:
    """Run the workbench over the workspaces under `root`, with `workspace` open."""
    ClaraApp(root=root, workspace=workspace).run()
