"""Train mode: a form per training kind (LoRA CPT/SFT, CLaRa stage 1, 2, 3 and the pipeline)
with its defaults, a live preview of the effective configuration (the library's own merge and
validation), and launch. Launched runs are worker processes of their own: they outlive the app,
and the Runs screen follows them."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static, TabbedContent, TabPane

from clara.errors import UserError
from clara.method.config import CENTER_CHOICES, NEGATIVE_CHOICES
from clara.train.config import TrainConfig
from tui.command import command_line
from tui.screens.base import ModeScreen
from tui.widgets.config_form import ConfigForm
from tui.widgets.live_text import LiveText
from tui.widgets.path_input import PathInput

STAGES = ("stage1", "stage2", "stage3")
KINDS = ("lora", *STAGES, "pipeline")
KIND_TITLES = {"lora": "LoRA (CPT / SFT)", "stage1": "CLaRa 1", "stage2": "CLaRa 2",
               "stage3": "CLaRa 3", "pipeline": "Pipeline 1→2→3"}
KIND_HELP = {
    "lora": "Fine-tune a model with LoRA, DoRA or all weights on text (cpt) or chat (sft) rows.",
    "stage1": "CLaRa stage 1: the compressor learns to keep a document's content in a few "
              "memory vectors (QA and paraphrase).",
    "stage2": "CLaRa stage 2: answer from top_k compressed documents; keeps the compressor of "
              "init_from, starts a fresh generator.",
    "stage3": "CLaRa stage 3: the query reasoner picks top_k of the candidates end to end "
              "(init_from: a stage-2 run).",
    "pipeline": "Stage 1, then 2 from stage 1's best checkpoint, then 3 from stage 2's: three "
                "runs from one form (datasets PREFIX-stage1..3).",
}

# Fields shown first: what a user must choose before anything else.
LORA_FIRST = ("model", "data", "mode", "fine_tune_type", "from_adapter", "iters", "epochs",
              "batch_size", "learning_rate", "max_seq_length", "lora_rank", "val_every",
              "save_every")
LORA_CHOICES = {"model": [], "data": [], "from_adapter": [], "mode": ["sft", "cpt"],
                "fine_tune_type": ["lora", "dora", "full"], "lr_schedule": ["cosine", "constant"],
                "dtype": ["float32", "bfloat16", "float16"],
                "backend": ["auto", "ring", "jaccl", "mpi", "nccl"]}
CLARA_FIRST = ("model", "data", "init_from", "iters", "epochs", "batch_size", "learning_rate",
               "compression_rate", "doc_max_tokens", "top_k", "max_len", "lora_rank",
               "val_every", "save_every")
CLARA_CHOICES = {"model": [], "data": [], "init_from": [], "lr_schedule": ["cosine", "constant"],
                 "backend": LORA_CHOICES["backend"], "retrieval_center": list(CENTER_CHOICES),
                 "stage3_negatives": list(NEGATIVE_CHOICES)}
# Settings a tiny model on a CPU trains with in minutes (a preset of clara/presets/).
CLARA_PRESET = "clara-cpu-tiny"
PIPELINE_FIRST = ("model", "data", "stage1_iters", "stage2_iters", "stage3_iters", "top_k",
                  "batch_size", "learning_rate", "compression_rate", "doc_max_tokens")


def _pipeline_config_class():
    """The pipeline form: a dataset prefix, per-stage steps/epochs/lr, then the shared
    ClaraTrainConfig settings (the same split `clara train pipeline` makes in its flags)."""
    from clara.method.config import ClaraTrainConfig

    own = [("data", str, field(default="", metadata={
        "help": "Dataset prefix: uses PREFIX-stage1, PREFIX-stage2, PREFIX-stage3."}))]
    for n in (1, 2, 3):
        own += [(f"stage{n}_iters", "int | None", field(default=None, metadata={
                    "help": f"Optimizer steps of stage {n} (default: iters)."})),
                (f"stage{n}_epochs", "float | None", field(default=None, metadata={
                    "help": f"Epochs of stage {n} (default: epochs)."})),
                (f"stage{n}_lr", "float | None", field(default=None, metadata={
                    "help": f"Learning rate of stage {n} (default: learning_rate)."}))]
    own.append(("top_k", "int | None", field(default=None, metadata={
        "help": "Candidates stage 3 selects (default: stage 2's documents per row)."})))
    names = {n for n, _, _ in own}
    shared = []
    for f in dataclasses.fields(ClaraTrainConfig):
        if f.name in names or f.name == "init_from":
            continue
        kw = ({"default": f.default} if f.default is not dataclasses.MISSING
              else {"default_factory": f.default_factory})
        shared.append((f.name, f.type, field(metadata=f.metadata, **kw)))
    return dataclasses.make_dataclass("PipelineForm", own + shared)


# -- what each kind makes of its form: the library's plan (clara.plan) and its preview --------
def effective_config(kind: str, form: ConfigForm, ws=None) -> tuple[dict | None, str]:
    """(the form's values to launch with, the plan's TOML preview); or (None, error). The
    preview checks what the launch will (settings, model, starting checkpoint, data kind)
    except reading every row, which the launch does."""
    try:
        values = form.raw_values()
    except UserError as e:
        return None, f"not valid yet: {e}"
    return plan_values(kind, values, ws, tuple(f.name for f in form.fields))


def plan_values(kind: str, values: dict, ws, first: tuple[str, ...] = ()
                ) -> tuple[dict | None, str]:
    """`effective_config` from values already read off the form: it reads the model's and the
    dataset's files, so the app calls it in a thread worker."""
    from clara.plan import plan_lora, plan_pipeline, plan_stage, split_pipeline_values

    try:
        if kind == "lora":
            plan = plan_lora(ws, values, check_data=False)
        elif kind in STAGES:
            plan = plan_stage(ws, kind, values, check_data=False)
        else:
            shared, per_stage, prefix, _ = split_pipeline_values(values)
            plan = plan_pipeline(ws, shared, per_stage, prefix, check_data=False)
            return {"values": shared, "per_stage": per_stage, "prefix": prefix}, plan.preview()
    except UserError as e:
        return None, f"not valid yet: {e}"
    return values, plan.preview(first=first)


# -- launching: the library pieces the `clara train ...` commands call ------------------------
def launch_lora(ws, config: dict):
    from clara.runs import start_worker
    from clara.train.launch import lora_run

    run = lora_run(ws, config)  # resolves model, data and from_adapter (a run id or folder)
    start_worker(run, detach=True)  # its own session: it outlives the app
    return run


def launch_stage(ws, stage: str, config: dict):
    """A CLaRa stage run, started in the background (as `clara train stageN --detach`)."""
    from clara.method.launch import stage_run
    from clara.runs import start_worker

    run = stage_run(ws, stage, config)
    start_worker(run, detach=True)
    return run


def launch_pipeline(ws, plan: dict):
    """A pipeline, started in the background (as `clara train pipeline --detach`)."""
    from clara.method.launch import pipeline
    from clara.method.pipeline import start_driver

    pipe = pipeline(ws, plan["values"], plan["per_stage"], prefix=plan["prefix"])
    start_driver(pipe)
    return pipe


class TrainScreen(ModeScreen):
    TITLE = "Train"
    CSS_PATH = "train.tcss"
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("ctrl+s", "save_settings", "Save settings"),
        Binding("ctrl+r", "load_settings", "Load settings"),
        Binding("f6", "reload", "Refresh"),
    ]

    launched: tuple[str, str] | None = None  # (what, id) of the last launch, to report its fate

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="train-body"):
            with TabbedContent(id="train-kinds"):
                with TabPane(KIND_TITLES["lora"], id="kind-lora"):
                    yield Static(KIND_HELP["lora"], classes="kind-help")
                    yield ConfigForm(TrainConfig, choices=LORA_CHOICES, first=LORA_FIRST,
                                     id="form-lora")
                # CLaRa's config lives beside the method, whose import takes seconds: its
                # forms are mounted by a worker once it is loaded
                for kind in (*STAGES, "pipeline"):
                    with TabPane(KIND_TITLES[kind], id=f"kind-{kind}"):
                        yield Static(KIND_HELP[kind], classes="kind-help")
                        yield Static("loading the CLaRa settings …", classes="form-loading")
            with Vertical(id="train-side"):
                yield Label("Effective configuration", classes="section-title")
                with VerticalScroll(id="preview-scroll", classes="panel", can_focus=False):
                    yield LiveText("", id="preview", markup=False)
                yield Label("The same from the shell", classes="section-title")
                yield LiveText("", id="train-command", classes="command-line", markup=False)
                yield PathInput(id="settings-path", suffixes=(".toml",),
                                placeholder="file.toml  ^s save · ^r load")
                yield Static("", id="train-status")
                estimate = LiveText("", id="train-estimate", markup=False)  # clara.train.estimate
                estimate.display = False
                yield estimate
                yield Button("Launch  (ctrl+l)", id="launch", variant="success")

    def on_mount(self) -> None:
        self._kinds = self.query_one("#train-kinds", TabbedContent)
        self._forms: dict[str, ConfigForm] = {"lora": self.query_one("#form-lora", ConfigForm)}
        self._choices_shown: tuple | None = None
        self._mounting: set[str] = set()  # CLaRa forms being mounted
        self._load_clara_forms()

    @work(thread=True, exclusive=True, group="train-clara-forms", exit_on_error=False)
    def _load_clara_forms(self) -> None:
        from clara import presets
        from clara.method.config import ClaraTrainConfig

        self.app.call_from_thread(self._clara_loaded, ClaraTrainConfig,
                                  _pipeline_config_class(), presets.load(CLARA_PRESET))

    def _clara_loaded(self, stage_cls, pipeline_cls, preset: dict) -> None:
        """The CLaRa settings are loaded: a kind's form is mounted when its tab is first shown.
        Mounting all four at once (hundreds of fields) held the event loop for 0.5-1 s right
        after Train's first visit, whatever mode the user had gone on to."""
        self._clara = (stage_cls, pipeline_cls, preset)
        self.clara_ready = True
        for kind in (*STAGES, "pipeline"):
            self.query_one(f"#kind-{kind}").query(".form-loading").remove()
        if self.kind != "lora":
            self.call_later(self._mount_clara_form, self.kind)

    async def _mount_clara_form(self, kind: str) -> None:
        if kind in self._forms or kind in self._mounting or not self.clara_ready:
            return
        self._mounting.add(kind)
        stage_cls, pipeline_cls, preset = self._clara
        if kind == "pipeline":
            form = ConfigForm(pipeline_cls, choices=dict(CLARA_CHOICES),
                              first=PIPELINE_FIRST, values=preset, id="form-pipeline")
        else:
            form = ConfigForm(stage_cls, choices=dict(CLARA_CHOICES), first=CLARA_FIRST,
                              hidden=("init_from",) if kind == "stage1" else (),
                              values=preset, id=f"form-{kind}")
        await self.query_one(f"#kind-{kind}", TabPane).mount(form)  # composed, then choices
        self._forms[kind] = form
        self._mounting.discard(kind)
        self._choices_shown = None
        self._load_choices()

    clara_ready = False

    def reload(self) -> None:
        self._load_choices()

    def on_resume(self) -> None:
        self._load_choices()
        if self.launched:
            self._check_launched(self.launched[1])

    @work(thread=True, exclusive=True, group="train-launched", exit_on_error=False)
    def _check_launched(self, run_id: str) -> None:
        """The status line follows the last launch: it does not say "launched" once it failed."""
        from clara.runs import ACTIVE, Run

        ws = self.app.workspace
        status = Run(ws.runs_dir / run_id).status() if ws else {}
        state = status.get("status")
        if state and state not in ACTIVE:
            message = status.get("message") or ""
            self.app.call_from_thread(
                self._say, f"run {run_id} {state}" + (f": {message}" if message else ""),
                state == "failed")

    @property
    def kind(self) -> str:
        active = self._kinds.active or "kind-lora"
        return active.removeprefix("kind-")

    def current_form(self) -> ConfigForm | None:
        """The form of the kind shown (kept in a dict: a query walks every field of every
        form, and this runs on each keystroke)."""
        return self._forms.get(self.kind)

    @work(thread=True, exclusive=True, group="train-choices", exit_on_error=False)
    def _load_choices(self) -> None:
        from clara.data.datasets import list_datasets

        from clara import refs

        ws = self.app.workspace
        models = [p.name for p in ws.items("models")] if ws else []
        datasets = {d["name"]: d["kind"] for d in list_datasets(ws)} if ws else {}
        by_kind: dict[str, list[str]] = {}  # usable checkpoints only, newest first
        for kind in ("lora", *(f"clara-{s}" for s in STAGES)):
            by_kind[kind] = refs.usable(ws, run_kinds=(kind,)) if ws else []
        self.app.call_from_thread(self._set_choices, models, datasets, by_kind)

    def _set_choices(self, models: list[str], kinds: dict[str, str],
                     runs: dict[str, list[str]]) -> None:
        shown = (models, kinds, runs, self.clara_ready)
        if shown == self._choices_shown:  # a mode switched to again: nothing to redo
            return
        self._choices_shown = shown
        datasets = list(kinds)
        for kind, form in self._forms.items():
            if not form.query("#field-model"):  # mounted, its fields not yet composed
                continue
            form.set_choices("model", models)
            model = form.query_one("#field-model", Select)
            if model.value is Select.NULL and models:  # the usual choice, ready to go
                model.value = "tiny" if "tiny" in models else models[0]
            if kind == "lora":
                # LoRA trains on text and chat rows, not on QA sets or CLaRa's stage rows
                form.set_choices("data", [d for d, k in kinds.items()
                                          if k not in (*STAGES, "docs", "qa")])
                form.set_choices("from_adapter", runs.get("lora", []))
            elif kind == "pipeline":
                names = set(datasets)
                prefixes = sorted({d[: -len("-stage1")] for d in datasets
                                   if d.endswith("-stage1") and all(
                                       d[: -len("-stage1")] + f"-{s}" in names for s in STAGES)})
                form.set_choices("data", prefixes)
            else:
                # this stage's datasets first (PREFIX-stageN), then the others
                mine = [d for d, k in kinds.items() if k == kind or d.endswith(f"-{kind}")]
                form.set_choices("data", mine or datasets)
                if kind != "stage1":
                    previous = STAGES[STAGES.index(kind) - 1]
                    form.set_choices("init_from", runs.get(f"clara-{previous}", []))
        self._update_preview()

    @on(ConfigForm.Changed)
    def _changed(self, event: ConfigForm.Changed) -> None:
        if event.form is self.current_form():
            status = self.query_one("#train-status", Static)
            if status.has_class("field-error"):  # why the last launch was refused: stale now
                self._say("")
            self._update_preview()

    @on(TabbedContent.TabActivated, "#train-kinds")
    async def _kind_changed(self, event: TabbedContent.TabActivated) -> None:
        if self.kind not in self._forms:
            await self._mount_clara_form(self.kind)
        self._update_preview()

    def _update_preview(self) -> None:
        """Read the form (here: widgets belong to the event loop), plan it in a worker (the plan
        reads the model's and the dataset's files)."""
        form = self.current_form()
        if form is None:
            self.query_one("#preview", Static).update("")
            self.query_one("#train-command", Static).update("")
            self.query_one("#launch", Button).disabled = True
            return
        self.query_one("#train-command", Static).update(self.command(form))
        try:
            values = form.raw_values()
        except UserError as e:
            self._show_preview(None, f"not valid yet: {e}")
            return
        self._plan(self.kind, values, tuple(f.name for f in form.fields))

    def _show_preview(self, data: dict | None, text: str) -> None:
        self.query_one("#preview", Static).update(text)
        self.query_one("#launch", Button).disabled = data is None or self.app.workspace is None

    @work(thread=True, exclusive=True, group="estimate", exit_on_error=False)
    def _plan(self, kind: str, values: dict, first: tuple[str, ...]) -> None:
        """The preview (the library's plan of the form's values), then one line: the run's
        estimated peak memory and time per step (none while the form has no model, or for a
        whole pipeline). Exclusive: a newer keystroke's plan replaces this one."""
        from textual.worker import get_current_worker

        data, text = plan_values(kind, values, self.app.workspace, first)
        if get_current_worker().is_cancelled:
            return
        self.app.call_from_thread(self._show_preview, data, text)
        line = ""
        if data and kind != "pipeline" and self.app.workspace is not None:
            from clara.train.estimate import estimate_request

            try:
                est = estimate_request(self.app.workspace, kind, dict(data))
                line = est.form_line()  # the peak, on CUDA its low end too
            except Exception:  # an incomplete form: the preview already says what is wrong
                line = ""

        def show() -> None:
            widget = self.query_one("#train-estimate", Static)
            widget.update(line)
            widget.display = bool(line)

        self.app.call_from_thread(show)

    def command(self, form: ConfigForm) -> str:
        """The `clara train ...` command this form stands for (copyable)."""
        try:
            values = form.changed_values()
        except UserError as e:
            return f"not valid yet: {e}"
        if "init_from" in values:
            values["from"] = values.pop("init_from")
        return command_line(["clara", "train", self.kind], values,
                            short={"model": "-m", "data": "-d"})

    def _say(self, text: str, error: bool = False) -> None:
        status = self.query_one("#train-status", Static)
        status.set_class(error, "field-error")
        status.update(text)

    @on(ConfigForm.Submitted)
    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        """ctrl+l, Enter in a field, or the button: launch, or say why not beside the button."""
        if self.app.workspace is None:
            self._say("open a workspace first (F2)", error=True)
            return
        kind, form = self.kind, self.current_form()
        if form is None:
            return
        data, text = effective_config(kind, form, self.app.workspace)
        if data is None:
            self._say(text, error=True)
            return
        self._say("launching …")
        self._launch(kind, data)

    # -- settings files (the CLI reads the same TOML with --config) -------------------------------
    _settings_wanted: str | None = None  # ctrl+s or ctrl+r asked for a path: Enter in it does that

    def _settings_file(self, wanted: str):
        from pathlib import Path

        field = self.query_one("#settings-path", PathInput)
        text = field.value.strip()
        self._settings_wanted = None if text else wanted
        if not text:
            field.focus()  # where to type it: the field was out of the way of a keyboard user
            raise UserError(f"settings file: type a path first (e.g. my-lora.toml), then Enter "
                            f"{wanted}s")
        path = Path(text).expanduser()
        if not path.is_absolute() and self.app.workspace is not None:
            path = self.app.workspace.path / path
        return path

    def action_save_settings(self) -> None:
        from clara import io

        form = self.current_form()
        try:
            path = self._settings_file("save")
            values = form.changed_values() if form else {}
            io.write_toml(path, {k: v for k, v in values.items() if v is not None})
        except UserError as e:
            self._say(str(e), error=True)
            return
        # the whole path: a relative one is under the workspace, not where a shell would be
        self._say(f"saved {len(values)} setting(s) to {path.name} (clara train {self.kind} "
                  f"--config {path})")

    def action_load_settings(self) -> None:
        from clara import io

        form = self.current_form()
        if form is None:
            return
        try:
            path = self._settings_file("load")
            if not path.is_file():
                raise UserError(f"{path}: no such file")
            values = io.read_toml(path)
            names = {f.name for f in form.fields}
            unknown = sorted(set(values) - names)
            if unknown:
                raise UserError(f"{path.name}: {unknown[0]}: not a setting of {self.kind}")
            for key, value in values.items():
                form.set_value(key, value)
        except UserError as e:
            self._say(str(e), error=True)
            return
        self._say(f"loaded {len(values)} setting(s) from {path.name}")

    @on(Input.Submitted, "#settings-path")
    def _settings_entered(self, event) -> None:
        """Enter in the settings file's field: what ctrl+s or ctrl+r asked it for, else says
        which key does what (Enter did nothing: a path typed after ctrl+s was not saved)."""
        event.stop()
        wanted, self._settings_wanted = self._settings_wanted, None
        if wanted == "save":
            self.action_save_settings()
        elif wanted == "load":
            self.action_load_settings()
        else:
            self._say("settings file: ctrl+s saves the form to it, ctrl+r loads it", error=True)

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False)
    def _launch(self, kind: str, config: dict) -> None:
        ws = self.app.workspace
        try:
            if kind == "lora":
                run_id = launch_lora(ws, config).id
            elif kind in STAGES:
                run_id = launch_stage(ws, kind, config).id
            else:
                run_id = f"{launch_pipeline(ws, config).id}-stage1"
        except UserError as e:  # refused before any run folder: said here, the form stays
            self.app.call_from_thread(self._say, f"not launched: {e}", True)
            return
        except BaseException:
            self.app.call_from_thread(self._say, "")
            raise
        self.app.call_from_thread(self._launched, kind, run_id)

    def _launched(self, kind: str, run_id: str) -> None:
        what = "pipeline" if kind == "pipeline" else "run"
        shown = run_id.removesuffix("-stage1") if kind == "pipeline" else run_id
        self.launched = (what, run_id)
        from clara.runs import Run

        # what the run's creation switched on to fit the device (clara.train.estimate.auto_fit)
        fitted = Run(self.app.workspace.runs_dir / run_id).config().get("auto_fit") \
            if self.app.workspace and what == "run" else None  # a pipeline's stages come later
        self._say(f"launched {what} {shown}" + (f"; {fitted}" if fitted else ""))
        self.notify(f"{what} {shown} started", title="Train", timeout=3)
        self.app.follow_run = run_id  # the Runs screen selects it once it appears
        self.app.switch_mode("runs")

    def palette_commands(self):
        yield SystemCommand("Launch training", "Start a run with this form's settings",
                            self.action_launch)
        for kind in KINDS:
            yield SystemCommand(f"Train: {KIND_TITLES[kind]}", KIND_HELP[kind],
                                lambda k=kind: self._show_kind(k))

    def _show_kind(self, kind: str) -> None:
        self.query_one("#train-kinds", TabbedContent).active = f"kind-{kind}"
