"""The demo build's scheduler: steps run side by side once the steps they need are done, at most
`parallel` at once; a failure starts nothing more and is raised once the running steps end; the
ETA is the length of that schedule."""

import threading
import time

import pytest

from clara import io
from clara.demo import (PROGRESS_FILE, DemoConfig, Reporter, Step, makespan, run_steps,
                        steps)
from clara.workspace import Workspace


def _ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path, "demo")
    ws.create()
    return ws


def _timed(log: list, seconds: float, fail: bool = False):
    def fn(ws, cfg, report):
        log.append(("start", threading.current_thread().name, time.monotonic()))
        report.fraction(0.5)
        time.sleep(seconds)
        log.append(("end", threading.current_thread().name, time.monotonic()))
        if fail:
            raise RuntimeError("step broke")
    return fn


def _span(log, step_id):
    name = f"demo-{step_id}"
    start = next(t for k, n, t in log if k == "start" and n == name)
    end = next(t for k, n, t in log if k == "end" and n == name)
    return start, end


def test_steps_run_side_by_side_after_what_they_need(tmp_path):
    ws, log = _ws(tmp_path), []
    todo = [Step("a", "a", _timed(log, 0.05), 1), Step("b", "b", _timed(log, 0.3), 1, after=("a",)),
            Step("c", "c", _timed(log, 0.3), 1, after=("a",)),
            Step("d", "d", _timed(log, 0.05), 1, after=("b", "c"))]
    report = Reporter(ws, todo, lambda m: None, slots=2)
    run_steps(ws, DemoConfig(parallel=2), todo, report)
    a, b, c, d = (_span(log, s) for s in "abcd")
    assert b[0] >= a[1] and c[0] >= a[1]  # after what they need
    assert b[0] < c[1] and c[0] < b[1]  # b and c overlapped
    assert d[0] >= max(b[1], c[1])
    assert report.finished == {0, 1, 2, 3}

    log.clear()  # one at a time: no overlap, in list order
    run_steps(ws, DemoConfig(parallel=1), todo, Reporter(ws, todo, lambda m: None))
    b, c = _span(log, "b"), _span(log, "c")
    assert c[0] >= b[1]


def test_a_failed_step_starts_nothing_more_and_is_raised_after_the_running_end(tmp_path):
    ws, log = _ws(tmp_path), []
    todo = [Step("a", "a", _timed(log, 0.05, fail=True), 1),
            Step("b", "b", _timed(log, 0.4), 1),
            Step("c", "c", _timed(log, 0.05), 1, after=("a",))]
    report = Reporter(ws, todo, lambda m: None, slots=2)
    with pytest.raises(RuntimeError, match="step broke"):
        run_steps(ws, DemoConfig(parallel=2), todo, report)
    assert any(n == "demo-b" and k == "end" for k, n, _ in log)  # b was let finish
    assert not any(n == "demo-c" for _, n, _ in log)  # c never started
    assert report.finished == {1}


def test_the_eta_is_the_schedules_length():
    todo = [Step("sft", "", None, 100), Step("clara", "", None, 200, after=("sft",)),
            Step("eval-1", "", None, 30, after=("sft",)), Step("eval-2", "", None, 10,
                                                                after=("sft",)),
            Step("eval-3", "", None, 60, after=("clara",)), Step("eval-4", "", None, 40,
                                                                 after=("clara",))]
    left = [s.seconds for s in todo]
    # two slots: the evaluations of the SFT run go beside CLaRa, CLaRa's two side by side
    assert makespan(todo, left, 2) == 100 + 200 + 60
    assert makespan(todo, left, 1) == sum(left)
    assert makespan(todo, [0, 50, 0, 0, 60, 40], 2) == 50 + 60  # sft and its evals done


def test_the_progress_file_names_every_running_step(tmp_path):
    ws = _ws(tmp_path)
    todo = [s for s in steps(DemoConfig(hrm=False)) if s.id in ("sft", "clara")] + \
        [s for s in steps(DemoConfig(hrm=False)) if s.id.startswith("eval-demo-trained")]
    report = Reporter(ws, todo, lambda m: None, slots=2)
    report.start(1)
    report.start(2)
    doc = io.read_json(ws.path / PROGRESS_FILE)
    assert doc["id"] == "clara" and doc["step"] == 2
    assert doc["title"] == f"{todo[1].title} + {todo[2].title}"
    report.finish(1)
    report.finish(2)
    assert report.ready == [todo[1].ready, todo[2].ready]


@pytest.mark.parametrize("size", [(100, 30), (120, 40)])
def test_the_build_banner_shows_above_the_footer(tmp_path, size):
    """The banner docks at the bottom like the footer; docked to one edge they would overlap,
    the later one (the footer) on top: the banner sits on the row above it, the screen's own
    widgets end above the banner, and the line starts with the ETA."""
    import asyncio

    from tests.tui_helpers import make_app, settle, wait_for
    from tui.widgets.demo_banner import DemoBanner
    from tui.widgets.footer import ClaraFooter

    ws = _ws(tmp_path)
    todo = steps(DemoConfig(hrm=False))
    report = Reporter(ws, todo, lambda m: None, slots=2)
    for i in (3, 4):  # sft and clara written as running by this (live) process
        report.start(i)

    async def go():
        app = make_app(tmp_path, "demo", start_mode="runs")
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            banner = app.screen.query_one(DemoBanner)
            await wait_for(pilot, lambda: "building the demo" in str(banner.render()),
                           timeout=10, what="the build banner")
            footer = app.screen.query_one(ClaraFooter)
            assert banner.region.height == 1 and banner.region.bottom == footer.region.y
            body = [w for w in app.screen.children if w not in (banner, footer)
                    and w.display and w.region.height]
            assert max(w.region.bottom for w in body) <= banner.region.y
            assert str(banner.render()).startswith("building the demo [4/")
            assert "ETA" in str(banner.render()).split("·")[0]

    asyncio.run(go())
