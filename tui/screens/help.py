"""The help screen: modes, keys, and where things live on disk."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# clara workbench

Everything here is also a `clara` command; both work on the same workspace folders.

| Key | Where |
|---|---|
| `F2` / `w` | **Workspaces**: list, create (`n`), open (`Enter`) |
| `F3` / `d` | **Data**: import documents, datasets and their statistics, validation |
| `F4` / `t` | **Train**: LoRA, CLaRa stages 1-3 and the pipeline: form, preview, launch |
| `F5` / `r` | **Runs**: past and running runs, curves, events, report, stop |
| `F7` / `c` | **Chat**: a model with an adapter (or a CLaRa run with documents), streamed replies |
| `F8` / `e` | **Eval**: score configurations on a QA set, compare adapters with the base |
| `ctrl+p` | command palette: every action and every workspace |
| `F1` / `?` | this help |
| `ctrl+q` | quit (training runs keep going; reattach later in Runs) |

Letters switch modes only when no text field has the focus; `Esc` leaves a text field.
Errors open a dialog: read it, press `Esc`, carry on.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Markdown(HELP)

    def action_close(self) -> None:
        self.dismiss()
