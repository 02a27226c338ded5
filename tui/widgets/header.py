"""The top line of every screen: app, mode, workspace, and the platform MLX runs on."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


def platform_line(info: dict | None) -> str:
    """`cpu · float32 · BLAS openblas` from `clara.platform.describe()`."""
    if not info:
        return "platform …"
    blas = info.get("blas_preload")
    blas_name = "reference" if not blas else str(blas).rsplit("/", 1)[-1].split(".so")[0]
    blas_name = blas_name.removeprefix("lib")
    return f"{info.get('backend', '?')} · {info.get('dtype', '?')} · BLAS {blas_name}"


class ClaraHeader(Widget):
    """One line; it reads the app's `workspace_name`, `platform_info` and the screen's title."""

    DEFAULT_CSS = """
    ClaraHeader { height: 1; dock: top; background: $panel; color: $foreground; }
    """

    workspace_name: reactive[str] = reactive("")
    platform_info: reactive[dict | None] = reactive(None)
    mode_title: reactive[str] = reactive("")

    def on_mount(self) -> None:
        self.watch(self.app, "workspace_name", self._set_workspace, init=True)
        self.watch(self.app, "platform_info", self._set_platform, init=True)
        self.mode_title = self.screen.title or ""

    def _set_workspace(self, value: str) -> None:
        self.workspace_name = value

    def _set_platform(self, value: dict | None) -> None:
        self.platform_info = value

    def render(self) -> Text:
        left = Text.assemble((" clara ", "bold reverse"), " ", (self.mode_title, "bold"))
        middle = Text.assemble("workspace ", (self.workspace_name or "-", "bold"))
        right = Text(platform_line(self.platform_info) + " ")
        width = self.size.width
        pad = max(1, (width - len(left) - len(middle) - len(right)) // 2)
        line = Text.assemble(left, " " * pad, middle)
        line.append(" " * max(1, width - len(line) - len(right)))
        line.append_text(right)
        line.truncate(width)
        return line


class ModeBar(Widget):
    """One line under the header: every mode with its key, the current one highlighted."""

    DEFAULT_CSS = """
    ModeBar { height: 1; background: $panel-darken-1; color: $text-muted; }
    """

    def render(self) -> Text:
        from tui.modes import MODES

        current = getattr(self.app, "current_mode", None)
        line = Text(" ")
        for m in MODES:
            label = f" {m.key.upper()} {m.title} "
            if m.name == current:
                line.append(label, style="bold reverse")
            else:
                line.append(m.key.upper(), style="bold")
                line.append(f" {m.title} ")
        line.append(" F1 help · ^p actions · ^t tabs", style="italic")
        line.truncate(self.size.width)
        return line
