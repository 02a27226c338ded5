"""Train mode: a form per training kind with its defaults, a live preview of the effective
configuration (the library's own merge and validation), and launch."""

from __future__ import annotations

import dataclasses

import tomli_w
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Label, Static, TabbedContent, TabPane

from clara.errors import ClaraError
from clara.train.config import TrainConfig, merge_config
from tui.screens.base import ClaraScreen
from tui.widgets.config_form import ConfigForm

# Fields shown first: what a user must choose before anything else.
LORA_FIRST = ("model", "data", "mode", "fine_tune_type", "iters", "epochs", "batch_size",
              "learning_rate", "max_seq_length", "lora_rank", "val_every", "save_every")
LORA_CHOICES = {"model": [], "data": [], "mode": ["sft", "cpt"],
                "fine_tune_type": ["lora", "dora", "full"], "lr_schedule": ["cosine", "constant"],
                "dtype": ["float32", "bfloat16", "float16"]}


def effective_config(form: ConfigForm) -> tuple[dict | None, str]:
    """(config dict, TOML text) from the form through the library's merge; or (None, error)."""
    try:
        overrides = form.raw_values()
        cfg = merge_config(form.config_cls, overrides=overrides)
    except ClaraError as e:
        return None, f"not valid yet: {e}"
    data = dataclasses.asdict(cfg)
    return data, tomli_w.dumps({k: v for k, v in data.items() if v is not None})


class TrainScreen(ClaraScreen):
    TITLE = "Train"
    CSS_PATH = "train.tcss"
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("f6", "reload", "Refresh"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="train-body"):
            with TabbedContent(id="train-kinds"):
                with TabPane("LoRA (CPT / SFT)", id="kind-lora"):
                    yield ConfigForm(TrainConfig, choices=LORA_CHOICES, first=LORA_FIRST,
                                     id="form-lora")
            with Vertical(id="train-side"):
                yield Label("Effective configuration", classes="section-title")
                with VerticalScroll(id="preview-scroll", classes="panel"):
                    yield Static("", id="preview", markup=False)
                yield Static("", id="train-status")
                yield Button("Launch  (ctrl+l)", id="launch", variant="success")

    def reload(self) -> None:
        self._load_choices()

    def action_reload(self) -> None:
        self.reload()

    def on_resume(self) -> None:
        self._load_choices()

    @work(thread=True, exclusive=True, group="train-choices", exit_on_error=False)
    def _load_choices(self) -> None:
        ws = self.app.workspace
        models = [p.name for p in ws.items("models")] if ws else []
        datasets = [p.name for p in ws.items("datasets")] if ws else []
        self.app.call_from_thread(self._set_choices, models, datasets)

    def _set_choices(self, models: list[str], datasets: list[str]) -> None:
        form = self.query_one("#form-lora", ConfigForm)
        form.set_choices("model", models)
        form.set_choices("data", datasets)
        self._update_preview(form)

    @on(ConfigForm.Changed)
    def _changed(self, event: ConfigForm.Changed) -> None:
        self._update_preview(event.form)

    def _update_preview(self, form: ConfigForm) -> None:
        data, text = effective_config(form)
        self.query_one("#preview", Static).update(text)
        self.query_one("#launch", Button).disabled = data is None or self.app.workspace is None

    def current_form(self) -> ConfigForm:
        return self.query_one("#form-lora", ConfigForm)

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        if self.app.workspace is None:
            self.app.show_error("open a workspace first (F2)")
            return
        data, text = effective_config(self.current_form())
        if data is None:
            self.app.show_error(text)
            return
        self.query_one("#train-status", Static).update("launching …")
        self._launch("lora", data)

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False)
    def _launch(self, kind: str, config: dict) -> None:
        """Make the run folder and start its worker process, as `clara train lora --detach`."""
        from clara.cli.train import resolve_data
        from clara.models.registry import model_source
        from clara.runs import create_run, start_worker

        ws = self.app.workspace
        if config.get("from_adapter"):
            raise ClaraError("from_adapter: start runs that continue an adapter with "
                             "`clara train lora --from-adapter` for now")
        resolved = {"model": model_source(ws, config["model"]),
                    "data": str(resolve_data(ws, config["data"]))}
        run = create_run(ws, kind, config, resolved=resolved)
        start_worker(run, detach=True)  # its own session: it outlives the app
        self.app.call_from_thread(self._launched, run.id)

    def _launched(self, run_id: str) -> None:
        self.query_one("#train-status", Static).update(f"launched run {run_id}")
        self.notify(f"run {run_id} started", title="Train", timeout=3)
        self.app.switch_mode("runs")

    def palette_commands(self):
        yield SystemCommand("Launch training", "Start a run with this form's settings",
                            self.action_launch)
