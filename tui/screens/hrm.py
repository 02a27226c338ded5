"""HRM mode: train HRM/TRM on a puzzle dataset, follow its runs' puzzle metrics, and watch a
trained run solve a test puzzle segment by segment (the grid filling in).

The logic lives in the library (`clara.hrm.config.hrm_run`, `clara.hrm.infer.solve_trace`,
`clara.hrm.data.render`); this screen only lays it out."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static, TabbedContent, TabPane

from clara.errors import UserError
from clara.hrm.config import HRMTrainConfig
from tui.screens.base import ModeScreen
from tui.widgets.config_form import ConfigForm
from tui.widgets.live_text import LiveText, TextInput
from tui.widgets.metric import MetricSparkline

FIRST = ("data", "variant", "iters", "batch_size", "learning_rate", "hidden_size", "num_heads",
         "H_layers", "L_layers", "H_cycles", "L_cycles", "halt_max_steps", "val_every")
CHOICES = {"data": [], "variant": ["hrm", "trm"], "pos_encodings": ["rope", "learned"],
           "lr_schedule": ["cosine", "constant"], "dtype": ["float32", "bfloat16"]}
# a CPU trains a small Sudoku model in minutes with these
VALUES = {"hidden_size": 64, "num_heads": 2, "H_layers": 1, "L_layers": 1, "halt_max_steps": 4,
          "learning_rate": 3e-3, "iters": 600, "batch_size": 64, "warmup_steps": 20,
          "val_every": 100, "weight_decay": 0.1}
SERIES = (("val_exact_accuracy", "exact (valid)"), ("val_token_accuracy", "token (valid)"),
          ("train_steps", "ACT steps (train)"), ("train_q_halt_accuracy", "q-halt acc (train)"))


def hrm_config(values: dict) -> dict:
    """The effective configuration of the form (the library's merge and checks)."""
    from clara.train.config import merge_config

    cfg = merge_config(HRMTrainConfig, overrides=values)
    return asdict(cfg)


class HRMScreen(ModeScreen):
    TITLE = "HRM"
    DEFAULT_CSS = """
    #hrm-tabs { height: 1fr; }
    #hrm-body { height: 1fr; }
    #hrm-left { width: 1fr; }
    #hrm-right { width: 1fr; }
    #hrm-grid { border: round $accent; padding: 0 1; min-height: 12; }
    #hrm-seg-info { height: auto; }
    .hrm-row { height: auto; }
    """
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("f6", "reload", "Refresh"),
        Binding("left_square_bracket", "segment(-1)", "Prev segment"),
        Binding("right_square_bracket", "segment(1)", "Next segment"),
    ]

    trace: list[dict] = []
    meta: dict = {}
    puzzle: list[int] = []
    seg = 0

    def compose_body(self) -> ComposeResult:
        with TabbedContent(id="hrm-tabs"):
            with TabPane("Train", id="hrm-train"):
                with Horizontal(id="hrm-body"):
                    with VerticalScroll(id="hrm-left", can_focus=False):  # its form fields do
                        yield Static("HRM: two recurrent modules (slow H, fast L) with adaptive "
                                     "computation time, on Sudoku, mazes or ARC-style grids "
                                     "(clara data puzzles ...).")
                        yield ConfigForm(HRMTrainConfig, choices=dict(CHOICES), first=FIRST,
                                         values=VALUES, id="hrm-form")
                    with Vertical(id="hrm-right"):
                        yield Label("Effective configuration", classes="section-title")
                        yield LiveText("", id="hrm-preview", markup=False)
                        yield Static("", id="hrm-status")
                        yield Button("Launch  (ctrl+l)", id="hrm-launch", variant="success")
            with TabPane("Solve", id="hrm-solve"):
                with Horizontal(id="hrm-body2", classes="hrm-row"):
                    yield Select([], prompt="HRM run", id="hrm-run")
                    yield TextInput("0", placeholder="test puzzle #", id="hrm-index")
                    yield Button("Solve", id="hrm-go")
                with Horizontal():
                    with Vertical(id="hrm-left2"):
                        yield Static("", id="hrm-seg-info")
                        yield Static("", id="hrm-grid", markup=False)
                    with Vertical(id="hrm-metrics"):
                        for key, title in SERIES:
                            yield MetricSparkline(title, lower_is_better=False,
                                                  fmt="{:.3f}", id=f"spark-{key}")

    # -- data --------------------------------------------------------------------------------
    def reload(self) -> None:
        self._load_choices()

    @work(thread=True, exclusive=True, group="hrm-choices", exit_on_error=False)
    def _load_choices(self) -> None:
        from clara.data.datasets import list_datasets
        from clara.runs import list_runs

        ws = self.app.workspace
        datasets = [d["name"] for d in list_datasets(ws) if d["kind"] == "puzzles"] if ws else []
        runs = [r.id for r in reversed(list_runs(ws)) if r.config().get("kind") == "hrm"] \
            if ws else []
        self.app.call_from_thread(self._set_choices, datasets, runs)

    def _set_choices(self, datasets: list[str], runs: list[str]) -> None:
        form = self.query_one("#hrm-form", ConfigForm)
        form.set_choices("data", datasets)
        sel = self.query_one("#hrm-run", Select)
        sel.set_options([(r, r) for r in runs])
        if runs and sel.value is Select.NULL:
            sel.value = runs[0]
        self._update_preview()

    @on(ConfigForm.Changed)
    def _changed(self, event: ConfigForm.Changed) -> None:
        self._update_preview()

    def _effective(self):
        try:
            data = hrm_config(self.query_one("#hrm-form", ConfigForm).raw_values())
            if not data.get("data"):
                raise UserError("data: choose a puzzle dataset")
            return data, "\n".join(f"{k} = {v!r}" for k, v in data.items() if v is not None)
        except UserError as e:
            return None, f"not valid yet: {e}"

    def _update_preview(self) -> None:
        data, text = self._effective()
        self.query_one("#hrm-preview", Static).update(text)
        self.query_one("#hrm-launch", Button).disabled = data is None or self.app.workspace is None

    @on(Button.Pressed, "#hrm-launch")
    def action_launch(self) -> None:
        data, text = self._effective()
        if data is None or self.app.workspace is None:
            self.app.show_error(text if data is None else "open a workspace first (F2)")
            return
        self.query_one("#hrm-status", Static).update("launching …")
        self._launch(data)

    @work(thread=True, exclusive=True, group="hrm-launch", exit_on_error=False)
    def _launch(self, config: dict) -> None:
        from clara.hrm.config import hrm_run
        from clara.runs import start_worker

        run = hrm_run(self.app.workspace, config)
        start_worker(run, detach=True)
        self.app.call_from_thread(self._launched, run.id)

    def _launched(self, run_id: str) -> None:
        self.query_one("#hrm-status", Static).update(f"launched run {run_id}")
        self.notify(f"run {run_id} started", title="HRM", timeout=3)
        self.app.follow_run = run_id
        self.app.switch_mode("runs")

    # -- solving -----------------------------------------------------------------------------
    @on(Button.Pressed, "#hrm-go")
    def _go(self) -> None:
        run = self.query_one("#hrm-run", Select).value
        if run is Select.NULL:
            self.app.show_error("no HRM run in this workspace yet (train one first)")
            return
        try:
            index = int(self.query_one("#hrm-index", Input).value or 0)
        except ValueError:
            self.app.show_error("puzzle #: a whole number")
            return
        self.query_one("#hrm-seg-info", Static).update("solving …")
        self._solve(str(run), index)

    @work(thread=True, exclusive=True, group="hrm-solve", exit_on_error=False)
    def _solve(self, run_id: str, index: int) -> None:
        from clara.hrm import data as D
        from clara.hrm.infer import checkpoint_of, solve_trace
        from clara.hrm.task import load_model
        from clara.runs import find_run

        ws = self.app.workspace
        net, cfg = load_model(checkpoint_of(ws, run_id))
        folder = cfg.get("dataset", "")
        meta = D.validate(folder)
        split = "test" if (Path(folder) / "test.safetensors").is_file() else "train"
        arrays = D.read_split(folder, split)
        if not 0 <= index < len(arrays["inputs"]):
            raise UserError(f"puzzle #: {index} is outside 0..{len(arrays['inputs']) - 1}")
        trace = solve_trace(net, meta, arrays["inputs"][index])
        rows = find_run(ws, run_id).metrics()
        self.app.call_from_thread(self._show, meta, arrays["inputs"][index].tolist(),
                                  arrays["labels"][index].tolist(), trace, rows)

    def _show(self, meta, puzzle, solution, trace, rows) -> None:
        self.meta, self.puzzle, self.solution, self.trace, self.seg = \
            meta, puzzle, solution, trace, 0
        for key, _ in SERIES:
            vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            self.query_one(f"#spark-{key}", MetricSparkline).set_values(vals)
        self._draw()

    def action_segment(self, delta: int) -> None:
        if self.trace:
            self.seg = max(-1, min(len(self.trace) - 1, self.seg + delta))
            self._draw()

    def _draw(self) -> None:
        from clara.hrm import data as D

        if self.seg < 0:
            tokens, info = self.puzzle, "the puzzle  ( ] : next segment )"
        else:
            s = self.trace[self.seg]
            tokens = s["tokens"]
            right = sum(a == b for a, b in zip(tokens, self.solution))
            info = (f"segment {s['step']}/{len(self.trace)}  q_halt {s['q_halt']:+.2f}  "
                    f"q_continue {s['q_continue']:+.2f}{'  would halt' if s['halt'] else ''}  "
                    f"cells right {right}/{len(tokens)}   [ / ] : step")
        self.query_one("#hrm-seg-info", Static).update(info)
        self.query_one("#hrm-grid", Static).update(D.render(tokens, self.meta))

    def palette_commands(self):
        yield SystemCommand("HRM: launch training", "Start an HRM run with this form",
                            self.action_launch)
