"""Workspaces: one folder each under a root, holding everything a study produces.

Layout of a workspace:
    workspace.toml   name, description, creation time, clara version
    sources/         imported documents (original file, page-tracked text)
    datasets/        prepared datasets (train/valid/test JSONL + dataset.toml)
    models/          base models (mlx-lm folders, or references to them)
    runs/            training runs (config, status, metrics, events, adapters, report)
    chats/           chat logs (JSONL and CSV)
    evals/           evaluation results
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from clara import __version__, io
from clara.errors import UserError, UsageError

SUBDIRS = ("sources", "datasets", "models", "runs", "chats", "evals")
DEFAULT_ROOT = "workspaces"
DEFAULT_WORKSPACE = "demo"
# the one name rule of workspaces, datasets, models, runs and pipelines (matched in full: `$`
# would accept a trailing newline)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def is_valid_name(name) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".." not in name


def validate_name(name: str, what: str = "workspace") -> str:
    """Accept names that stay one path component: no separators, no `..`, not hidden."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"invalid {what} name: it is empty")
    if "/" in name or "\\" in name or os.sep in name:
        raise UsageError(f"invalid {what} name {name!r}: path separators are not allowed")
    if name.startswith("."):
        raise UsageError(f"invalid {what} name {name!r}: names may not start with '.'")
    if ".." in name:
        raise UsageError(f"invalid {what} name {name!r}: '..' is not allowed")
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_', '-' or '+' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    return name


def default_root() -> Path:
    return Path(os.environ.get("CLARA_HOME") or DEFAULT_ROOT)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Workspace:
    root: Path
    name: str

    @property
    def path(self) -> Path:
        return self.root / self.name

    def __post_init__(self):
        validate_name(self.name)

    # -- layout -------------------------------------------------------------------------------
    @property
    def sources_dir(self) -> Path:
        return self.path / "sources"

    @property
    def datasets_dir(self) -> Path:
        return self.path / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.path / "models"

    @property
    def runs_dir(self) -> Path:
        return self.path / "runs"

    @property
    def chats_dir(self) -> Path:
        return self.path / "chats"

    @property
    def evals_dir(self) -> Path:
        return self.path / "evals"

    def child(self, kind: str, name: str) -> Path:
        """Path of a named item (dataset, model, run...) inside a subfolder, name validated."""
        if kind not in SUBDIRS:
            raise ValueError(f"unknown workspace subfolder {kind!r}")
        validate_name(name, kind.rstrip("s"))
        path = (self.path / kind / name).resolve()
        if self.path.resolve() not in path.parents:
            raise UserError(f"{self.path / kind / name}: a link that leaves the workspace "
                             "(refused: move the folder into the workspace instead)")
        return self.path / kind / name

    def items(self, kind: str) -> list[Path]:
        """The named folders of a subfolder; links that leave the workspace are left out."""
        folder = self.path / kind
        if not folder.is_dir():
            return []
        inside = self.path.resolve()
        return sorted(p for p in folder.iterdir()
                      if p.is_dir() and is_valid_name(p.name)
                      and (not p.is_symlink() or inside in p.resolve().parents))

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.path / "workspace.toml").is_file()

    def create(self, description: str = "", exist_ok: bool = False) -> "Workspace":
        if self.exists:
            if exist_ok:
                return self
            raise UserError(f"workspace {self.name!r} already exists at {self.path}")
        for sub in SUBDIRS:
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        io.write_toml(
            self.path / "workspace.toml",
            {"name": self.name, "description": description, "created": now_iso(),
             "clara_version": __version__},
        )
        return self

    def meta(self) -> dict:
        return io.read_toml(self.path / "workspace.toml")

    def summary(self) -> dict:
        """Counts and sizes per subfolder, for listings."""
        out = {"name": self.name, "path": str(self.path), **self.meta()}
        total = 0
        for sub in SUBDIRS:
            items = self.items(sub)
            size = io.dir_size(self.path / sub) if (self.path / sub).exists() else 0
            total += size
            out[sub] = len(items)
            out[f"{sub}_bytes"] = size
        out["bytes"] = total
        return out


def open_workspace(name: str | None = None, root: str | Path | None = None,
                   create: bool = False) -> Workspace:
    """The workspace called `name` (default: $CLARA_WORKSPACE, else 'demo') under `root`."""
    root = Path(root) if root is not None else default_root()
    name = name or os.environ.get("CLARA_WORKSPACE") or DEFAULT_WORKSPACE
    ws = Workspace(root, name)
    if not ws.exists:
        if create:
            return ws.create()
        raise UserError(
            f"no workspace {name!r} under {root} (create it with: clara ws create {name})"
        )
    return ws


def list_workspaces(root: str | Path | None = None) -> list[Workspace]:
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    return [Workspace(root, p.name) for p in sorted(root.iterdir())
            if p.is_dir() and is_valid_name(p.name) and (p / "workspace.toml").is_file()]
