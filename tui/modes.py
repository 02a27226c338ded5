"""The app's modes: one entry each (name, title, key, screen class), in the order of the mode bar.

A new mode is one more `Mode` here; the app builds its keys, its mode bar, its palette entries and
its help from this list. Keys are F-keys only: a letter could be typed into a text field.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    title: str
    key: str
    screen: str  # "module:Class", imported when the mode is first shown
    help: str

    def screen_class(self):
        module, _, cls = self.screen.partition(":")
        return getattr(importlib.import_module(module), cls)


MODES: list[Mode] = [
    Mode("workspaces", "Workspaces", "f2", "tui.screens.workspaces:WorkspacesScreen",
         "list, create and open workspaces"),
    Mode("data", "Data", "f3", "tui.screens.data:DataScreen",
         "import documents, build and validate datasets"),
    Mode("train", "Train", "f4", "tui.screens.train:TrainScreen",
         "LoRA, CLaRa stages 1-3 and the pipeline: form, command, launch"),
    Mode("runs", "Runs", "f5", "tui.screens.runs:RunsScreen",
         "runs and their curves, events, report; stop, resume, delete, export"),
    Mode("chat", "Chat", "f7", "tui.screens.chat:ChatScreen",
         "a model with an adapter or a CLaRa run; side by side"),
    Mode("eval", "Eval", "f8", "tui.screens.eval:EvalScreen",
         "score configurations on a QA set; compare adapters with the base"),
    Mode("models", "Models", "f9", "tui.screens.models:ModelsScreen",
         "list, add, quantize, fuse, extract and benchmark base models"),
]


def mode(name: str) -> Mode:
    return next(m for m in MODES if m.name == name)
