"""Models mode: the workspace's base models (`clara model list`), and a form per `clara model`
action (add, quantize, fuse, extract text, bench) with the command it stands for. Each action runs
the library function the command calls, in a thread worker; the table refreshes after it."""

from __future__ import annotations

from dataclasses import dataclass, field

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, ContentSwitcher, DataTable, Label, Select, Static

from clara.errors import UserError
from clara.io import human_size
from tui.widgets.table import Table
from tui.command import command_line
from tui.screens.base import ModeScreen
from tui.widgets.config_form import ConfigForm
from tui.widgets.live_text import LiveText


@dataclass
class AddForm:
    name: str = field(default="", metadata={"help": "Name of the model in the workspace."})
    source: str = field(default="", metadata={
        "help": "A local mlx-lm model folder or a Hugging Face id (loaded once to check it)."})


@dataclass
class QuantizeForm:
    name: str = field(default="", metadata={"help": "The model to quantize."})
    bits: str = field(default="4", metadata={"help": "Bits per weight (4 or 8)."})
    group_size: int = field(default=64, metadata={"help": "Weights per scale."})
    out: str | None = field(default=None, metadata={"help": "New model name (default NAME-qBITS)."})


@dataclass
class FuseForm:
    name: str = field(default="", metadata={"help": "Name of the new, fused model."})
    run: str = field(default="", metadata={"help": "Run whose adapter to fuse (best, else last)."})
    base: str | None = field(default=None, metadata={"help": "Base model (default: the run's)."})
    dequantize: bool = field(default=False, metadata={
        "help": "Write float weights even from a quantized base."})


@dataclass
class ExtractForm:
    src: str = field(default="", metadata={
        "help": "A local Hugging Face folder of a vision/omni checkpoint (or a text one)."})
    name: str = field(default="", metadata={"help": "Name of the extracted text model."})


@dataclass
class BenchForm:
    names: list[str] = field(default_factory=list, metadata={
        "help": "Models to measure, one after another (comma-separated)."})
    adapter: str | None = field(default=None, metadata={"help": "Adapter folder or run id."})
    prompt_tokens: int = field(default=128, metadata={"help": "Prompt length."})
    generation_tokens: int = field(default=64, metadata={"help": "Tokens to generate."})
    trials: int = field(default=2, metadata={"help": "Trials (the best counts)."})


# action -> (title, form dataclass, the positional arguments of its command)
ACTIONS = {
    "add": ("Add", AddForm, ("name", "source")),
    "quantize": ("Quantize", QuantizeForm, ("name",)),
    "fuse": ("Fuse an adapter", FuseForm, ("name",)),
    "extract-text": ("Extract text backbone", ExtractForm, ("src", "name")),
    "bench": ("Benchmark", BenchForm, ("names",)),
}
CHOICES = {"quantize": {"name": [], "bits": ["4", "8"]}, "fuse": {"run": []}}


def model_command(action: str, values: dict) -> str:
    """The `clara model ...` command of an action's form values."""
    positional = ACTIONS[action][2]
    words = ["clara", "model", action]
    for key in positional:
        value = values.get(key)
        if isinstance(value, list):
            words += [str(v) for v in value] or [key.upper()]
        else:
            words.append(str(value) if value else key.upper())
    flags = {k: v for k, v in values.items() if k not in positional and v not in (None, "")}
    return command_line(words, flags)


def run_action(ws, action: str, values: dict) -> str:
    """What the command does, through the same library functions; returns its one-line result."""
    from pathlib import Path

    from clara.models.registry import model_source

    if action == "add":
        from clara.models.registry import add_model

        if not values.get("name") or not values.get("source"):
            raise UserError("add: give a name and a source")
        info = add_model(ws, values["name"], values["source"])
        return f"added model {values['name']} ({info.get('model_type')})"
    if action == "quantize":
        from clara.models.quantize import quantize_folder

        if not values.get("name"):
            raise UserError("quantize: choose a model")
        bits = int(values.get("bits") or 4)
        out = values.get("out") or f"{values['name']}-q{bits}"
        quantize_folder(Path(model_source(ws, values["name"])), ws.child("models", out), bits,
                        values.get("group_size") or 64)
        return f"quantized {values['name']} to {bits}-bit -> model {out}"
    if action == "fuse":
        from clara import refs
        from clara.models.fuse import fuse_adapter

        if not values.get("name") or not values.get("run"):
            raise UserError("fuse: give the new model's name and choose a run")
        found = refs.resolve(ws, values["run"], want=refs.LORA)
        folder = found.path
        base = values.get("base") or found.base
        fuse_adapter(model_source(ws, base), folder, ws.child("models", values["name"]),
                     bool(values.get("dequantize")))
        return f"fused {values['run']} into {base} -> model {values['name']}"
    if action == "extract-text":
        from clara.models.extract import extract_text

        if not values.get("src") or not values.get("name"):
            raise UserError("extract-text: give a source folder and a name")
        dest = ws.child("models", values["name"])
        if dest.exists():
            raise UserError(f"model {values['name']!r} already exists in workspace {ws.name}")
        report = extract_text(values["src"], dest).to_dict()
        return f"extracted {report['text_type']} ({report['kept']} tensors) -> {values['name']}"
    if action == "bench":
        from clara import refs
        from clara.models.bench import bench_model

        names = values.get("names") or []
        if not names:
            raise UserError("bench: name at least one model")
        adapter = values.get("adapter")
        adapter = str(refs.resolve(ws, adapter, want=refs.LORA).path) if adapter else None
        lines = []
        for name in names:
            r = bench_model(model_source(ws, name), adapter, values.get("prompt_tokens") or 128,
                            values.get("generation_tokens") or 64,
                            values.get("trials") or 2).to_dict()
            lines.append(f"{name}: load {r.get('load_seconds', 0):.2f}s · prompt "
                         f"{r.get('prompt_tokens_per_second', 0):.0f} tok/s · generation "
                         f"{r.get('generation_tokens_per_second', 0):.1f} tok/s · peak "
                         f"{r.get('peak_memory_gb', 0):.2f} GB")
        return "\n".join(lines)
    raise UserError(f"unknown action {action!r}")


class ModelsScreen(ModeScreen):
    TITLE = "Models"
    CSS_PATH = "models.tcss"
    BINDINGS = [
        Binding("ctrl+l", "run_action", "Run action", priority=True),
        Binding("f6", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self._to_form = False  # the action was picked in the palette: its first field next

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="models-body"):
            with Vertical(id="models-list"):
                yield Table(id="models", cursor_type="row", zebra_stripes=True)
                yield Static("", id="models-status", classes="muted")
            with Vertical(id="models-action", classes="panel"):
                with Horizontal(classes="toolbar"):
                    yield Label("Action ")
                    yield Select([(title, key) for key, (title, _c, _p) in ACTIONS.items()],
                                 value="add", allow_blank=False, id="model-action", compact=True)
                with ContentSwitcher(id="model-forms", initial="model-form-add"):
                    for key, (_title, cls, _p) in ACTIONS.items():
                        yield ConfigForm(cls, choices=dict(CHOICES.get(key, {})),
                                         id=f"model-form-{key}", classes="stacked")
                yield LiveText("", id="model-command", classes="command-line")
                # its own row: a benchmark's lines (one per model) were wrapped into the few
                # columns beside the button
                yield Static("", id="model-result")
                with Horizontal(classes="form-buttons"):
                    yield Button("Run  (ctrl+l)", id="model-run", variant="primary")

    def on_mount(self) -> None:
        table = self.query_one("#models", DataTable)
        for key, title in (("name", "model"), ("kind", "kind"), ("model_type", "type"),
                           ("layers", "layers"), ("hidden_size", "hidden"),
                           ("quantization", "quant"), ("bytes", "size")):
            table.add_column(title, key=key)

    def reload(self) -> None:
        self._load()

    def on_resume(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="models-load", exit_on_error=False)
    def _load(self) -> None:
        from clara.models.registry import list_models
        from clara.runs import list_runs

        ws = self.app.workspace
        models = list_models(ws) if ws else []
        runs = [r.id for r in reversed(list_runs(ws))] if ws else []
        self.app.call_from_thread(self._fill, models, runs)

    def _fill(self, models: list[dict], runs: list[str]) -> None:
        if self.unchanged("models", (self.app.workspace_name, models, runs)):
            return
        table = self.query_one("#models", DataTable)
        table.clear()
        for m in models:
            table.add_row(m.get("name", "?"), str(m.get("kind") or "-"),
                          str(m.get("model_type") or "-"), str(m.get("layers") or "-"),
                          str(m.get("hidden_size") or "-"), str(m.get("quantization") or "-"),
                          human_size(m["bytes"]) if m.get("bytes") else "-", key=m.get("name"))
        self.query_one("#models-status", Static).update(
            f"{len(models)} model(s)" if models else
            "no models yet: add one (Action: Add), or build one: clara model init-tiny")
        names = [m.get("name") for m in models if m.get("name")]
        self.query_one("#model-form-quantize", ConfigForm).set_choices("name", names)
        self.query_one("#model-form-fuse", ConfigForm).set_choices("run", runs)
        self._show_command()

    @property
    def action(self) -> str:
        return str(self.query_one("#model-action", Select).value)

    @on(Select.Changed, "#model-action")
    def _action_changed(self, event: Select.Changed) -> None:
        self.query_one("#model-forms", ContentSwitcher).current = f"model-form-{self.action}"
        self._show_command()
        if not self.running:  # the last action's result (or error) is not this one's
            self._say("")
        focused, to_form, self._to_form = self.focused, self._to_form, False
        form = self.query_one(f"#model-form-{self.action}", ConfigForm)
        hidden = focused is not None and any(isinstance(a, ConfigForm) and a is not form
                                             for a in focused.ancestors)
        if not (to_form or hidden or focused is not None and (
                focused is event.select or event.select in focused.ancestors)):
            return
        # chosen by keys or in the palette, or the focus was left in the form now hidden: its
        # first field (a name typed at once was lost on the list, or in the hidden form)
        self._focus_form()

    def _focus_form(self) -> None:
        form = self.query_one(f"#model-form-{self.action}", ConfigForm)
        for widget in self.focus_chain:
            if form in widget.ancestors:
                widget.focus()
                break

    @on(ConfigForm.Changed)
    def _form_changed(self) -> None:
        self._show_command()
        result = self.query_one("#model-result", Static)
        if result.has_class("field-error"):  # it said what was missing: no longer true
            self._say("")

    def _show_command(self) -> None:
        try:
            values = self.query_one(f"#model-form-{self.action}", ConfigForm).raw_values()
            text = model_command(self.action, values)
        except UserError as e:
            text = f"not valid yet: {e}"
        self.query_one("#model-command", Static).update(text)

    def _say(self, text: str, error: bool = False) -> None:
        result = self.query_one("#model-result", Static)
        result.set_class(error, "field-error")
        result.update(text)

    @on(Button.Pressed, "#model-run")
    @on(ConfigForm.Submitted)
    def action_run_action(self) -> None:
        if self.app.workspace is None:
            self._say("open a workspace first (F2)", error=True)
            return
        if self.running:
            self._say("an action is running", error=True)
            return
        try:
            values = self.query_one(f"#model-form-{self.action}", ConfigForm).raw_values()
        except UserError as e:
            self._say(str(e), error=True)
            return
        self.running = True
        self.query_one("#model-run", Button).disabled = True
        self._say(f"{ACTIONS[self.action][0].lower()} …")
        self._run(self.action, values)

    @work(thread=True, exclusive=True, group="model-action", exit_on_error=False)
    def _run(self, action: str, values: dict) -> None:
        try:
            message = run_action(self.app.workspace, action, values)
        except UserError as e:
            self.app.call_from_thread(self._finished, str(e), True)
            return
        except BaseException as e:
            self.app.call_from_thread(self._finished, f"failed: {type(e).__name__}", True)
            raise
        self.app.call_from_thread(self._finished, message, False)

    def _finished(self, message: str, error: bool) -> None:
        self.running = False
        self.query_one("#model-run", Button).disabled = False
        self._say(message, error)
        if not error:
            self.notify(message.splitlines()[0], title="Models", timeout=3)
            self._load()

    def palette_commands(self):
        for key, (title, _cls, _p) in ACTIONS.items():
            yield SystemCommand(f"Models: {title}", f"clara model {key}",
                                lambda k=key: self._pick(k))

    def _pick(self, key: str) -> None:
        if self.action == key:  # no change to wait for
            self._focus_form()
            return
        self._to_form = True
        self.query_one("#model-action", Select).value = key
