"""Shared by the tests of the Textual workbench: a pinned platform and waiting for workers."""

from __future__ import annotations

import asyncio
import time

PLATFORM = {"backend": "cpu", "dtype": "float32",
            "blas_preload": "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"}


def make_app(root, workspace="test", **kwargs):
    from tui.app import WorkbenchApp

    app = WorkbenchApp(root, workspace, platform_info=PLATFORM, **kwargs)
    app.animation_level = "none"  # tab underlines and scrolling land at once: stable snapshots
    return app


async def settle(pilot, rounds: int = 3) -> None:
    """Let workers finish and their results reach the widgets."""
    from textual.app import App
    from textual.screen import Screen

    from textual.widgets import Input, TextArea
    from textual.worker import WorkerCancelled

    for _ in range(rounds):
        await pilot.pause()
        # a blinking cursor would make snapshots depend on the moment they are taken
        for widget in pilot.app.screen.query("Input, TextArea"):
            if isinstance(widget, (Input, TextArea)):
                widget.cursor_blink = False
        # the app's own workers (on screens and the app); widgets such as DirectoryTree keep a
        # loader worker alive for good, and a tail of a running run goes on until it ends;
        # the Train screen's CLaRa forms wait for a slow import (tests that need them wait)
        mine = [w for w in pilot.app.workers
                if (isinstance(w.node, (App, Screen)) or w.group not in ("_loader",))
                and not w.group.startswith("tail-") and w.group != "train-clara-forms"
                and not w.is_finished]
        if mine:
            try:
                await pilot.app.workers.wait_for_complete(mine)
            except WorkerCancelled:  # an exclusive worker replaced by a newer one: wait again
                continue
    await pilot.pause()


async def wait_for(pilot, predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate()` while the app runs (workers keep going) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)
        await asyncio.sleep(0)


def shown(widget) -> str:
    """The text `widget` shows on screen now (its rendered lines, without colours): what a
    monochrome terminal or a screenshot reads."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))
