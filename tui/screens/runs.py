"""Runs mode: every run of the workspace (started here, by the CLI, or by an earlier session),
its live progress tailed from the run folder, its configuration, events, report and adapters,
and two runs' curves side by side. Stop and resume go through `clara.runs`."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (DataTable, Markdown, ProgressBar, Static, TabbedContent,
                             TabPane)
from textual.worker import get_current_worker

from clara.errors import UserError
from clara.runs import ACTIVE
from tui.widgets.table import Table
from tui.format import duration, loss, number, short
from tui.screens.base import ModeScreen
from tui.widgets.dialogs import ConfirmDialog, PromptDialog
from tui.widgets.kv import KeyValues
from tui.widgets.metric import MetricSparkline
from tui.widgets.plot import MetricPlot

POLL_S = 0.5
PLOT_EVERY_S = 1.0  # a training run's loss plot is built again at most this often (a thread
# holding the GIL 10-15 ms each time, every poll, while the user typed on Runs)


def run_row(run) -> dict:
    """What the table shows of one run: the library's summary (best val loss and duration in it)."""
    summary = run.summary()
    return {**summary, "best_val": summary["best_val_loss"], "seconds": summary["duration_s"]}


def shown_runs(rows: list[dict], show_archived: bool, tag: str | None) -> list[dict]:
    """The rows the table shows: archived ones only when asked, only those with `tag` if set."""
    return [r for r in rows if (show_archived or not r.get("archived"))
            and (not tag or tag in (r.get("tags") or []))]


class RunMetrics:
    """The rows of a metrics.jsonl read so far, split into train and validation series."""

    def __init__(self) -> None:
        self.train: list[dict] = []
        self.valid: list[dict] = []

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            if "val_loss" in row:
                self.valid.append(row)
            elif "train_loss" in row:
                self.train.append(row)

    def series(self, key: str, rows: list[dict] | None = None) -> list[float]:
        rows = self.train if rows is None else rows
        return [r[key] for r in rows if isinstance(r.get(key), (int, float))]

    def points(self, key: str, rows: list[dict] | None = None) -> tuple[list, list]:
        """(steps, values) of `key`: what a plot with step on x draws."""
        rows = self.train if rows is None else rows
        keep = [r for r in rows if isinstance(r.get(key), (int, float))]
        return [r.get("step", i) for i, r in enumerate(keep, 1)], [r[key] for r in keep]

    def loss_series(self, prefix: str = "") -> dict:
        out = {f"{prefix}train": self.points("train_loss"),
               f"{prefix}val": self.points("val_loss", self.valid)}
        # puzzle runs (HRM): exact accuracy of the validation puzzles too
        exact = self.points("val_exact_accuracy", self.valid)
        if exact[0]:
            out[f"{prefix}val exact"] = exact
        return out


def _adapter_columns(table: DataTable) -> None:
    if not table.columns:
        table.add_columns("adapter", "step", "files")


class RunsScreen(ModeScreen):
    TITLE = "Runs"
    CSS_PATH = "runs.tcss"
    # letters are safe here: the Runs screen has no text field
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("u", "resume", "Resume"),
        Binding("m", "compare", "Compare"),
        Binding("l", "toggle_log", "Log y", show=False),  # in help (F1) and the palette
        Binding("x", "export", "Export", show=False),
        Binding("d", "delete", "Delete"),
        Binding("delete", "delete", "Delete", show=False),
        Binding("r", "rename", "Rename"),
        Binding("a", "archive", "Archive"),
        Binding("t", "tags", "Tags"),
        Binding("h", "toggle_archived", "Show archived", show=False),
        Binding("f", "filter_tag", "Filter by tag", show=False),
        Binding("f6", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected: str | None = None
        self.compare_with: str | None = None
        self.metrics = RunMetrics()
        self.status: dict = {}
        self.show_archived = False  # h: archived runs in the table too
        self.tag_filter: str | None = None  # f: only runs with this tag
        self.rows: dict[str, dict] = {}  # run id -> its row, as last read
        self._shown_cells: dict[str, dict] = {}  # run id -> the table's cells of it

    def compose_body(self) -> ComposeResult:
        with Vertical(id="runs-body"):
            yield Static("", id="runs-filter", classes="muted", markup=False)
            yield Table(id="runs", cursor_type="row", zebra_stripes=True)
            with TabbedContent(id="run-tabs"):
                with TabPane("Progress", id="tab-progress"):
                    yield Static("select a run", id="run-title")
                    # hidden until a run is selected: with no total it pulses ("--%"),
                    # repainted many times a second for nothing
                    yield ProgressBar(id="run-progress", show_eta=False, classes="hidden")
                    yield Static("", id="run-rate")
                    yield MetricPlot("loss", id="plot-loss")
                    with Horizontal(id="run-sparks"):
                        yield MetricSparkline("tokens/s", lower_is_better=False,
                                              fmt="{:,.0f}", id="spark-tps")
                        yield MetricSparkline("memory GB", lower_is_better=False, fmt="{:.3f}",
                                              best_label="peak", id="spark-mem")
                with TabPane("Config", id="tab-config"):
                    with VerticalScroll():
                        yield KeyValues(id="run-config")
                with TabPane("Events", id="tab-events"):
                    with VerticalScroll():
                        yield Static("", id="run-events", markup=False)
                with TabPane("Report", id="tab-report"):
                    with VerticalScroll():
                        yield Markdown("", id="run-report")
                with TabPane("Adapters", id="tab-adapters"):
                    yield Table(id="run-adapters", cursor_type="row")
                with TabPane("Compare", id="tab-compare"):
                    yield Static("press m on two runs to compare them", id="compare-title")
                    # both runs on one plot: one step axis, one loss scale
                    yield MetricPlot("loss of both runs", id="plot-compare")

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for key, title in (("id", "run"), ("status", "status"), ("kind", "kind"),
                           ("model", "model"), ("step", "step"), ("best_val", "best val"),
                           ("duration", "duration"), ("tags", "tags")):
            table.add_column(title, key=key)
        for adapters in self.query("#run-adapters"):  # else when it is first filled: under
            _adapter_columns(adapters)  # load a tab's panes were once not mounted here yet
        self.set_interval(2.0, self._refresh_table)

    def reload(self) -> None:
        self.selected = None
        self.compare_with = None
        self._load_runs()

    def on_resume(self) -> None:
        self._load_runs()

    def action_reload(self) -> None:
        self._load_runs()

    def _refresh_table(self) -> None:
        if self.is_current and self.app.workspace is not None:
            self._load_runs()

    # -- the table -----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="runs-table", exit_on_error=False)
    def _load_runs(self) -> None:
        from clara.runs import list_runs

        ws = self.app.workspace
        rows = [run_row(r) for r in reversed(list_runs(ws, archived=None))] if ws else []
        self.app.call_from_thread(self._fill_runs, rows)

    def _filter_line(self, rows: list[dict], shown: list[dict]) -> str:
        archived = sum(1 for r in rows if r.get("archived"))
        parts = [f"{len(shown)} of {len(rows)} run(s)"]
        if self.tag_filter:
            parts.append(f"tag {self.tag_filter} (f changes)")
        if archived:
            parts.append(f"{archived} archived " + ("shown (h hides)" if self.show_archived
                                                    else "hidden (h shows)"))
        return "  ·  ".join(parts) + "    r rename · a archive · t tags · f filter"

    def _fill_runs(self, rows: list[dict]) -> None:
        self.rows = {r["id"]: r for r in rows}
        shown = shown_runs(rows, self.show_archived, self.tag_filter)
        self.query_one("#runs-filter", Static).update(self._filter_line(rows, shown))
        rows = shown
        table = self.query_one("#runs", DataTable)
        cells = {}
        for row in rows:
            step = row.get("step") or 0
            total = row.get("total_steps")
            cells[row["id"]] = {
                "id": short(row["id"], 34), "status": row.get("status") or "-",
                "kind": row.get("kind") or "-", "model": short(str(row.get("model") or "-"), 20),
                "step": f"{step}/{total}" if total else str(step),
                "best_val": loss(row.get("best_val")), "duration": duration(row.get("seconds")),
                "tags": short(",".join(row.get("tags") or []) +
                              (" [archived]" if row.get("archived") else ""), 24) or "-",
            }
        self._update_table(table, cells)
        wanted = getattr(self.app, "follow_run", None)
        if wanted in cells:  # a run just launched from the Train screen
            self.app.follow_run = None
            table.move_cursor(row=list(cells).index(wanted))
            if self.selected != wanted:
                self.select_run(wanted)
        elif rows and self.selected is None:
            self.select_run(rows[0]["id"])

    def _update_table(self, table: DataTable, cells: dict[str, dict]) -> None:
        """Bring the table to `cells` (run id -> column -> text, in order) changing only what
        changed: rows of runs gone are removed, new ones added and put in order, changed cells
        updated. The highlighted run keeps the cursor. Clearing and refilling the table when a
        run appeared restyled and redrew every row, and moved the cursor (by index) onto another
        run, which the screen then followed: 0.3 s of the event loop's CPU at load 2."""
        shown = self._shown_cells
        current = [row.key.value for row in table.ordered_rows]
        cursor_key = self.selected if self.selected in cells else \
            current[table.cursor_row] if 0 <= table.cursor_row < len(current) else None
        texts = [v["id"] for v in cells.values()]
        if len(set(texts)) < len(texts):  # two ids shortened alike: no order by the id column
            table.clear()
            shown.clear()
            current = []
        for run_id in current:
            if run_id not in cells:
                table.remove_row(run_id)
                shown.pop(run_id, None)
        for run_id, values in cells.items():
            before = shown.get(run_id)
            if before is None:
                table.add_row(*values.values(), key=run_id)
            else:
                for column, value in values.items():
                    if before.get(column) != value:  # "queued" -> "running": wider
                        table.update_cell(run_id, column, value, update_width=True)
            shown[run_id] = values
        if [row.key.value for row in table.ordered_rows] != [*cells]:
            order = {v["id"]: i for i, v in enumerate(cells.values())}
            table.sort("id", key=lambda text: order[text])
        if cells and cursor_key in cells:
            row = list(cells).index(cursor_key)
            if row != table.cursor_row:
                table.move_cursor(row=row, animate=False)
        elif cells:
            table.move_cursor(row=min(max(table.cursor_row, 0), len(cells) - 1), animate=False)

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.selected:
            self.select_run(str(event.row_key.value))

    def _run(self, run_id: str):
        from clara.runs import Run

        return Run(self.app.workspace.runs_dir / run_id)

    def select_run(self, run_id: str) -> None:
        """Show `run_id` and follow its files: a live run or a finished one, whoever started it."""
        if self.selected:
            self.workers.cancel_group(self, f"tail-{self.selected}")
        self.selected = run_id
        self.metrics = RunMetrics()
        self.query_one("#run-title", Static).update(f"run {run_id}")
        for spark in self.query("#tab-progress MetricSparkline").results(MetricSparkline):
            spark.set_values([])
        self.query_one("#plot-loss", MetricPlot).set_series({})
        self._load_details(run_id)
        self.run_worker(partial_tail(self, run_id), thread=True, exclusive=True,
                        group=f"tail-{run_id}", exit_on_error=False, name=f"tail {run_id}")

    # -- following a run -------------------------------------------------------------------------
    def _tail(self, run_id: str) -> None:
        """Read metrics.jsonl from where we stopped (whole lines only) and status.json, until the
        run is over and read to the end, or the worker is cancelled (another run selected)."""
        from clara.runs import ACTIVE, Follower

        worker = get_current_worker()
        run = self._run(run_id)
        follower = Follower(run)
        last_status: dict | None = None
        while not worker.is_cancelled:
            update = follower.read(events=False)
            if worker.is_cancelled:
                return
            # nothing new: no repaint
            if update.metrics or update.reset or update.status != last_status:
                self.app.call_from_thread(self._apply_progress, run_id, update.metrics,
                                          update.status, update.reset)
                last_status = update.status
            if update.status.get("status") not in ACTIVE:
                return
            time.sleep(POLL_S)

    def _apply_progress(self, run_id: str, rows: list[dict], status: dict,
                        reset: bool = False) -> None:
        if run_id != self.selected:
            return
        self.status = status
        if reset:  # a resume rewrote metrics.jsonl: the follower reads it again from the start
            self.metrics = RunMetrics()
        self.metrics.add(rows)
        self._plot_stale = self._plot_stale or bool(rows) or reset
        if status.get("status", "?") not in ACTIVE:
            self._load_details(run_id)
        if self.is_current:
            self._show_progress(run_id)
        else:  # drawn when the mode is shown again: a hidden plot costs the shown mode nothing
            self._progress_hidden = True

    _plot_stale = False
    _plotted_at = 0.0
    _progress_hidden = False

    def on_shown(self) -> None:
        if self._progress_hidden and self.selected:
            self._show_progress(self.selected)

    def _show_progress(self, run_id: str) -> None:
        self._progress_hidden = False
        status = self.status
        m = self.metrics
        plot = self.query_one("#plot-loss", MetricPlot)
        now = time.monotonic()
        if not plot.series or self._plot_stale and (
                now - self._plotted_at >= PLOT_EVERY_S
                or status.get("status", "?") not in ACTIVE):
            self._plot_stale = False
            self._plotted_at = now
            plot.set_series(m.loss_series())
        self.query_one("#spark-tps", MetricSparkline).set_values(m.series("tokens_per_second"))
        self.query_one("#spark-mem", MetricSparkline).set_values(m.series("peak_memory_gb"))
        last = m.train[-1] if m.train else {}
        step = last.get("step", 0)
        total = status.get("total_steps") or step or None
        bar = self.query_one("#run-progress", ProgressBar)
        bar.remove_class("hidden")
        state = status.get("status", "?")
        if state in ACTIVE:
            bar.update(total=total, progress=step)
        else:  # over: a still bar at where it stopped, never the animated "--%" of waiting
            bar.update(total=total or 1, progress=step if total else 0)
        elapsed = last.get("elapsed_s")
        eta = (elapsed / step * (total - step)) if elapsed and step and total else None
        state = status.get("status", "?")
        eta_text = f"ETA {duration(eta)}" if state == "running" and eta is not None else ""
        self.query_one("#run-title", Static).update(
            f"run {run_id}  ·  {state}  ·  step {step}/{total or '?'}  {eta_text}".rstrip())
        message = status.get("message") or ""
        self.query_one("#run-rate", Static).update(
            f"tokens/s {number(last.get('tokens_per_second'))}  ·  "
            f"lr {number(last.get('learning_rate'))}  ·  elapsed {duration(elapsed)}"
            + (f"\n{message}" if message else ""))

    @work(thread=True, exclusive=True, group="run-details", exit_on_error=False)
    def _load_details(self, run_id: str) -> None:
        run = self._run(run_id)
        config = run.config() if run.exists else {}
        events = run.events()
        report_file = run.path / "report.md"
        report = report_file.read_text(encoding="utf-8") if report_file.is_file() else ""
        adapters = []
        if run.adapters.is_dir():
            for folder in run.checkpoints():
                target = folder.resolve().name if folder.is_symlink() else ""
                files = len(list(folder.iterdir())) if folder.is_dir() else 0
                # best and last are links to a step-N folder: their step is the target's
                named = target or folder.name
                adapters.append((folder.name + (f" → {target}" if target else ""),
                                 named.removeprefix("step-") if named.startswith("step-")
                                 else "-", str(files)))
        self.app.call_from_thread(self._fill_details, run_id, config, events, report, adapters)

    def _fill_details(self, run_id, config, events, report, adapters) -> None:
        if run_id != self.selected:
            return
        shown = {"kind": config.get("kind"), **config.get("config", {}),
                 **{f"resolved.{k}": v for k, v in config.get("resolved", {}).items()},
                 **{f"distributed.{k}": v for k, v in config.get("distributed", {}).items()}}
        self.query_one("#run-config", KeyValues).set_data(
            {k: v for k, v in shown.items() if v is not None})
        lines = []
        for e in events:
            extra = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("time", "event"))
            lines.append(f"{str(e.get('time', ''))[11:19]}  {e.get('event', '?'):<12} {extra}")
        self.query_one("#run-events", Static).update("\n".join(lines) or "(no events yet)")
        self.query_one("#run-report", Markdown).update(report or "_no report yet: it is written "
                                                                 "when the run ends_")
        table = self.query_one("#run-adapters", DataTable)
        table.clear()
        _adapter_columns(table)
        for row in adapters:
            table.add_row(*row)

    # -- actions -------------------------------------------------------------------------------
    def action_stop(self) -> None:
        if self.selected:
            self._stop(self.selected)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _stop(self, run_id: str) -> None:
        from clara.runs import request_stop

        if not request_stop(self._run(run_id)):
            raise UserError(f"run {run_id} is not running")
        self.app.call_from_thread(self.notify, f"asked run {run_id} to save and stop",
                                  title="Stop")

    def action_resume(self) -> None:
        if self.selected:
            self._resume(self.selected)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _resume(self, run_id: str) -> None:
        from clara.runs import start_worker

        run = self._run(run_id)
        if run.is_active():
            raise UserError(f"run {run_id} is still running")
        start_worker(run, detach=True)  # the worker resumes from the newest checkpoint
        self.app.call_from_thread(self._resumed, run_id)

    def _resumed(self, run_id: str) -> None:
        self.notify(f"run {run_id} resumed", title="Resume")
        self.selected = None
        self.select_run(run_id)
        self._load_runs()

    def action_compare(self) -> None:
        if not self.selected:
            return
        if self.compare_with is None or self.compare_with == self.selected:
            self.compare_with = self.selected
            self.notify(f"comparing from {self.selected}: highlight another run and press m",
                        title="Compare")
            return
        self._compare(self.compare_with, self.selected)
        self.query_one("#run-tabs", TabbedContent).active = "tab-compare"

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _compare(self, a: str, b: str) -> None:
        out = []
        for run_id in (a, b):
            m = RunMetrics()
            m.add(self._run(run_id).metrics())
            out.append((run_id, m))
        self.app.call_from_thread(self._show_compare, out)

    def _show_compare(self, sides) -> None:
        self.query_one("#compare-title", Static).update(
            f"A = {sides[0][0]}   vs   B = {sides[1][0]}   (one step axis, one loss scale)")
        series = {}
        for side, (_run_id, metrics) in zip("AB", sides):
            series.update(metrics.loss_series(f"{side} "))
        self.query_one("#plot-compare", MetricPlot).set_series(series)

    def action_toggle_log(self) -> None:
        plots = list(self.query(MetricPlot).results(MetricPlot))
        log = not plots[0].log_scale
        for plot in plots:
            plot.set_log(log)

    def action_delete(self) -> None:
        run_id = self.selected
        if not run_id:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(run_id)

        self.app.push_screen(ConfirmDialog(
            f"Delete run {run_id}?\n\nIts folder (checkpoints, metrics, report) is removed for "
            "good; a running run is refused.", yes="Delete (y)", no="Keep (Esc)"), answered)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _delete(self, run_id: str) -> None:
        from clara.runs import delete_run

        delete_run(self._run(run_id))
        self.app.call_from_thread(self._deleted, run_id)

    def _deleted(self, run_id: str) -> None:
        self.notify(f"run {run_id} deleted", title="Delete", timeout=3)
        self.selected = None
        if self.compare_with == run_id:
            self.compare_with = None
        self._load_runs()

    # -- housekeeping: rename, archive, tags, filters (clara.runs does the work) ----------------
    def _refuse_if_training(self, run_id: str, what: str) -> bool:
        """Say at once that a run still training cannot be renamed or archived (the library
        refuses it too), before the user types anything."""
        row = self.rows.get(run_id) or {}
        if row.get("active"):
            self.app.show_error(f"run {run_id} is {row.get('status')}: stop it (s) before "
                                f"{what} it")
            return True
        return False

    def action_rename(self) -> None:
        run_id = self.selected
        if not run_id or self._refuse_if_training(run_id, "renaming"):
            return

        def answered(name: str | None) -> None:
            if name is not None and name.strip() and name.strip() != run_id:
                self._rename(run_id, name.strip())

        self.app.push_screen(PromptDialog(
            f"Rename run {run_id} to:", run_id, help_text="Refused while it trains, for a name "
            "in use, or while another run starts from it."), answered)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _rename(self, run_id: str, name: str) -> None:
        from clara.runs import rename_run

        ws = self.app.workspace
        moved = rename_run(ws, self._run(run_id), name)
        self.app.call_from_thread(self._renamed, run_id, moved.id)

    def _renamed(self, old: str, new: str) -> None:
        self.notify(f"run {old} is now {new}", title="Rename", timeout=3)
        if self.compare_with == old:
            self.compare_with = new
        self.app.follow_run = new  # the table's cursor goes to it once the table has it
        self.select_run(new)  # selected at once: a key typed next (t, a) acts on it
        self._load_runs()

    def action_archive(self) -> None:
        run_id = self.selected
        if not run_id:
            return
        if (self.rows.get(run_id) or {}).get("archived"):
            self._archive(run_id, False)
            return
        if self._refuse_if_training(run_id, "archiving"):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._archive(run_id, True)

        self.app.push_screen(ConfirmDialog(
            f"Archive run {run_id}?\n\nIt leaves this list and the pickers (Chat, Eval, "
            "Train); its folder stays. h shows archived runs, a on one unarchives it.",
            yes="Archive (y)", no="Keep (Esc)"), answered)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _archive(self, run_id: str, archived: bool) -> None:
        from clara.runs import archive_run

        archive_run(self._run(run_id), archived)
        self.app.call_from_thread(self._archived, run_id, archived)

    def _archived(self, run_id: str, archived: bool) -> None:
        self.notify(f"run {run_id} {'archived' if archived else 'unarchived'}",
                    title="Archive", timeout=3)
        if archived and not self.show_archived:
            self.selected = None
        self._load_runs()

    def action_tags(self) -> None:
        run_id = self.selected
        if not run_id:
            return
        now = list((self.rows.get(run_id) or {}).get("tags") or [])

        def answered(text: str | None) -> None:
            if text is not None:
                wanted = list(dict.fromkeys(text.replace(",", " ").split()))
                self._tag(run_id, [t for t in wanted if t not in now],
                          [t for t in now if t not in wanted])

        self.app.push_screen(PromptDialog(
            f"Tags of run {run_id}:", " ".join(now), placeholder="e.g. baseline handbook",
            help_text="Space-separated; remove a word to drop that tag."), answered)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _tag(self, run_id: str, add: list[str], remove: list[str]) -> None:
        from clara.runs import tag_run

        tags = tag_run(self._run(run_id), add=add, remove=remove)
        self.app.call_from_thread(self._tagged, run_id, tags)

    def _tagged(self, run_id: str, tags: list[str]) -> None:
        self.notify(f"run {run_id}: {', '.join(tags) or 'no tags'}", title="Tags", timeout=3)
        self._load_runs()

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
        self._fill_runs(list(self.rows.values()))

    def action_filter_tag(self) -> None:
        tags = sorted({t for r in self.rows.values() for t in r.get("tags") or []})

        def answered(text: str | None) -> None:
            if text is not None:
                self.tag_filter = text.strip() or None
                self._fill_runs(list(self.rows.values()))

        self.app.push_screen(PromptDialog(
            "Show only runs with the tag:", self.tag_filter or "",
            placeholder="empty: every run",
            help_text=f"tags in use: {', '.join(tags) or '(none yet: t tags a run)'}"), answered)

    def action_export(self) -> None:
        if self.selected:
            self._export(self.selected)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _export(self, run_id: str) -> None:
        from clara.export import export_tensorboard

        out = export_tensorboard(self._run(run_id))
        self.app.call_from_thread(self.notify, f"TensorBoard events in {out}",
                                  title="Export", timeout=5)

    def action_export_wandb(self) -> None:
        if self.selected:
            self._export_wandb(self.selected)

    @work(thread=True, group="run-control", exit_on_error=False)
    def _export_wandb(self, run_id: str) -> None:
        from clara.export import export_wandb

        done = export_wandb(self._run(run_id))  # wandb missing: a one-line error dialog
        where = (f"offline in {done['folder']} (upload: wandb sync {done['folder']})"
                 if done["mode"] == "offline" else "to W&B")
        self.app.call_from_thread(self.notify, f"run {run_id} logged {where}",
                                  title="Export", timeout=6)

    def palette_commands(self):
        yield SystemCommand("Delete run", "Remove the highlighted run's folder (asks first)",
                            self.action_delete)
        yield SystemCommand("Export run to TensorBoard", "Write its metrics as TensorBoard "
                            "event files (as `clara runs export`)", self.action_export)
        yield SystemCommand("Rename run", "Give the highlighted run another name",
                            self.action_rename)
        yield SystemCommand("Archive or unarchive run", "Hide the highlighted run from lists and "
                            "pickers (or show it again)", self.action_archive)
        yield SystemCommand("Tag run", "Edit the highlighted run's tags", self.action_tags)
        yield SystemCommand("Show archived runs", "Toggle archived runs in the table",
                            self.action_toggle_archived)
        yield SystemCommand("Filter runs by tag", "Show only the runs with a tag",
                            self.action_filter_tag)
        yield SystemCommand("Export run to W&B", "Log its metrics to Weights & Biases (offline "
                            "unless logged in; as `clara runs export --wandb`)",
                            self.action_export_wandb)
        yield SystemCommand("Toggle log scale", "Loss plots on a log10 axis",
                            self.action_toggle_log)
        yield SystemCommand("Stop run", "Ask the highlighted run to save and stop",
                            self.action_stop)
        yield SystemCommand("Resume run", "Continue the highlighted run from its checkpoint",
                            self.action_resume)
        yield SystemCommand("Compare runs", "Mark or compare the highlighted run",
                            self.action_compare)


def partial_tail(screen: RunsScreen, run_id: str):
    """`run_worker` wants a callable without arguments."""
    return lambda: screen._tail(run_id)
