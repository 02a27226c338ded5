"""Data mode's QA pieces: generate question/answer pairs from the sources (with a preview before
anything is written), browse and delete the pairs of a QA dataset, and read a source's full text
with page markers and search. All the work is `clara.data.qa` and `clara.data.reading`; these
widgets run it in thread workers and show what it returns."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, Select, Static, Switch, TextArea

from clara.errors import UserError
from tui.command import command_line
from tui.widgets.table import Table
from tui.format import short
from tui.widgets.live_text import LiveText, TextInput
from tui.widgets.switch import StateSwitch
from tui.widgets.worker_errors import RoutesWorkerErrors

PREVIEW_CHUNKS = 2


def _int(text: str, name: str, default: int) -> int:
    text = text.strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{name}: {text!r} is not a whole number") from None
    return value


class QAGenPanel(RoutesWorkerErrors, Vertical):
    """A form for `clara data build qa`: Preview shows the pairs of the first chunks, Write
    builds the dataset."""

    DEFAULT_CSS = """
    QAGenPanel { height: 1fr; }
    QAGenPanel Horizontal { height: auto; }
    QAGenPanel Input { width: 1fr; }
    #qa-preview { height: 1fr; }
    #qa-status { height: auto; margin: 0 1; }
    #qa-buttons StateSwitch { height: 1; width: 8; border: none; padding: 0; margin: 1 0 0 1; }
    #qa-buttons .switch-label { margin: 1 1 0 1; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield TextInput(placeholder="name of the new QA dataset", id="qa-name")
            yield TextInput(placeholder="sources, comma-separated (empty: all)",
                        id="qa-sources")
        with Horizontal():
            yield TextInput(placeholder="model (empty: rule-based)",
                        id="qa-model")
            yield TextInput(placeholder="pairs per chunk (3)", id="qa-per-chunk")
            yield TextInput(placeholder="golden QA file (always kept)", id="qa-golden")
        yield LiveText("clara data build qa NAME", id="qa-command", classes="command-line")
        with Horizontal(id="qa-buttons"):
            # an existing name: the CLI's --force (the error named it, the form had no way)
            yield StateSwitch(False, id="qa-replace")
            yield Label("replace a dataset of that name (--force)", classes="switch-label")
            yield Button("Preview", id="qa-preview-button")
            yield Button("Write", id="qa-write", variant="primary")
        yield Static("", id="qa-status")
        yield Table(id="qa-preview", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#qa-preview", DataTable).add_columns("origin", "page", "question",
                                                             "answer")

    @on(Input.Changed, "QAGenPanel Input")
    @on(Switch.Changed, "#qa-replace")
    def _show_command(self) -> None:
        """The `clara data build qa ...` command the form stands for (copyable)."""
        name = self.query_one("#qa-name", Input).value.strip() or "NAME"
        try:
            cfg = self.config()
            values = {"sources": ",".join(cfg.sources) or None, "model": cfg.model,
                      "per_chunk": cfg.per_chunk if cfg.per_chunk != 3 else None,
                      "golden": cfg.golden}
            text = command_line(["clara", "data", "build", "qa", name],
                                {k: v for k, v in values.items() if v is not None},
                                flags={"force": self.query_one("#qa-replace", Switch).value},
                                short={"model": "-m"})
        except UserError as e:
            text = f"not valid yet: {e}"
        self.query_one("#qa-command", LiveText).update(text)

    def config(self):
        from clara.data.qa import QAGenConfig

        value = {w.id: w.value.strip() for w in self.query(Input)}
        return QAGenConfig(sources=[s for s in value["qa-sources"].split(",") if s.strip()],
                           model=value["qa-model"] or None,
                           per_chunk=_int(value["qa-per-chunk"], "pairs per chunk", 3),
                           golden=value["qa-golden"] or None)

    def _start(self, write: bool) -> None:
        ws = self.app.workspace
        name = self.query_one("#qa-name", Input).value.strip()
        status = self.query_one("#qa-status", Static)
        try:
            if ws is None:
                raise UserError("open a workspace first (F2)")
            if write and not name:
                raise UserError("not written: give the new QA dataset a name (first field)")
            cfg = self.config()
        except UserError as e:  # said under the buttons, as the other forms do
            status.set_class(True, "field-error")
            status.update(str(e))
            return
        force = self.query_one("#qa-replace", Switch).value
        if write and not force and (ws.datasets_dir / name).exists():
            status.set_class(True, "field-error")
            status.update(f"dataset {name!r} exists: switch on 'replace' to write it again")
            return
        what = "writing" if write else "previewing"
        status.set_class(False, "field-error")
        status.update(
            f"{what} ({'model ' + cfg.model if cfg.model else 'rule-based generator'}) …")
        self._generate(ws, cfg, name if write else None, force)

    @on(Button.Pressed, "#qa-preview-button")
    def preview(self) -> None:
        self._start(write=False)

    @on(Button.Pressed, "#qa-write")
    @on(Input.Submitted, "QAGenPanel Input")
    def write(self) -> None:
        """Write (or Enter in any field): the form's main action, as in every form."""
        self._start(write=True)

    @work(thread=True, exclusive=True, group="qa-generate", exit_on_error=False)
    def _generate(self, ws, cfg, name: str | None, force: bool = False) -> None:
        from clara.data.qa import build_qa, generate_qa

        try:
            if name is None:
                result = generate_qa(ws, cfg, limit_chunks=PREVIEW_CHUNKS)
                self.app.call_from_thread(self._show, result.rows, result.report.line(), None)
            else:
                path, report = build_qa(ws, name, cfg, force=force)
                from clara import io

                rows = io.read_jsonl(path / "train.jsonl")
                self.app.call_from_thread(self._show, rows, report.line(), path)
        except UserError as e:  # said under the buttons, as the other forms do
            self.app.call_from_thread(self._failed, str(e))
        except BaseException:
            self.app.call_from_thread(self.query_one("#qa-status", Static).update, "")
            raise

    def _failed(self, message: str) -> None:
        status = self.query_one("#qa-status", Static)
        status.set_class(True, "field-error")
        status.update(message)

    def _show(self, rows: list[dict], line: str, path: Path | None) -> None:
        table = self.query_one("#qa-preview", DataTable)
        table.clear()
        for row in rows[:200]:
            table.add_row(row.get("origin", ""), str(row.get("page", "")),
                          short(row["question"], 56), short(row["answer"], 40))
        where = f"; written to datasets/{path.name}" if path else \
            f" (preview of the first {PREVIEW_CHUNKS} chunks; nothing written)"
        self.query_one("#qa-status", Static).update(line + where)
        if path is not None:
            self.post_message(QARowBrowser.Changed())


class QARowBrowser(RoutesWorkerErrors, Vertical):
    """The rows of a QA dataset, one per line; `delete` removes the highlighted pair."""

    class Changed(Message):
        """A QA dataset was written or changed."""

    BINDINGS = [Binding("delete", "delete_row", "Delete pair")]
    DEFAULT_CSS = """
    QARowBrowser { height: 1fr; }
    QARowBrowser Horizontal { height: auto; }
    #qa-rows { height: 1fr; }
    #qa-row-detail, #qa-rows-status { height: auto; margin: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Select([], prompt="QA dataset", id="qa-dataset")
            yield Button("Delete pair", id="qa-delete", variant="error")
        yield Static("", id="qa-rows-status")
        yield Table(id="qa-rows", cursor_type="row", zebra_stripes=True)
        yield Static("", id="qa-row-detail", markup=False)

    def on_mount(self) -> None:
        self.query_one("#qa-rows", DataTable).add_columns("#", "origin", "question", "answer")
        self.reload()

    _names: list[str] | None = None

    @work(thread=True, exclusive=True, group="qa-datasets", exit_on_error=False)
    def reload(self) -> None:
        """List the QA datasets (a thread worker: it reads the workspace)."""
        from clara.data.datasets import list_datasets

        ws = self.app.workspace
        names = [d["name"] for d in list_datasets(ws) if d["kind"] == "qa"] if ws else []
        self.app.call_from_thread(self._set_names, names)

    def _set_names(self, names: list[str]) -> None:
        if names == self._names:  # nothing new: the Select and its rows stay as they are
            return
        self._names = names
        select = self.query_one("#qa-dataset", Select)
        current = select.value
        select.set_options([(n, n) for n in names])
        if current in names:
            select.value = current
        elif names:
            select.value = names[0]

    @property
    def path(self) -> Path | None:
        ws = self.app.workspace
        value = self.query_one("#qa-dataset", Select).value
        if ws is None or not isinstance(value, str):
            return None
        return ws.datasets_dir / value / "train.jsonl"

    @on(Select.Changed, "#qa-dataset")
    def _picked(self) -> None:
        self.show_rows()

    def show_rows(self, keep: int = 0) -> None:
        self._read_rows(self.path, keep)

    @work(thread=True, exclusive=True, group="qa-rows", exit_on_error=False)
    def _read_rows(self, path: Path | None, keep: int) -> None:
        from clara import io

        rows = io.read_jsonl(path) if path and path.is_file() else []
        self.app.call_from_thread(self._fill_rows, path, rows, keep)

    def _fill_rows(self, path: Path | None, rows: list[dict], keep: int) -> None:
        table = self.query_one("#qa-rows", DataTable)
        table.clear()
        self.rows = rows
        for i, row in enumerate(self.rows):
            table.add_row(str(i + 1), row.get("origin", ""), short(row["question"], 56),
                          short(row["answer"], 40), key=str(i))
        if self.rows:
            table.move_cursor(row=min(keep, len(self.rows) - 1))
        self.query_one("#qa-rows-status", Static).update(
            f"{len(self.rows)} pair(s)    Del deletes the highlighted pair" if path else
            "no QA dataset yet (generate one above)")

    @on(DataTable.RowHighlighted, "#qa-rows")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or not getattr(self, "rows", None):
            return
        row = self.rows[int(str(event.row_key.value))]
        where = ", ".join(f"{k} {row[k]}" for k in ("source", "page", "chunk") if k in row)
        self.query_one("#qa-row-detail", Static).update(
            f"Q: {row['question']}\nA: {row['answer']}\nkeywords: "
            f"{', '.join(row.get('keywords') or [])}    {where}")

    @on(Button.Pressed, "#qa-delete")
    def action_delete_row(self) -> None:
        from clara.data.qa import delete_rows

        table = self.query_one("#qa-rows", DataTable)
        path = self.path
        if path is None or not getattr(self, "rows", None):
            return
        i = table.cursor_row
        left = delete_rows(path, [i])
        self.show_rows(keep=i)
        self.app.notify(f"deleted pair {i + 1}; {left} left", title="QA", timeout=2)


class SourceReader(RoutesWorkerErrors, Vertical):
    """A source's full text with page markers, searchable: Enter in the search field goes to the
    next match."""

    DEFAULT_CSS = """
    SourceReader { height: 1fr; }
    SourceReader Horizontal { height: auto; }
    #reader-search { width: 1fr; }
    #reader-text { height: 1fr; }
    #reader-status { height: auto; margin: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Select([], prompt="source", id="reader-source")
            yield TextInput(placeholder="search (Enter: next match)", id="reader-search",
                            classes="entry")  # what a user types first: a word to find
        yield Static("", id="reader-status")
        yield TextArea("", id="reader-text", read_only=True, soft_wrap=True)

    def on_mount(self) -> None:
        self.reload()

    _options: list | None = None

    @work(thread=True, exclusive=True, group="reader-sources", exit_on_error=False)
    def reload(self) -> None:
        """List the sources (a thread worker: it reads the workspace)."""
        from clara.data.sources import list_sources

        ws = self.app.workspace
        options = [(s.name, s.id) for s in list_sources(ws)] if ws else []
        self.app.call_from_thread(self._set_options, options)

    def _set_options(self, options: list) -> None:
        if options == self._options:  # nothing new: the source being read stays
            return
        self._options = options
        select = self.query_one("#reader-source", Select)
        current = select.value
        select.set_options(options)
        ids = [sid for _, sid in options]
        if current in ids:
            select.value = current
        elif ids:
            select.value = ids[0]

    @on(Select.Changed, "#reader-source")
    def _picked(self, event: Select.Changed) -> None:
        if self.app.workspace is not None and isinstance(event.value, str):
            self._read(event.value)

    @work(thread=True, exclusive=True, group="reader-read", exit_on_error=False)
    def _read(self, source_id: str) -> None:
        from clara.data.reading import page_marked_text
        from clara.data.sources import read_source

        source = read_source(self.app.workspace, source_id)
        text = page_marked_text(source.pages)
        self.app.call_from_thread(self._show, source, text)

    def _show(self, source, text: str) -> None:
        self.text = text
        self.query_one("#reader-text", TextArea).load_text(self.text)
        self.query_one("#reader-status", Static).update(
            f"{source.name}: {len(source.pages)} page(s), {source.characters:,} characters")
        self.match = -1

    @on(Input.Changed, "#reader-search")
    def _query_changed(self) -> None:
        self.match = -1

    @on(Input.Submitted, "#reader-search")
    def next_match(self) -> None:
        from clara.data.reading import find_all

        query = self.query_one("#reader-search", Input).value
        matches = find_all(getattr(self, "text", ""), query)
        status = self.query_one("#reader-status", Static)
        if not matches:
            status.update(f"no match for {query!r}")
            return
        self.match = (getattr(self, "match", -1) + 1) % len(matches)
        m = matches[self.match]
        area = self.query_one("#reader-text", TextArea)
        area.selection = ((m.line, m.column), (m.line, m.column + len(query)))
        area.scroll_cursor_visible(center=True)
        status.update(f"match {self.match + 1}/{len(matches)} of {query!r}, page {m.page}")
