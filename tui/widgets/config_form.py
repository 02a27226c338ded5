"""A form built from a config dataclass: one field per setting, its help text beside it.

Values typed into the form are parsed by the field's type and handed to the library's own
`merge_config`, which applies defaults and validation; the form never decides what is valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from textual.app import ComposeResult
from textual.containers import Container, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Switch

from clara.errors import UserError
from tui.widgets.live_text import TextInput
from tui.widgets.switch import StateSwitch


def _base_type(tp: Any) -> tuple[type, bool]:
    """(the non-None type, whether None is allowed) of an annotation like `float | None`."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing) | {"list": list, "dict": dict})  # noqa: S307 - our own annotations
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0] if args else str, True
    if origin is list:
        return list, False
    return tp, False


def parse_value(name: str, text: str, tp: Any) -> Any:
    """Text from an Input to the field's type; '' means the default (None)."""
    base, _optional = _base_type(tp)
    if text and not text.strip() and base in (int, float):
        # a space typed into a number field (it replaces a selected value) would otherwise
        # run with the default unseen: the placeholder "default" shows only on an empty field
        raise UserError(f"{name}: a space is not a number (empty it for the default)")
    text = text.strip()
    if text == "" or text.lower() == "none":
        return None
    try:
        if base is bool:
            return text.lower() in ("1", "true", "yes", "on")
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is list:
            return [t.strip() for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{name}: {text!r} is not a {base.__name__}") from None
    return text


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


class ConfigForm(VerticalScroll, can_focus=False):
    """Fields of `config_cls`; `choices` turns a field into a Select, `hidden` leaves some out.
    The form itself takes no focus: Tab goes from field to field (it scrolls to the focused)."""

    DEFAULT_CSS = """
    ConfigForm { height: 1fr; }
    ConfigForm .form-row {
        layout: grid; grid-size: 3; grid-columns: 22 20 1fr; grid-rows: auto;
        height: auto; margin-bottom: 1;
    }
    ConfigForm .form-label { width: 100%; padding: 0 1 0 0; text-style: bold; }
    ConfigForm .form-field { width: 100%; }
    ConfigForm Switch.form-field { height: 1; border: none; padding: 0; }
    ConfigForm .form-help { width: 100%; height: auto; padding: 0 0 0 2; color: $text-muted; }
    """

    class Changed(Message):
        """A value of the form changed (the preview listens)."""

        def __init__(self, form: "ConfigForm") -> None:
            super().__init__()
            self.form = form

        @property
        def control(self) -> "ConfigForm":
            return self.form

    class Submitted(Message):
        """Enter in a field of the form: the screen submits it (or says why not)."""

        def __init__(self, form: "ConfigForm") -> None:
            super().__init__()
            self.form = form

        @property
        def control(self) -> "ConfigForm":
            return self.form

    def __init__(self, config_cls, *, choices: dict[str, list[str]] | None = None,
                 hidden: tuple[str, ...] = (), first: tuple[str, ...] = (),
                 values: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config_cls = config_cls
        self.choices = choices or {}
        fields = [f for f in dataclasses.fields(config_cls) if f.name not in hidden]
        order = {name: i for i, name in enumerate(first)}
        self.fields = sorted(fields, key=lambda f: order.get(f.name, len(order)))
        self.initial = values or {}
        self._widgets: dict[str, Any] = {}  # field name -> its widget, filled on first use
        self._options: dict[str, list[str]] = {}  # the choices each Select was last given

    def _default(self, f: dataclasses.Field) -> Any:
        if f.name in self.initial:
            return self.initial[f.name]
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            return f.default_factory()  # type: ignore[misc]
        return None

    def compose(self) -> ComposeResult:
        for f in self.fields:
            base, _ = _base_type(f.type)
            value = self._default(f)
            with Container(classes="form-row"):
                yield Label(f.name, classes="form-label")
                wid = f"field-{f.name}"
                if base is bool:
                    yield StateSwitch(bool(value), id=wid, classes="form-field")
                elif f.name in self.choices:
                    options = [(c, c) for c in self.choices[f.name]]
                    if value not in self.choices[f.name]:
                        value = Select.NULL if not self.choices[f.name] else value
                    if value is not Select.NULL and value not in self.choices[f.name]:
                        options.insert(0, (str(value), value))
                    # a setting with a default among its choices cannot be left empty
                    blank = value is Select.NULL or value is None or value == ""
                    yield Select(options, value=value if value is not None else Select.NULL,
                                 id=wid, classes="form-field", allow_blank=blank, compact=True)
                else:
                    # an empty field says so: a compact one with no text and no placeholder
                    # was not there to see (Data's `sources`)
                    yield TextInput(_show(value), id=wid, classes="form-field", compact=True,
                                placeholder="default" if value is None
                                else "empty" if _show(value) == "" else "")
                yield Label(f.metadata.get("help", ""), classes="form-help")

    def field_widget(self, name: str):
        """The widget of field `name`. Looked up once: a query walks the whole form, and the
        preview reads every field on every keystroke."""
        widget = self._widgets.get(name)
        if widget is None or not widget.is_attached:
            self._widgets = {w.id.removeprefix("field-"): w for w in self.query(".form-field")
                             if w.id}
            widget = self._widgets.get(name)
            if widget is None:
                raise KeyError(f"no field {name!r} in the form")
        return widget

    def raw_values(self) -> dict[str, Any]:
        """Parsed values of every field (None: left to the default)."""
        out: dict[str, Any] = {}
        for f in self.fields:
            widget = self.field_widget(f.name)
            if isinstance(widget, Switch):
                out[f.name] = widget.value
            elif isinstance(widget, Select):
                out[f.name] = None if widget.value is Select.NULL else widget.value
            else:
                out[f.name] = parse_value(f.name, widget.value, f.type)
        return out

    def changed_values(self) -> dict[str, Any]:
        """The fields whose value differs from the dataclass default (what a command line or a
        settings file needs to say)."""
        out = {}
        raw = self.raw_values()
        for f in self.fields:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = None
            value = raw[f.name]
            if value is None and default is not None and not isinstance(default, (list, bool)) \
                    and f.name not in self.choices:
                continue  # left empty: the default applies
            if value != default and not (value is None and default in ([], "")):
                out[f.name] = value
        return out

    def set_value(self, name: str, value: Any) -> None:
        widget = self.field_widget(name)
        if isinstance(widget, Switch):
            widget.value = bool(value)
        elif isinstance(widget, Select):
            widget.value = value
        else:
            widget.value = _show(value)

    def set_choices(self, name: str, options: list[str]) -> None:
        """New choices for a Select field; nothing happens when they are the same (setting them
        rebuilds the Select's widgets, and every mode switch refreshes the choices)."""
        widget = self.field_widget(name)
        assert isinstance(widget, Select), name
        options = list(options)
        if self._options.get(name) == options:
            return
        self._options[name] = options
        current = widget.value
        widget.set_options([(o, o) for o in options])
        if current in options:
            widget.value = current

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self))

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self))

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self))
