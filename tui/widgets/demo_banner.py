"""A line above the footer while the demo workspace builds in the background: step, progress,
ETA and the parts ready so far (read from the build's `.demo-build.json` once a second)."""

from __future__ import annotations

from textual.widgets import Static


class DemoBanner(Static):
    DEFAULT_CSS = """
    DemoBanner { height: 1; dock: bottom; margin-bottom: 1; background: $boost; color: $warning;
                 padding: 0 1; }
    DemoBanner.hidden { display: none; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", classes="hidden", markup=False, **kwargs)
        self.ready_seen: set[str] | None = None

    def on_mount(self) -> None:
        self.refresh_state()
        self.set_interval(1.0, self.refresh_state)

    def refresh_state(self) -> None:
        from clara.demo import DEMO_NAME, progress_line, read_progress

        ws = self.app.workspace
        doc = read_progress(ws) if ws is not None and ws.name == DEMO_NAME else None
        if doc is None or (doc.get("state") == "done" and self.ready_seen is None):
            self.add_class("hidden")
            return
        ready = set(doc.get("ready") or [])
        if self.ready_seen is not None and self.screen.is_current:
            for part in sorted(ready - self.ready_seen):
                self.app.notify(f"{part}", title="Demo: ready", timeout=4)
        self.ready_seen = ready
        self.update(progress_line(doc))
        self.remove_class("hidden")  # when done, "demo ready" stays for this session
