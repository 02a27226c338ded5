"""Widgets used by more than one screen."""

from tui.widgets.dialogs import ConfirmDialog, ErrorDialog
from tui.widgets.header import ClaraHeader
from tui.widgets.kv import KeyValues
from tui.widgets.metric import MetricSparkline
from tui.widgets.path_input import PathInput, PathSuggester

__all__ = ["ClaraHeader", "ConfirmDialog", "ErrorDialog", "KeyValues", "MetricSparkline",
           "PathInput", "PathSuggester"]
