"""Dataset folders: `datasets/NAME/` with `train.jsonl`, `valid.jsonl` (`test.jsonl` where it has
one) and `dataset.toml` (kind, sources, parameters, seed, row counts, token statistics).

A dataset is written whole or not at all: every file goes into a hidden temporary folder, the
rows are validated, and only then is the folder renamed into place.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

from clara import __version__, io
from clara.data import validate
from clara.data.chunking import RegexTokenizer, TokenCounter
from clara.errors import UserError, ValidationFailed
from clara.workspace import Workspace, is_valid_name, now_iso

META = "dataset.toml"


def dataset_dir(ws: Workspace, name: str) -> Path:
    return ws.child("datasets", name)


def check_new(ws: Workspace, name: str, force: bool = False) -> Path:
    """The folder of a dataset about to be built; refuses an existing one unless `force`."""
    path = dataset_dir(ws, name)
    recover(ws)
    if path.exists() and not force:
        raise UserError(f"dataset {name!r} already exists in workspace {ws.name} "
                         "(use --force to replace it)")
    return path


def split_indices(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of range(n) into (kept, held out) with round(n * share) held out.

    At least one item is held out when share > 0 and n >= 2, and at least one is kept.
    """
    if not 0 <= share < 1:
        raise UserError(f"a split share must be in [0, 1), got {share}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = round(n * share)
    if share > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return sorted(order[k:]), sorted(order[:k])


def write_dataset(ws: Workspace, name: str, kind: str, splits: dict[str, list[dict]],
                  meta: dict[str, Any] | None = None, tokenizer: TokenCounter | None = None,
                  force: bool = False) -> Path:
    """Validate and write a dataset folder atomically; return its path.

    `splits` maps split names (train, valid, test) to rows; `meta` adds sources, parameters,
    seed and anything else worth recording. Raises ValidationFailed (and writes nothing) if any
    row breaks the rules of `kind`.
    """
    return write_datasets(ws, [{"name": name, "kind": kind, "splits": splits, "meta": meta}],
                          tokenizer, force)[0]


def write_datasets(ws: Workspace, items: Sequence[dict], tokenizer: TokenCounter | None = None,
                   force: bool = False) -> list[Path]:
    """Write several datasets that belong together (each a dict of name, kind, splits, meta):
    all of them appear or none does.

    Every dataset is validated into one hidden folder `datasets/.NAME.building-PID-HEX/`; a
    `COMMIT` file written there once all are complete is the point of no return, after which
    each is renamed into place. A kill before it leaves only the hidden folder (removed by the
    next build); a kill after it is finished by the next build (`recover`).
    """
    targets = [check_new(ws, it["name"], force) for it in items]
    tokenizer = tokenizer or RegexTokenizer()
    ws.datasets_dir.mkdir(parents=True, exist_ok=True)
    group = ws.datasets_dir / f".{items[0]['name']}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        for it, target in zip(items, targets):
            _fill(group / it["name"], target, it["name"], it["kind"], it["splits"],
                  it.get("meta"), tokenizer)
        io.write_json(group / COMMIT, {"names": [it["name"] for it in items]})
        _finish(group)
    finally:
        if group.exists() and not (group / COMMIT).is_file():
            shutil.rmtree(group, ignore_errors=True)
    return targets


COMMIT = "COMMIT"
_WORK = re.compile(r"\.(.+)\.(building|old)-(\d+)-[0-9a-f]{8}")


def _fill(tmp: Path, target: Path, name: str, kind: str, splits: dict[str, list[dict]],
          meta: dict[str, Any] | None, tokenizer: TokenCounter) -> None:
    """Write one dataset's files into `tmp` and validate them (errors name `target`'s files)."""
    from clara.data.stats import token_stats

    tmp.mkdir()
    counts = {}
    for split in validate.SPLITS:
        if split in splits:
            counts[split] = io.write_jsonl(tmp / f"{split}.jsonl", splits[split])
    record = {"name": name, "kind": kind, "created": now_iso(), "clara_version": __version__,
              **(meta or {}), "rows": counts}
    io.write_toml(tmp / META, record)
    _, _, errors = validate.validate_dataset(tmp, kind)
    if errors:
        # name the files as they would have been, not the temporary folder
        for e in errors:
            e.path = e.path.replace(str(tmp), str(target))
            e.args = (e.location(),)
        raise ValidationFailed(errors)
    record["tokens"] = {"tokenizer": tokenizer.name,
                        **{s: token_stats(rows, kind, tokenizer) for s, rows in splits.items()}}
    io.write_toml(tmp / META, record)


def _finish(group: Path) -> None:
    """Move every dataset of a committed group into place (replacing older ones), then drop it."""
    for name in io.read_json(group / COMMIT)["names"]:
        src, target = group / name, group.parent / name
        if not src.is_dir():
            continue  # moved before a kill
        old = None
        if target.exists():
            old = target.with_name(f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            target.rename(old)
        src.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(group, ignore_errors=True)


def recover(ws: Workspace) -> None:
    """Finish what a killed build left behind: a committed group moves in; the other work
    folders of dead processes are removed. Folders of live builds are left alone."""
    from clara.runs import pid_alive

    if not ws.datasets_dir.is_dir():
        return
    for p in sorted(ws.datasets_dir.iterdir()):
        m = _WORK.fullmatch(p.name)
        if not m or not p.is_dir() or p.is_symlink() or pid_alive(int(m[3])):
            continue
        if m[2] == "building" and (p / COMMIT).is_file():
            _finish(p)
        else:
            shutil.rmtree(p, ignore_errors=True)


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / META
    return io.read_toml(path) if path.is_file() else {}


def resolve(ws: Workspace | None, target: str | Path) -> Path:
    """A dataset folder or JSONL file: a dataset name of the workspace, else an existing path."""
    text = str(target)
    if ws is not None and ws.exists and is_valid_name(text):
        folder = ws.child("datasets", text)  # refuses a link that leaves the workspace
        if folder.is_dir():
            return folder
    path = Path(target)
    if path.exists():
        return path
    where = f" and no dataset of that name in workspace {ws.name}" if ws is not None else ""
    raise UserError(f"no file or folder {text!r}{where} (see: clara data list)")


def list_datasets(ws: Workspace) -> list[dict]:
    """One record per dataset of the workspace: name, kind, rows per split, created, path."""
    out = []
    for folder in ws.items("datasets"):
        meta = read_meta(folder)
        rows = meta.get("rows") or {f.stem: count_rows(f)
                                    for f in validate.dataset_files(folder)}
        out.append({"name": folder.name, "kind": meta.get("kind", "?"),
                    "train": rows.get("train"), "valid": rows.get("valid"),
                    "test": rows.get("test"), "created": meta.get("created"),
                    "path": str(folder)})
    return out


def read_split(folder: str | Path, split: str) -> list[dict]:
    path = Path(folder) / f"{split}.jsonl"
    return io.read_jsonl(path) if path.is_file() else []


def count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
