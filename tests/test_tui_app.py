"""The workbench shell: modes, help, command palette, the one error handler, run_app."""

from __future__ import annotations

import asyncio

from textual.containers import VerticalScroll
from textual.widgets import DataTable, Tabs

from clara.errors import UserError
from clara.workspace import Workspace
from tests.tui_helpers import make_app, settle, wait_for


def test_modes_switch_by_keys_and_header_shows_workspace_and_platform(workspace):
    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert app.current_mode == "workspaces"
            seen = set()
            for key, mode in (("f3", "data"), ("f4", "train"), ("f5", "runs"),
                              ("f2", "workspaces"), ("d", "workspaces"), ("escape", "workspaces"),
                              ("f3", "data"), ("r", "data"), ("t", "data"), ("f7", "chat"),
                              ("f8", "eval"), ("e", "eval"), ("f9", "models"), ("f5", "runs"),
                              ("c", "runs"), ("f2", "workspaces"), ("f8", "eval")):
                if mode in seen and mode != app.current_mode:
                    # a screen shown before paints at once: Textual's 50 ms hold of every
                    # paint after a switch (masking a screen composing itself) is left out
                    app.switch_mode(mode)
                    assert app._batch_count == 0, mode
                await pilot.press(key)
                await settle(pilot)
                assert app.current_mode == mode, key
                # a field has the focus, never the tab bar (letters typed there were lost)
                assert not isinstance(app.focused, Tabs), mode
                assert app.focused is not None or key == "escape", mode
                if mode == "data" and key == "f3" and mode not in seen:
                    assert app.focused.id == "import-path"
                seen.add(mode)
                # Tab goes from field to field: a scrolling panel of fields is no stop of its own
                stops = [w.id for w in app.screen.focus_chain if isinstance(w, VerticalScroll)
                         and w.query("Input, Select, SelectionList, Switch")]
                assert not stops, (mode, stops)
            # the current mode's key again: nothing switches, and the screen's own repaints are
            # not left skipped (a flag of the whole-screen paint at a switch stayed set)
            await pilot.press("f8")
            await settle(pilot)
            assert app.current_mode == "eval" and not app.screen._painted_whole
            header = app.screen.query_one("ClaraHeader")
            line = str(header.render())
            assert "workspace test" in line and "Eval" in line
            assert "cpu · float32 · BLAS openblas" in line
            # a switch while a batch update is open (Markdown.update holds one across awaits:
            # the Runs report, refilled while a training runs): Textual drops the switch's
            # paint, and the new mode stayed unpainted for seconds; now it is painted again
            # when the batch ends
            from textual._compositor import ChopsUpdate

            header_painted = []  # frames that paint the first row (the header: the mode's name)
            display = app._display
            app._display = lambda screen, update: (header_painted.append(
                any(y == 0 for y, _, _ in update.spans) if isinstance(update, ChopsUpdate)
                else update is not None), display(screen, update))
            app._begin_batch()
            await pilot.press("f9")
            await pilot.pause(0.1)
            assert app.current_mode == "models"
            header_painted.clear()
            app._end_batch()
            await pilot.pause(0.2)
            assert any(header_painted)
            del app._display
            # HRM (F10, off the mode bar) fits the screen: its tabs overflowed it, the screen
            # scrolled and the mode bar went off the top
            await pilot.press("f10")
            await settle(pilot)
            assert app.current_mode == "hrm"
            assert app.screen.query_one("ModeBar").region.y == 1
            assert app.errors == []

    asyncio.run(go())


def test_keys_typed_ahead_land_where_the_keys_before_them_sent_the_focus(workspace):
    """Typing fast (or while the app is busy) delivers keys in one burst. Those after a key that
    moves the focus (ctrl+n, ctrl+o) or opens a mode whose screen is still being built went to
    the old focus, or nowhere, and were lost; now each key waits for the one before it, except
    characters typed into a text field, which go on together."""
    from textual import events

    def burst(app, *keys):
        for key in keys:  # all queued at once, as a terminal delivers fast typing
            app.post_message(events.Key(key, key if len(key) == 1 else None))

    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            # F3's screen is built while the rest of the keys wait
            burst(app, "f3", "ctrl+o", *"/tmp/notes")
            await wait_for(pilot, lambda: getattr(app.focused, "id", "") == "import-path"
                           and app.focused.value == "/tmp/notes", what="the typed path")
            turns = []  # each key handed on alone waits for its effects (a frame at least)
            set_timer = app.set_timer
            app.set_timer = lambda delay, *a, **k: (
                turns.append(delay) if delay == app.KEY_SETTLE_S else None,
                set_timer(delay, *a, **k))[1]
            burst(app, "escape", "ctrl+n", *"nb-cpt")  # a built screen: another field
            await wait_for(pilot, lambda: getattr(app.focused, "id", "") == "build-name"
                           and app.focused.value == "nb-cpt", what="the typed name")
            # characters into a text field go on behind one another: escape, ctrl+n, then the
            # six letters at once (not one frame each)
            assert len(turns) == 3, turns
            assert app.current_mode == "data"  # n, b, t, ... typed, never run as commands
            assert app.screen.query_one("#import-path").value == "/tmp/notes"
            # ctrl+q quits at once, even behind a key whose effects have not landed yet
            app._key_turn, app._typing_into = -1, None  # a mode key in flight, say
            burst(app, "x", "ctrl+q")
            await wait_for(pilot, lambda: app._exit, what="the quit")
            assert app.focused.value == "nb-cpt"  # the x still waits

    asyncio.run(go())


def test_mode_screens_are_built_in_the_background_and_shown_as_built(workspace):
    """After the first screen is shown, the other modes' screens are built one by one (their
    first visit then costs no compose); switching shows the very screen built. A mode not
    built yet shows a placeholder at once, and the keys typed meanwhile reach its screen."""
    from textual.widgets import Input

    from tui.screens.base import LoadingScreen
    from tui.screens.data import DataScreen

    async def go():
        app = make_app(workspace.root, prebuild=True)
        app.PREBUILD_PAUSE_S = 0.0
        app.PREBUILD_IDLE_S = 1e9  # nothing built in the background yet
        app.PREBUILD_ORDER = ("data", "train", "runs", "workspaces")  # enough to show it
        async with app.run_test(size=(100, 30)) as pilot:
            shown = []
            app.screen_change_signal.subscribe(app, lambda s: shown.append(type(s)))
            await pilot.press("f3", "ctrl+n", "a", "b", "c")  # Data, a new dataset, its name
            assert shown[0] is LoadingScreen
            await wait_for(pilot, lambda: isinstance(app.screen, DataScreen), timeout=60,
                           what="the Data screen in place of its placeholder")
            data = app.screen
            await wait_for(pilot, lambda: data.query_one("#build-name", Input).value == "abc",
                           what="the keys typed meanwhile in the name field")
            await pilot.press("f2")
            app.PREBUILD_IDLE_S = 0.0
            others = set(app.PREBUILD_ORDER) - {"workspaces", "data"}
            await wait_for(pilot, lambda: set(app._prebuilt) == others and all(
                s.is_mounted for s in app._prebuilt.values()), timeout=120,
                what="the screens built in the background")
            built = dict(app._prebuilt)
            assert not any(s.is_current for s in built.values())
            # laid out in the background too, for the terminal's width (100: forms stack their
            # help under the field); Textual gives that class only to the screen shown
            await wait_for(pilot, lambda: built["train"].query_one("#launch").region,
                           what="Train laid out in the background")
            assert all(s.has_class("-narrow") for s in built.values())
            await pilot.press("f4")
            await settle(pilot)
            assert app.screen is built["train"] and "train" not in app._prebuilt
            assert app.screen.query_one("#launch")  # composed, mounted, filled
            await pilot.press("f3")
            assert app.screen is data
            await pilot.press("f5")
            await settle(pilot)
            assert app.screen is built["runs"]

    asyncio.run(go())


def test_help_screen_opens_and_closes(workspace):
    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f1")
            await pilot.pause()
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            await pilot.pause()
            assert type(app.screen).__name__ == "WorkspacesScreen"

    asyncio.run(go())


def test_no_mode_screen_has_a_letter_key_and_a_text_field(workspace):
    """A key is never both text and a command: a screen with a text field binds no printable
    character (defect 1)."""
    from textual.binding import Binding

    from tui.modes import MODES

    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            for b in app.BINDINGS:
                assert len(b.key) > 1, f"app binds the letter {b.key!r}"
            for m in MODES:
                await pilot.press(m.key)
                await settle(pilot)
                screen = app.screen
                if not screen.query("Input, TextArea"):
                    continue
                for cls in type(screen).__mro__:
                    for b in cls.__dict__.get("BINDINGS", []):
                        if isinstance(b, Binding):
                            for key in b.key.split(","):
                                assert len(key.strip()) > 1, (m.name, key)

    asyncio.run(go())


def test_help_and_palette_list_the_keys_and_actions_of_the_mode(workspace):
    """F1 in Runs lists s/u/m and the tab keys; the palette in Runs offers Stop, Resume, every tab
    (defect 8)."""
    from tui.screens.help import help_text

    async def go():
        app = make_app(workspace.root, start_mode="runs")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            text = help_text(app.screen)
            for item in ("`s`", "Stop", "`u`", "Resume", "`m`", "Compare", "`ctrl+t`",
                         "Delete", "F9", "Models"):
                assert item in text, item
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for wanted in ("Stop run", "Resume run", "Runs: show tab Events",
                           "Runs: show tab Report", "Go to Chat (F7)"):
                assert wanted in titles, wanted
            await pilot.press("f4")
            await settle(pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Launch training" in titles
            assert "Train: Next tab (ctrl+t)" in titles
            await pilot.press("f1")
            await pilot.pause()
            assert type(app.screen).__name__ == "HelpScreen"
            assert "ctrl+l" in help_text(app.screen.for_screen)

    asyncio.run(go())


def test_sub_tabs_change_by_key(workspace):
    """ctrl+t / ctrl+y walk the mode's tabs, from a text field too (defect 8)."""
    from textual.widgets import TabbedContent

    async def go():
        app = make_app(workspace.root, start_mode="data")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            tabs = app.screen.query_one("#data-tabs", TabbedContent)
            panes = [p.id for p in tabs.query("TabPane") if p.parent.parent is tabs]
            assert tabs.active == panes[0] == "sources-tab" and len(panes) >= 4
            app.screen.query_one("#import-path").focus()
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert tabs.active == panes[1]
            # the new tab's first field has the focus (with none, Tab went to the tab bar
            # first and letters typed at once were lost)
            assert app.focused is not None and tabs.get_pane(panes[1]) in app.focused.ancestors
            await pilot.press(*["ctrl+t"] * (len(panes) - 1))  # round to the first again
            await pilot.pause()
            assert tabs.active == panes[0]
            await pilot.press("ctrl+y")
            await pilot.pause()
            assert tabs.active == panes[-1]
            await pilot.press("f5", "ctrl+t")
            await settle(pilot)
            assert app.screen.query_one("#run-tabs", TabbedContent).active == "tab-config"

    asyncio.run(go())


def test_worker_failure_opens_a_dialog_and_the_app_keeps_running(workspace):
    """A UserError raised in a screen's worker reaches the one handler; the app goes on."""
    messages = []

    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
            await settle(pilot)
            screen = app.screen

            def fail():
                raise UserError("data/x.jsonl:3: text: missing")

            screen.run_worker(fail, thread=True, exit_on_error=False)
            await wait_for(pilot, lambda: app.errors and app.screen.query("#error-message"),
                           what="the error dialog")  # pushed, then composed
            assert app.errors == ["data/x.jsonl:3: text: missing"]
            assert type(app.screen).__name__ == "ErrorDialog"
            assert "data/x.jsonl:3: text: missing" in str(
                app.screen.query_one("#error-message").render())
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen and app.is_running
            # an unexpected exception is shown with its type, and still does not end the app
            screen.run_worker(lambda: 1 / 0, thread=True, exit_on_error=False)
            await wait_for(pilot, lambda: len(app.errors) == 2, what="second error")
            assert app.errors[1].startswith("ZeroDivisionError")
            await pilot.press("enter")
            await pilot.press("f3")
            await settle(pilot)
            assert app.current_mode == "data" and app.is_running

    asyncio.run(go())
    names = {type(m).__name__ for m in messages}
    assert "StateChanged" in names  # the worker's failure travelled as a message


def test_command_palette_opens_a_workspace(workspace):
    Workspace(workspace.root, "other").create(description="second")

    async def go():
        app = make_app(workspace.root)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"open workspace other")
            from textual.command import CommandList

            def found() -> bool:  # the search's hits are listed, "other" highlighted first
                hits = app.screen.query(CommandList)
                return bool(hits) and hits.first().option_count > 0 and "other" in str(
                    hits.first().get_option_at_index(0).prompt)

            await wait_for(pilot, found, what="the palette's hit")
            await pilot.press("enter")
            await settle(pilot)
            assert app.workspace_name == "other"
            table = app.screen.query_one("#workspaces", DataTable)
            assert table.get_cell("other", "mark") == "●"

    asyncio.run(go())
    from tui.recent import load_recent

    assert load_recent(workspace.root)[0] == "other"


def test_opening_a_missing_workspace_reports_it(root):
    async def go():
        app = make_app(root, workspace="nowhere")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert app.workspace is None
            app.open_workspace("nowhere")
            await pilot.pause()
            assert app.errors and "no workspace 'nowhere'" in app.errors[0]
            assert app.workspace_name == "nowhere"

    asyncio.run(go())


def test_run_app_is_what_the_cli_calls():
    import inspect

    from tui.app import run_app

    assert list(inspect.signature(run_app).parameters) == ["root", "workspace"]


def test_a_full_frame_writes_only_the_cells_that_changed():
    """A mode switch repaints the whole screen: only the cells that differ from what the
    terminal shows are written (a partial update too), and a terminal that applies the writes
    shows every frame exactly."""
    import re

    from rich.console import Console
    from rich.segment import Segment
    from rich.style import Style
    from textual._compositor import ChopsUpdate, LayoutUpdate
    from textual.geometry import Region
    from textual.strip import Strip

    from tui.frames import ShownCells

    console = Console(color_system="truecolor", force_terminal=True)
    width, height = 20, 3
    grey, bold = Style(bgcolor="#202020"), Style(bold=True, color="#ff8800")

    def frame(rows: list[str]) -> LayoutUpdate:  # the first 5 cells of each row in bold
        return LayoutUpdate([[Strip([Segment(r[:5], bold), Segment(r[5:], grey)])]
                             for r in rows], Region(0, 0, width, height))

    screen = [[" "] * width for _ in range(height)]

    def apply(text: str) -> None:  # a terminal: cursor moves and text, colours ignored
        y = x = 0
        for move, chars in re.findall(r"\x1b\[(\d+;\d+)H|((?:[^\x1b]|\x1b\[[\d;]*m)+)", text):
            if move:
                y, x = (int(v) - 1 for v in move.split(";"))
            for ch in re.sub(r"\x1b\[[\d;]*m", "", chars):
                screen[y][x] = ch
                x += 1

    def shown() -> list[str]:
        return ["".join(row) for row in screen]

    cells = ShownCells()
    first = ["clara  Data".ljust(width), "F2 a F3 b F4 c".ljust(width), "^q quit".ljust(width)]
    out = cells.update(frame(first), console).render_segments(console)
    apply(out)
    assert shown() == first
    # a partial update (a character typed on row 1), then a switch that repaints everything
    chops = ChopsUpdate([{}, {0: Strip([Segment("F2 X", bold)])}, {}], [(1, 0, 4)],
                        [[], [width], []])
    out = cells.update(chops, console).render_segments(console)
    assert re.sub(r"\x1b\[[\d;]*[mH]", "", out) == "X"  # "F2 " is on screen already
    apply(out)
    assert shown()[1] == "F2 X F3 b F4 c".ljust(width)
    second = ["clara  Train".ljust(width), first[1], first[2]]
    out = cells.update(frame(second), console).render_segments(console)
    apply(out)
    assert shown() == second
    plain = re.sub(r"\x1b\[[\d;]*[mH]", "", out)
    assert plain == "Train" + "a", plain  # the title's changed cells; the typed X put back
    # the same frame again writes nothing; a resize forgets what the terminal shows
    assert cells.update(frame(second), console).render_segments(console) == ""
    cells.forget()
    assert re.sub(r"\x1b\[[\d;]*[mH]", "", cells.update(frame(second), console)
                  .render_segments(console)) == "".join(second)


def test_a_table_whose_columns_widen_draws_its_cells_at_the_new_width():
    """DataTable widens columns on an idle turn but kept cells rendered before at the old width
    ("lor" for "lora-demo" in Runs, "lora-demo" after it became longer): tui/widgets/table.py."""
    from textual.app import App

    from tui.widgets.table import Table

    class One(App):
        CSS = "Table { width: 1fr; height: 1fr; }"  # fixed size, as the app's tables

        def compose(self):
            yield Table()

    def shown(app) -> str:
        return "".join(s.text for s in app.query_one(Table).render_line(1)).strip()

    async def go():
        app = One()
        async with app.run_test(size=(60, 8)) as pilot:
            table = app.query_one(Table)
            table.add_column("run", key="id")
            await pilot.pause()
            table.add_row("lora-demo", key="a")
            assert shown(app) == "lor"  # drawn before the idle turn that widens the column
            await pilot.pause()
            await pilot.pause()
            assert shown(app) == "lora-demo"
            table.update_cell("a", "id", "lora-demo-longer", update_width=True)
            await pilot.pause()
            await pilot.pause()
            assert shown(app) == "lora-demo-longer"

    asyncio.run(go())
