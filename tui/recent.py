"""Recently opened workspaces, remembered in `.clara-recent.json` under the workspace root."""

from __future__ import annotations

from pathlib import Path

from clara import io

RECENT_FILE = ".clara-recent.json"
KEEP = 10


def recent_path(root: Path) -> Path:
    return Path(root) / RECENT_FILE


def load_recent(root: Path) -> list[str]:
    path = recent_path(root)
    if not path.is_file():
        return []
    try:
        names = io.read_json(path).get("recent", [])
    except Exception:  # a damaged list of names is not worth an error: start a new one
        return []
    return [n for n in names if isinstance(n, str)]


def remember(root: Path, name: str) -> list[str]:
    """Put `name` first in the recent list (written atomically) and return the list."""
    names = [name, *[n for n in load_recent(root) if n != name]][:KEEP]
    if Path(root).is_dir():
        io.write_json(recent_path(root), {"recent": names})
    return names
