"""An Input that completes file-system paths as you type (Tab or → accepts the suggestion)."""

from __future__ import annotations

import os
from pathlib import Path

from textual.binding import Binding
from textual.suggester import Suggester

from tui.widgets.live_text import TextInput


class PathSuggester(Suggester):
    """Suggests the first entry of the typed folder that starts with the typed name.

    Textual's SuggestFromList needs the whole list up front; a file system is listed lazily.
    Folders get a trailing `/` so the next Tab continues inside them.
    """

    def __init__(self, base: Path | None = None, suffixes: tuple[str, ...] = ()) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.base = base
        self.suffixes = suffixes

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, _, stem = expanded.rpartition("/")
        folder_path = Path(folder or ("/" if expanded.startswith("/") else "."))
        if not folder_path.is_absolute() and self.base is not None:
            folder_path = self.base / folder_path
        try:
            names = sorted(os.listdir(folder_path))
        except OSError:
            return None
        matches = []
        for name in names:
            if not name.startswith(stem) or (name.startswith(".") and not stem):
                continue
            is_dir = (folder_path / name).is_dir()
            if not is_dir and self.suffixes and not name.lower().endswith(self.suffixes):
                continue
            matches.append(name + ("/" if is_dir else ""))
        typed_folder = value[: len(value) - len(stem)]
        # as a shell does: complete what all matches share, and stop at a folder rather than
        # jump into one of several files (`data/sa` -> `data/sample`, then `data/sample/`)
        if len(matches) == 1:
            return typed_folder + matches[0] if matches[0] != stem else None
        common = os.path.commonprefix(matches)
        if len(common) > len(stem):
            return typed_folder + common
        if stem + "/" in matches:
            return typed_folder + stem + "/"
        return None


class PathInput(TextInput):
    """An Input with a PathSuggester; Tab takes the suggestion, or moves on when there is none."""

    BINDINGS = [Binding("tab", "complete", "Complete", show=False)]

    def __init__(self, *args, base: Path | None = None, suffixes: tuple[str, ...] = (),
                 **kwargs) -> None:
        kwargs.setdefault("placeholder", "path to a file or folder (Tab completes)")
        super().__init__(*args, suggester=PathSuggester(base, suffixes), **kwargs)

    def action_complete(self) -> None:
        if self._suggestion and self._suggestion != self.value:
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()
