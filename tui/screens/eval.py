"""Eval mode: score configurations (closed book on the base or an adapter, raw-text RAG, CLaRa) on
a QA set through `clara.evaluation.runner`, in a thread worker with progress; results as tables
(metrics per configuration, answers per question side by side); past evaluations; and compare
mode (the base against adapters, plus the retention probe: what each adapter forgot)."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (Button, DataTable, Label, ProgressBar, Select, SelectionList, Static,
                             Switch, TabbedContent, TabPane)

from clara.errors import UserError
from tui.widgets.table import Table
from tui.format import middle, short
from tui.screens.base import ModeScreen
from tui.widgets.switch import StateSwitch
from tui.widgets.ticklist import TickList
from tui.widgets.config_form import ConfigForm

FORM_HIDDEN = ("data", "configs", "model", "name", "split", "system", "chunk_tokens",
               "chunk_overlap")
FORM_VALUES = {"limit": 10, "max_tokens": 32}


def bundled_qa() -> Path:
    from clara.demo import DATA_DIR

    return DATA_DIR / "eval_questions.jsonl"


# dataset kinds whose rows are not questions with answers: an evaluation of them fails at
# the first row (`question: missing`)
NOT_QA_KINDS = frozenset({"cpt", "sft", "text", "chat", "completions", "docs", "stage1"})


def data_options(ws) -> list[tuple[str, str]]:
    """The bundled questions first, then the workspace's question/answer datasets: their test
    or valid split, or a QA set's own rows (Data's Generate QA writes train.jsonl only)."""
    from clara.data.datasets import read_meta

    out = [(f"{bundled_qa().name} (bundled)", str(bundled_qa()))]
    if ws is not None:
        for folder in ws.items("datasets"):
            kind = read_meta(folder).get("kind")
            if kind in NOT_QA_KINDS:
                continue
            if (folder / "test.jsonl").is_file() or (folder / "valid.jsonl").is_file():
                out.append((folder.name, folder.name))
            elif kind == "qa" and (folder / "train.jsonl").is_file():
                out.append((f"{folder.name} (QA pairs)", str(folder / "train.jsonl")))
    return out


def config_options(ws) -> list[tuple[str, str, bool]]:
    """(label, spec, ticked) for SelectionList: closed book and RAG on the base, each LoRA run
    closed book, each CLaRa run from documents (and stage 3 by its own retrieval)."""
    from clara import refs
    from clara.runs import Run

    out = [("closed book (the base)", "closed", True),
           ("raw-text RAG (BM25 passages)", "rag", False)]
    for run_id in refs.usable(ws) if ws is not None else []:  # usable checkpoints only
        run = Run(ws.runs_dir / run_id)
        kind = run.config().get("kind", "")
        if kind.startswith("clara-"):
            out.append((f"CLaRa {run.id}", f"clara={run.id}", False))
            if kind == "clara-stage3":
                out.append((f"CLaRa retrieval {run.id}", f"clara-retrieval={run.id}", False))
        else:
            out.append((f"adapter {run.id}", f"closed={run.id}", False))
            # answering from the `memory` QA dataset's pairs (the form's memory field)
            out.append((f"adapter {run.id} + memory", f"memory={run.id}", False))
    return out


def answer_widths(width: int, configs: int) -> tuple[int, int, int]:
    """(question, gold, each configuration) widths of the answers table, so that two or three
    configurations fit the screen: at 100 columns the second one's header was cut off to
    "closed", the same as the first's."""
    q, g = (30, 14) if width < 120 else (40, 20)
    room = width - 6 - q - g - 2 * (configs + 2)  # borders, and each column's padding
    return q, g, max(12, min(28, room // max(1, configs)))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class EvalScreen(ModeScreen):
    TITLE = "Eval"
    CSS_PATH = "eval.tcss"
    BINDINGS = [
        Binding("ctrl+l", "start", "Run", priority=True),
        Binding("f6", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.shown: dict | None = None  # the evaluation on the Results tab

    def compose_body(self) -> ComposeResult:
        from clara.evaluation.runner import EvalConfig

        with TabbedContent(id="eval-tabs"):
            with TabPane("Run", id="eval-run-tab"):
                with Horizontal(id="eval-run"):
                    with VerticalScroll(id="eval-choices", can_focus=False):  # its fields do
                        yield Label("Questions", classes="side-label")
                        yield Select(data_options(None), id="eval-data", allow_blank=False,
                                     compact=True)
                        yield Label("Model", classes="side-label")
                        yield Select([], id="eval-model", prompt="the first adapter's base",
                                     compact=True)
                        yield Label("Configurations", classes="side-label")
                        yield TickList(id="eval-configs")
                        with Horizontal(classes="switch-row"):
                            yield StateSwitch(False, id="eval-compare")
                            yield Label("compare with the base, retention probe")
                    with Vertical(id="eval-settings"):
                        yield ConfigForm(EvalConfig, hidden=FORM_HIDDEN, values=FORM_VALUES,
                                         id="eval-form", classes="stacked")  # beside the list
                        # shown only while an evaluation runs (idle, it animated a "--%")
                        yield ProgressBar(id="eval-progress", show_eta=False, classes="hidden")
                        yield Static("", id="eval-status")
                        yield Button("Run evaluation  (ctrl+l)", id="eval-start",
                                     variant="success")
            with TabPane("Results", id="eval-results-tab"):
                yield Static("run an evaluation, or pick one under History", id="eval-title")
                yield Table(id="eval-summary", cursor_type="row", zebra_stripes=True)
                yield Label("Answers", classes="section-title")
                yield Table(id="eval-answers", cursor_type="row", zebra_stripes=True)
            with TabPane("History", id="eval-history-tab"):
                yield Table(id="eval-list", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#eval-list", DataTable)
        for key, title in (("id", "evaluation"), ("kind", "kind"), ("questions", "questions"),
                           ("configs", "configurations"), ("created", "created")):
            table.add_column(title, key=key)

    # -- choices and history -----------------------------------------------------------------
    def reload(self) -> None:
        self._load()

    def on_resume(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="eval-load", exit_on_error=False)
    def _load(self) -> None:
        from clara.evaluation.runner import list_evals

        ws = self.app.workspace
        data = data_options(ws)
        models = [p.name for p in ws.items("models")] if ws else []
        configs = config_options(ws)
        evals = list_evals(ws) if ws else []
        self.app.call_from_thread(self._fill, data, models, configs, evals)

    def _fill(self, data, models, configs, evals) -> None:
        if self.unchanged("lists", (self.app.workspace_name, data, models, configs, evals)):
            return
        select = self.query_one("#eval-data", Select)
        current = select.value
        select.set_options(data)
        if current in [v for _, v in data]:
            select.value = current
        model = self.query_one("#eval-model", Select)
        current = model.value
        model.set_options([(m, m) for m in models])
        if current in models:
            model.value = current
        elif models:
            model.value = "tiny" if "tiny" in models else models[0]
        chosen = self.query_one("#eval-configs", SelectionList)
        ticked = set(chosen.selected)
        chosen.clear_options()
        chosen.add_options([(label, spec, spec in ticked or (not ticked and on))
                            for label, spec, on in configs])
        table = self.query_one("#eval-list", DataTable)
        table.clear()
        for e in reversed(evals):  # newest first
            table.add_row(e["id"], e.get("kind") or "-", str(e.get("questions") or "-"),
                          short(e.get("configs") or "", 50), (e.get("created") or "")[:16],
                          key=e["id"])

    @on(DataTable.RowSelected, "#eval-list")
    def _pick(self, event: DataTable.RowSelected) -> None:
        if event.row_key is not None:
            self._read(str(event.row_key.value))

    @work(thread=True, exclusive=True, group="eval-read", exit_on_error=False)
    def _read(self, eval_id: str) -> None:
        from clara.evaluation.runner import read_eval

        doc = read_eval(self.app.workspace, eval_id)
        self.app.call_from_thread(self.show_eval, doc)

    # -- running --------------------------------------------------------------------------------
    def request(self) -> dict:
        """What the form asks for: {"compare", "data", "model", "specs", "settings"}."""
        form = self.query_one("#eval-form", ConfigForm)
        settings = {k: v for k, v in form.raw_values().items() if v is not None}
        data = self.query_one("#eval-data", Select).value
        model = self.query_one("#eval-model", Select).value
        specs = list(self.query_one("#eval-configs", SelectionList).selected)
        if data is Select.NULL:
            raise UserError("questions: choose a QA file or dataset")
        if not specs:
            raise UserError("configurations: tick at least one")
        return {"compare": self.query_one("#eval-compare", Switch).value, "data": str(data),
                "model": None if model is Select.NULL else str(model), "specs": specs,
                "settings": settings}

    @on(ConfigForm.Submitted)
    @on(Button.Pressed, "#eval-start")
    def action_start(self) -> None:
        if self.app.workspace is None:
            self.app.show_error("open a workspace first (F2)")
            return
        if self.running:
            self.notify("an evaluation is running", severity="warning", timeout=2)
            return
        try:
            req = self.request()
        except UserError as e:
            self.app.show_error(e)
            return
        self.running = True
        self.query_one("#eval-start", Button).disabled = True
        self.query_one("#eval-status", Static).update("loading the model …")
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.remove_class("hidden")
        bar.update(total=None, progress=0)
        self._evaluate(req)

    @work(thread=True, exclusive=True, group="eval-run", exit_on_error=False)
    def _evaluate(self, req: dict) -> None:
        from clara.evaluation.runner import EvalConfig, compare, read_eval, run_eval

        ws = self.app.workspace

        def progress(label: str, done: int, total: int) -> None:
            self.app.call_from_thread(self._progress, label, done, total)

        failed = True
        try:
            if req["compare"]:
                adapters = [s.split("=", 1)[1] for s in req["specs"] if s.startswith("closed=")]
                others = [s for s in req["specs"] if s != "closed" and
                          not s.startswith("closed=")]
                if not adapters:
                    raise UserError("compare: tick at least one adapter to compare with the "
                                     "base")
                settings = dict(req["settings"])
                retention = settings.pop("retention", 0) or 20
                result = compare(ws, req["data"], adapters, req["model"], others,
                                 retention=retention, progress=progress, **settings)
            else:
                cfg = EvalConfig(data=req["data"], configs=req["specs"], model=req["model"],
                                 **req["settings"])
                result = run_eval(ws, cfg, progress=progress)
            doc = read_eval(ws, result.id)
            failed = False
        finally:
            self.app.call_from_thread(self._finished, failed)
        self.app.call_from_thread(self._done, doc)

    def _progress(self, label: str, done: int, total: int) -> None:
        self.query_one("#eval-progress", ProgressBar).update(total=total, progress=done)
        self.query_one("#eval-status", Static).update(f"{label}: {done}/{total}")

    def _finished(self, failed: bool = False) -> None:
        self.query_one("#eval-progress", ProgressBar).add_class("hidden")
        if failed:
            self.query_one("#eval-status", Static).update("failed (see the message)")
        self.running = False
        self.query_one("#eval-start", Button).disabled = False

    def _done(self, doc: dict) -> None:
        self.query_one("#eval-status", Static).update(f"written to evals/{doc['id']}")
        self.notify(f"evaluation {doc['id']} done", title="Eval", timeout=3)
        self.show_eval(doc)
        self._load()

    # -- results ------------------------------------------------------------------------------
    def show_eval(self, doc: dict) -> None:
        """Fill the Results tab from a `read_eval` document and show it."""
        from clara.evaluation.runner import SUMMARY_COLUMNS

        self.shown = doc
        summary = doc.get("summary", [])
        cfg = doc.get("config", {})
        self.query_one("#eval-title", Static).update(
            f"{doc['id']}  ·  {doc.get('kind', 'eval')}  ·  {doc.get('questions')} questions "
            f"from {Path(doc.get('data_path', '')).name}  ·  model {cfg.get('model')}")
        table = self.query_one("#eval-summary", DataTable)
        table.clear(columns=True)
        cols = [c for c in SUMMARY_COLUMNS if any(r.get(c[0]) is not None for r in summary)]
        for key, title in cols:
            table.add_column(title, key=key)
        for row in summary:
            table.add_row(*[_fmt(row.get(key)) for key, _ in cols], key=row["config"])
        answers = self.query_one("#eval-answers", DataTable)
        answers.clear(columns=True)
        results = [r for r in doc.get("results", []) if r.get("set", "qa") == "qa"]
        configs = list(dict.fromkeys(r["config"] for r in results))
        q, g, each = answer_widths(self.app.size.width, len(configs))
        answers.add_column("question", key="question")
        answers.add_column("gold", key="gold")
        for c in configs:
            answers.add_column(middle(c, each), key=c)
        by_q: dict = {}
        for r in results:
            by_q.setdefault(r["id"], {})[r["config"]] = r
        for qid, rs in by_q.items():
            first = next(iter(rs.values()))
            cells = [short(first["question"], q), short(first["gold"], g)]
            for c in configs:
                r = rs.get(c)
                cells.append(f"{r['f1']:.2f} {short(r['answer'] or '(empty)', each - 5)}" if r
                             else "-")
            answers.add_row(*cells, key=qid)
        self.query_one("#eval-tabs", TabbedContent).active = "eval-results-tab"
        table.focus()  # focus left in the Run tab would pull that tab back into view

    def palette_commands(self):
        yield SystemCommand("Run evaluation", "Score the ticked configurations",
                            self.action_start)
