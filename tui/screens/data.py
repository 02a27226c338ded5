"""Data mode: import documents, browse datasets (statistics, sample rows), validate files.

All reading and checking is done by `clara.data` (sources, validate, stats); this screen only
runs those functions in thread workers and shows what they return.
"""

from __future__ import annotations

import json
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import (Button, ContentSwitcher, DataTable, DirectoryTree, Input, Label,
                             OptionList, Select, Static, Switch, TabbedContent, TabPane)

from clara.errors import UserError
from tui.widgets.table import Table
from tui.command import command_line
from tui.format import display_path, number, short
from tui.screens.base import ModeScreen, focus_at_end
from tui.widgets.config_form import ConfigForm
from tui.widgets.data_qa import QAGenPanel, QARowBrowser, SourceReader
from tui.widgets.kv import KeyValues
from tui.widgets.live_text import LiveText, TextInput
from tui.widgets.path_input import PathInput
from tui.widgets.switch import StateSwitch

SAMPLE_ROWS = 5


def _row_preview(row) -> str:
    """One line per sample row: its fields, each shortened."""
    if not isinstance(row, dict):
        return short(json.dumps(row, ensure_ascii=False), 200)
    parts = []
    for key, value in row.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}: {short(text, 60)}")
    return "  ·  ".join(parts)


def _relative(ws_path: Path, text: str) -> str:
    """Problems name files inside the workspace by their path relative to it."""
    prefix = str(ws_path) + "/"
    return text.replace(prefix, "")


class DataScreen(ModeScreen):
    TITLE = "Data"
    CSS_PATH = "data.tcss"
    BINDINGS = [
        Binding("ctrl+o", "focus_import", "Import"),
        Binding("ctrl+b", "toggle_browser", "Browse"),
        Binding("ctrl+n", "build", "Build"),
        Binding("ctrl+g", "validate_selected", "Validate"),
        Binding("f6", "reload", "Refresh"),
    ]

    def compose_body(self) -> ComposeResult:
        with TabbedContent(id="data-tabs", initial="sources-tab"):
            with TabPane("Sources", id="sources-tab"):
                with Horizontal(classes="toolbar"):
                    yield PathInput(id="import-path")
                    yield Button("Import", id="import", variant="primary")
                    yield Button("Browse", id="browse")
                yield DirectoryTree(Path.cwd(), id="import-tree", classes="hidden")
                yield Table(id="sources", cursor_type="row", zebra_stripes=True)
                yield Static("", id="sources-status", classes="muted")
            with TabPane("Datasets", id="datasets-tab"):
                with Horizontal(id="datasets-split"):
                    yield Table(id="datasets", cursor_type="row", zebra_stripes=True)
                    with VerticalScroll(id="dataset-detail", classes="panel"):
                        yield Label("Statistics", classes="section-title")
                        yield KeyValues(id="dataset-stats", empty="(select a dataset)")
                        yield Label("Problems", classes="section-title")
                        yield OptionList(id="dataset-problems")
                        yield Label("Sample rows", classes="section-title")
                        yield Static("", id="dataset-samples", markup=False)
            with TabPane("Build", id="build-tab"):
                # focus order: kind, name, the kind's settings, replace, Build (buttons last)
                with Horizontal(classes="toolbar"):
                    yield Select([(title, kind) for kind, (title, _c, _f)
                                  in self._builders().items()], value="cpt", allow_blank=False,
                                 id="build-kind", compact=True)
                    yield TextInput(placeholder="name of the new dataset", id="build-name",
                                    classes="entry")
                yield LiveText("", id="build-command", classes="command-line")
                with ContentSwitcher(id="build-forms", initial="build-form-cpt"):
                    for kind, (_title, cls, _fn) in self._builders().items():
                        yield ConfigForm(cls, id=f"build-form-{kind}")
                with Horizontal(classes="form-buttons"):
                    yield StateSwitch(False, id="build-replace")
                    yield Label("replace a dataset of that name (--force)", classes="switch-label")
                    yield LiveText("", id="build-status")
                    yield Button("Build", id="build", variant="primary")
            with TabPane("Generate QA", id="qa-tab"):
                yield QAGenPanel(id="qa-gen")
            with TabPane("QA rows", id="qa-rows-tab"):
                yield QARowBrowser(id="qa-browser")
            with TabPane("Read", id="read-tab"):
                yield SourceReader(id="source-reader")
            with TabPane("Validate", id="validate-tab"):
                with Horizontal(classes="toolbar"):
                    yield PathInput(id="validate-path", suffixes=(".jsonl",),
                                    placeholder="a dataset's name, folder or .jsonl file")
                    yield Select(self._kind_options(), value="auto", allow_blank=False,
                                 id="validate-kind")
                    yield Button("Validate", id="validate", variant="primary")
                yield Static("", id="validate-status")
                yield OptionList(id="validate-problems")

    @staticmethod
    def _builders() -> dict:
        """kind -> (tab title, config dataclass, builder function) from clara.data.builders."""
        from clara.data import builders as b

        return {"cpt": ("CPT text chunks", b.CptConfig, b.build_cpt),
                "sft": ("SFT chat from QA", b.SftConfig, b.build_sft),
                "stage": ("CLaRa stage 1/2/3", b.StageConfig, b.build_stage)}

    @staticmethod
    def _kind_options() -> list[tuple[str, str]]:
        from clara.data.formats import CHOICES

        return [(k, k) for k in CHOICES]

    def on_mount(self) -> None:
        sources = self.query_one("#sources", DataTable)
        sources.add_columns("id", "name", "kind", "pages", "characters", "imported")
        datasets = self.query_one("#datasets", DataTable)
        datasets.add_column("name", key="name")
        datasets.add_column("kind", key="kind")
        datasets.add_column("train", key="train")
        datasets.add_column("valid", key="valid")
        datasets.add_column("test", key="test")

    def reload(self) -> None:
        ws = self.app.workspace
        for inp in self.query(PathInput):
            inp.suggester.base = Path.cwd()
        if ws is None:
            self.query_one("#sources-status", Static).update("no workspace open (F2)")
            self.query_one("#sources", DataTable).clear()
            self.query_one("#datasets", DataTable).clear()
            return
        self._load_sources()
        self._load_datasets()
        for widget in self.query("QARowBrowser, SourceReader"):
            widget.reload()

    @on(QARowBrowser.Changed)
    def _qa_changed(self) -> None:
        self.query_one(QARowBrowser).reload()
        self._load_datasets()

    def on_resume(self) -> None:
        self.reload()

    # -- sources ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="sources", exit_on_error=False)
    def _load_sources(self) -> None:
        from clara.data.sources import list_sources

        ws = self.app.workspace
        rows = [src.summary() for src in list_sources(ws)] if ws else []
        self.app.call_from_thread(self._fill_sources, rows)

    def _fill_sources(self, rows: list[dict]) -> None:
        if not self.unchanged("sources", (self.app.workspace_name, rows)):
            table = self.query_one("#sources", DataTable)
            table.clear()
            for row in rows:
                table.add_row(row["id"], short(row["name"], 30), row["kind"],
                              number(row["pages"]), number(row["characters"]),
                              str(row.get("imported_at", ""))[:10], key=row["id"])
        self.query_one("#sources-status", Static).update(
            f"{len(rows)} source(s) in {self.app.workspace_name}/sources"
            "    ctrl+o import · ctrl+b browse · Tab completes a path")

    def action_focus_import(self) -> None:
        self.query_one("#data-tabs", TabbedContent).active = "sources-tab"
        self.query_one("#import-path", PathInput).focus()

    def action_toggle_browser(self) -> None:
        self.query_one("#data-tabs", TabbedContent).active = "sources-tab"
        tree = self.query_one("#import-tree", DirectoryTree)
        tree.toggle_class("hidden")
        if not tree.has_class("hidden"):
            tree.focus()

    @on(Button.Pressed, "#browse")
    def _browse(self) -> None:
        self.action_toggle_browser()

    @on(DirectoryTree.FileSelected, "#import-tree")
    def _picked(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#import-path", PathInput).value = str(event.path)
        self.query_one("#import-path", PathInput).focus()

    @on(PathInput.Submitted, "#import-path")
    @on(Button.Pressed, "#import")
    def _import(self) -> None:
        text = self.query_one("#import-path", PathInput).value.strip()
        if not text:
            self.app.show_error("give a file or folder to import")
            return
        if self.app.workspace is None:
            self.app.show_error("open a workspace first (F2)")
            return
        self.query_one("#sources-status", Static).update(f"importing {text} …")
        self._import_files([Path(text).expanduser()])

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def _import_files(self, paths: list[Path]) -> None:
        from clara.data.sources import KINDS, import_files

        files: list[Path] = []
        for path in paths:  # a folder stands for the files in it that can be imported
            if path.is_dir():
                files += sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in KINDS)
            else:
                files.append(path)
        if not files:
            raise UserError(f"{paths[0]}: no .pdf, .txt or .md files in this folder")
        results = import_files(self.app.workspace, files,
                               progress=lambda m: self.app.call_from_thread(self._progress, m))
        self.app.call_from_thread(self._imported, [r.message for r in results])

    def _progress(self, message: str) -> None:
        self.query_one("#sources-status", Static).update(message)

    def _imported(self, messages: list[str]) -> None:
        self.query_one("#import-path", PathInput).value = ""
        self.notify("\n".join(messages[:5]), title=f"Imported {len(messages)} file(s)", timeout=4)
        self._load_sources()

    # -- datasets -----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="datasets", exit_on_error=False)
    def _load_datasets(self) -> None:
        from clara.data.datasets import list_datasets

        ws = self.app.workspace
        rows = list_datasets(ws) if ws else []
        self.app.call_from_thread(self._fill_datasets, rows)

    def _fill_datasets(self, rows: list[dict]) -> None:
        if self.unchanged("datasets", (self.app.workspace_name, rows)):
            return
        table = self.query_one("#datasets", DataTable)
        table.clear()
        for row in rows:
            table.add_row(row["name"], row["kind"], *(number(row.get(s)) for s in
                                                      ("train", "valid", "test")),
                          key=row["name"])
        if rows:
            self._show_dataset(rows[0]["name"])

    @on(DataTable.RowHighlighted, "#datasets")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value:
            self._show_dataset(str(event.row_key.value))

    def _show_dataset(self, name: str) -> None:
        ws = self.app.workspace
        if ws is not None:
            self._inspect_dataset(ws.datasets_dir / name)

    @work(thread=True, exclusive=True, group="dataset-detail", exit_on_error=False)
    def _inspect_dataset(self, folder: Path) -> None:
        from clara.data.chunking import load_tokenizer
        from clara.data.stats import dataset_report
        from clara.data.validate import validate_dataset

        _kind, _counts, problems = validate_dataset(folder)
        report = dataset_report(folder, load_tokenizer(None), samples=SAMPLE_ROWS)
        # the kind as the datasets table and the Train form name it (cpt, sft), the rows'
        # format beside it when it says more (text, chat, completions)
        kind, form = report["kind"], report["format"]
        stats = {"kind": kind, **({"format": form} if form != kind else {}),
                 "tokenizer": report["tokenizer"]}
        for split, numbers in report["splits"].items():
            stats[split] = "  ".join(f"{k} {number(v)}" for k, v in numbers.items())
        for key in ("seed", "sources"):
            if key in report:
                stats[key] = report[key]
        ws_path = self.app.workspace.path if self.app.workspace else folder
        lines = [_relative(ws_path, p.location()) for p in problems]
        self.app.call_from_thread(self._fill_detail, stats, lines, report["samples"])

    def _fill_detail(self, stats: dict, problems: list[str], samples: list) -> None:
        self.query_one("#dataset-stats", KeyValues).set_data(stats)
        plist = self.query_one("#dataset-problems", OptionList)
        plist.clear_options()
        plist.add_options(problems or ["(no problems)"])
        text = "\n".join(f"{i}. {_row_preview(r) if not isinstance(r, UserError) else r}"
                         for i, r in enumerate(samples, 1))
        self.query_one("#dataset-samples", Static).update(text or "(no rows)")

    # -- building -----------------------------------------------------------------------------
    def action_build(self) -> None:
        self.query_one("#data-tabs", TabbedContent).active = "build-tab"
        self.query_one("#build-name", Input).focus()
        self._show_build_command()

    @property
    def build_kind(self) -> str:
        return str(self.query_one("#build-kind", Select).value)

    @on(Select.Changed, "#build-kind")
    def _build_kind_changed(self, event: Select.Changed) -> None:
        self.query_one("#build-forms", ContentSwitcher).current = f"build-form-{self.build_kind}"
        self._show_build_command()
        focused = self.focused
        if focused is not None and (focused is event.select or event.select in focused.ancestors):
            # chosen by keys: now the name (what was typed at once was lost on the list), its
            # cursor at the end: the name typed before stays (Tab into it selects it all)
            focus_at_end(self.query_one("#build-name", Input))

    @on(Input.Changed, "#build-name")
    @on(Switch.Changed, "#build-replace")
    @on(ConfigForm.Changed)
    def _show_build_command(self) -> None:
        """The `clara data build ...` command the form stands for (copyable)."""
        try:
            form = self.query_one(f"#build-form-{self.build_kind}", ConfigForm)
            name = self.query_one("#build-name", Input).value.strip() or "NAME"
            values = form.changed_values()
            words = [self.build_kind]
            if self.build_kind == "stage":  # `clara data build stage2 NAME ...`
                words = [f"stage{form.raw_values().get('stage') or 1}"]
                values.pop("stage", None)
            text = command_line(["clara", "data", "build", *words, name], values,
                                flags={"force": self.query_one("#build-replace", Switch).value})
        except UserError as e:
            text = f"not valid yet: {e}"
        self.query_one("#build-command", Static).update(text)

    def _say(self, text: str, error: bool = False) -> None:
        status = self.query_one("#build-status", Static)
        status.set_class(error, "field-error")
        status.update(text)

    @on(Input.Submitted, "#build-name")
    @on(ConfigForm.Submitted, "#build-forms ConfigForm")
    @on(Button.Pressed, "#build")
    def _build(self) -> None:
        """Enter in any field of the form, or the button: build, or say why not (inline)."""
        if self.app.workspace is None:
            self._say("open a workspace first (F2)", error=True)
            return
        name = self.query_one("#build-name", Input).value.strip()
        if not name:
            self._say("give the new dataset a name (the field at the top)", error=True)
            self.query_one("#build-name", Input).focus()
            return
        kind = self.build_kind
        form = self.query_one(f"#build-form-{kind}", ConfigForm)
        try:
            values = {k: v for k, v in form.raw_values().items() if v is not None}
            config = form.config_cls(**values)
        except (UserError, TypeError) as e:
            self._say(str(e), error=True)
            return
        force = self.query_one("#build-replace", Switch).value
        if not force and (self.app.workspace.datasets_dir / name).exists():
            self._say(f"dataset {name!r} exists: switch on 'replace' to build it again",
                      error=True)
            return
        self._say(f"building {name} ({kind}) …")
        self._run_build(kind, name, config, force)

    @work(thread=True, exclusive=True, group="build", exit_on_error=False)
    def _run_build(self, kind: str, name: str, config, force: bool = False) -> None:
        try:
            folder = self._builders()[kind][2](self.app.workspace, name, config, force=force)
        except UserError as e:  # bad input: said beside the button, the form stays as it is
            self.app.call_from_thread(self._say, f"not built: {e}", True)
            return
        except BaseException as e:
            self.app.call_from_thread(self._say, f"not built: {type(e).__name__}", True)
            raise
        self.app.call_from_thread(self._built, folder)

    _last_built: str | None = None

    def _built(self, folder: Path) -> None:
        self._last_built = folder.name
        self._say(f"built dataset {folder.name}")
        self.notify(f"dataset {folder.name} is ready", title="Build", timeout=3)
        self._load_datasets()

    # -- validation -----------------------------------------------------------------------------
    def action_validate_selected(self) -> None:
        """ctrl+g: from the Datasets tab, validate the highlighted dataset (every row) at once;
        from the Build tab, the dataset just built; elsewhere, the Validate tab with its path
        field. It only switched tabs, and a user who had a dataset highlighted (or had just
        built one) saw an empty form."""
        tabs = self.query_one("#data-tabs", TabbedContent)
        table = self.query_one("#datasets", DataTable)
        ws = self.app.workspace
        name = None
        if tabs.active == "datasets-tab" and table.row_count and ws is not None:
            name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        elif tabs.active == "build-tab" and ws is not None and self._last_built \
                and (ws.datasets_dir / self._last_built).is_dir():
            name = self._last_built
        tabs.active = "validate-tab"
        field = self.query_one("#validate-path", PathInput)
        field.focus()
        if name:
            field.value = display_path(ws.datasets_dir / name)
            self._validate()

    @on(PathInput.Submitted, "#validate-path")
    @on(Button.Pressed, "#validate")
    def _validate(self) -> None:
        text = self.query_one("#validate-path", PathInput).value.strip()
        status = self.query_one("#validate-status", Static)
        if not text:  # said inline, as every form says why not
            status.update("give a dataset's name, folder or .jsonl file to validate")
            return
        kind = str(self.query_one("#validate-kind", Select).value)
        status.update(f"validating {text} …")
        self._run_validation(text, kind)

    @work(thread=True, exclusive=True, group="validate", exit_on_error=False)
    def _run_validation(self, text: str, kind: str) -> None:
        from clara.data.datasets import resolve
        from clara.data.validate import validate_dataset, validate_file

        try:  # as `clara data validate`: a path, else a dataset of the workspace by name
            path = resolve(self.app.workspace, Path(text).expanduser())
        except UserError as e:  # a dataset's name gave "no such file"
            self.app.call_from_thread(self.query_one("#validate-status", Static).update,
                                      str(e))
            self.app.call_from_thread(self.query_one("#validate-problems",
                                                     OptionList).clear_options)
            return
        if path.is_dir():
            kind, counts, problems = validate_dataset(path, kind)
            rows = sum(counts.values())
        else:
            problems = validate_file(path, kind)
            rows = None
        lines = [p.location() for p in problems]
        self.app.call_from_thread(self._show_validation, path, kind, rows, lines)

    def _show_validation(self, path: Path, kind: str, rows: int | None, lines: list[str]) -> None:
        where = display_path(path)
        verdict = "valid" if not lines else f"{len(lines)} problem(s)"
        counted = f", {rows} rows" if rows is not None else ""
        self.query_one("#validate-status", Static).update(f"{where} ({kind}{counted}): {verdict}")
        out = self.query_one("#validate-problems", OptionList)
        out.clear_options()
        out.add_options([line.replace(str(path.parent) + "/", "") for line in lines])

    def palette_commands(self):
        yield SystemCommand("Import documents", "Import a file or folder into sources",
                            self.action_focus_import)
        yield SystemCommand("Build a dataset", "CPT, SFT or a CLaRa stage from the sources",
                            self.action_build)
        yield SystemCommand("Validate a dataset file", "Check a JSONL file row by row",
                            self.action_validate_selected)
