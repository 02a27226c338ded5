"""The help screen: modes and their keys, then the keys and actions of the mode it was opened
from (read from that screen's bindings and palette commands, so it never goes stale)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown

from tui.modes import MODES

INTRO = """\
# clara workbench

Everything here is also a `clara` command; both work on the same workspace folders. Modes
change with F-keys only, so typing never lands anywhere but the field with the focus ring.

| Key | Mode |
|---|---|
"""

GLOBAL = """
| Key | Anywhere |
|---|---|
| `Tab` / `shift+Tab` | next / previous field (fields in order, buttons last) |
| `ctrl+t` / `ctrl+y` | next / previous tab of this mode |
| `Esc` | leave the field (its focus ring goes away) |
| `ctrl+p` | command palette: every action of this mode, every workspace |
| `F1` | this help |
| `ctrl+q` | quit at once (training runs keep going; reattach later in Runs) |
"""


def screen_keys_with_actions(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, description, action) of the bindings a mode screen declares, own and inherited."""
    seen, out = set(), []
    for cls in type(screen).__mro__:
        for b in cls.__dict__.get("BINDINGS", []):
            if not isinstance(b, Binding) or not b.description or b.key in seen:
                continue
            seen.add(b.key)
            out.append((" / ".join(k.strip() for k in b.key.split(",")), b.description,
                        b.action))
    return out


def screen_keys(screen: Screen) -> list[tuple[str, str]]:
    return [(" / ".join(f"`{k}`" for k in key.split(" / ")), d)
            for key, d, _a in screen_keys_with_actions(screen)]


def help_text(screen: Screen | None) -> str:
    text = INTRO + "".join(f"| `{m.key.upper()}` | **{m.title}**: {m.help} |\n" for m in MODES)
    text += GLOBAL
    title = getattr(screen, "TITLE", None)
    if screen is not None and title and any(m.title == title for m in MODES):
        keys = screen_keys(screen)
        if keys:
            text += f"\n## {title}: keys\n\n| Key | Action |\n|---|---|\n"
            text += "".join(f"| {k} | {d} |\n" for k, d in keys)
        commands = getattr(screen, "palette_commands", None)
        if commands is not None:
            entries = [(c.title, c.help) for c in commands()]
            if entries:
                text += f"\n## {title}: actions (also in ctrl+p)\n\n"
                text += "".join(f"- **{t}**: {h}\n" for t, h in entries)
    return text + "\nErrors open a dialog: read it, press `Esc`, carry on.\n"


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1", "close", "Close")]

    def __init__(self, screen: Screen | None = None) -> None:
        super().__init__()
        self.for_screen = screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(help_text(self.for_screen))

    def action_close(self) -> None:
        self.dismiss()
