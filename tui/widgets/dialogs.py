"""Modal dialogs: an error that never ends the app, and a yes/no confirmation."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ErrorDialog(ModalScreen[None]):
    """Shows one error message; Escape, Enter or the button closes it."""

    BINDINGS = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, message: str, title: str = "Error") -> None:
        super().__init__(classes="dialog-screen")
        self.message = message
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(self.message, id="error-message", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="error", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss()

    async def action_dismiss(self, result=None) -> None:  # Binding calls it without a result
        self.dismiss()


class ConfirmDialog(ModalScreen[bool]):
    """Asks a yes/no question; dismisses with True or False."""

    BINDINGS = [Binding("escape", "answer(False)", "No"), Binding("y", "answer(True)", "Yes")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-body", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, variant="warning", id="yes")
                yield Button(self.no, id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PromptDialog(ModalScreen[str | None]):
    """Asks for one line of text (a new name, tags): Enter answers it, Esc cancels (None)."""

    # Enter answers at once (a priority key, not the Input's Submitted message): a key typed
    # right after it then goes to the screen below, not to the closing dialog
    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("enter", "submit", "OK", priority=True)]

    def __init__(self, question: str, value: str = "", placeholder: str = "",
                 help_text: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.value = question, value
        self.placeholder, self.help_text = placeholder, help_text

    def compose(self) -> ComposeResult:
        from tui.widgets.live_text import TextInput

        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            yield TextInput(self.value, placeholder=self.placeholder, id="prompt-answer")
            if self.help_text:
                yield Static(self.help_text, classes="muted", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK (Enter)", variant="primary", id="ok")
                yield Button("Cancel (Esc)", id="cancel")

    def action_submit(self) -> None:
        self.dismiss(self.query_one("#prompt-answer").value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self.dismiss(self.query_one("#prompt-answer").value)
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
