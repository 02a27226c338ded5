"""The demo workspace: the embedded default, built from the material in `data/` on first run.

Each step is a function of the workspace; `build_demo` runs the ones not yet done and reports
progress through a callback, so the CLI and the app can both show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from clara.workspace import Workspace

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_NAME = "demo"

Progress = Callable[[str], None]


def _steps() -> list[tuple[str, Callable[[Workspace], None]]]:
    return []


def demo_is_built(ws: Workspace) -> bool:
    return ws.exists and (ws.path / ".demo-complete").is_file()


def build_demo(root: str | Path, progress: Progress = print, rebuild: bool = False) -> Workspace:
    """Create (or finish) the demo workspace under `root`."""
    import shutil

    ws = Workspace(Path(root), DEMO_NAME)
    if rebuild and ws.path.exists():
        shutil.rmtree(ws.path)
    if demo_is_built(ws):
        return ws
    if not ws.exists:
        progress(f"creating workspace {ws.name} at {ws.path}")
        ws.create(description="The demo: a sample document, datasets and models built from it.")
    steps = _steps()
    for i, (title, step) in enumerate(steps, 1):
        progress(f"[{i}/{len(steps)}] {title}")
        step(ws)
    (ws.path / ".demo-complete").write_text("ok\n")
    progress("demo workspace ready")
    return ws
