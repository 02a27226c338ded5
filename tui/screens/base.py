"""What every mode screen shares: the header and footer, workspace changes, and worker errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from tui.widgets.demo_banner import DemoBanner
from tui.widgets.header import ClaraHeader

if TYPE_CHECKING:
    from tui.app import ClaraApp


class ClaraScreen(Screen):
    """A mode screen. Subclasses write `compose_body` and `reload` (called again whenever the app
    switches workspace). Their workers use `exit_on_error=False`: a failure is routed here to the
    app's one error handler, which opens a dialog and keeps the app running."""

    app: "ClaraApp"

    BINDINGS = [Binding("escape", "blur", "Leave field", show=False)]

    def action_blur(self) -> None:
        """Esc leaves a text field, so single-letter keys reach the screen and the app again."""
        self.set_focus(None)

    def compose(self) -> ComposeResult:
        yield ClaraHeader()
        yield from self.compose_body()
        yield DemoBanner()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.watch(self.app, "workspace_name", self._workspace_changed, init=False)
        self.reload()

    def on_screen_resume(self) -> None:
        self.on_resume()

    def on_resume(self) -> None:
        """Called when the mode is shown again; refresh what may have changed meanwhile."""

    def _workspace_changed(self, _name: str) -> None:
        self.reload()

    def reload(self) -> None:
        """Read the workspace again (in workers) and refill the widgets."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.show_error(event.worker.error)
