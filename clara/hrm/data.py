"""Puzzle datasets: `datasets/NAME/` with `train.safetensors`, `test.safetensors` and
`dataset.toml` (kind "puzzles": puzzle type, grid shape, vocabulary, counts, generator settings).

Each split holds uint8 `inputs` and `labels` [N, seq_len] (0 = padding, no target), int32
`puzzle_ids` (rows of the puzzle-embedding table), `difficulty` (solver guesses or maze path
length), `givens` and `group` (the original puzzle an augmented copy comes from).
Loaders convert the reference's on-disk format (`sapientinc/HRM`'s build_*_dataset.py output:
train/ and test/ each with dataset.json and all__*.npy) and ARC-style JSON task files.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from clara import __version__, io
from clara.errors import DataError
from clara.hrm import puzzles as P
from clara.workspace import Workspace, now_iso

KIND = "puzzles"
META = "dataset.toml"
KEYS = ("inputs", "labels", "puzzle_ids", "difficulty", "givens", "group")
SPLITS = ("train", "test")


def write_split(path: Path, arrays: dict) -> None:
    from safetensors.numpy import save_file

    with io.atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(arrays[k]) for k in KEYS}, str(tmp))


def read_split(folder: str | Path, split: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(folder) / f"{split}.safetensors"
    if not path.is_file():
        raise DataError(path, None, None, "missing")
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(path, None, None, f"not a safetensors file ({e})") from None
    for k in KEYS:
        if k not in arrays:
            raise DataError(path, None, k, "missing")
    return arrays


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise DataError(path, None, None, "missing (not a puzzle dataset)")
    meta = io.read_toml(path)
    if meta.get("kind") != KIND:
        raise DataError(path, None, "kind", f"is {meta.get('kind')!r}, expected {KIND!r}")
    for key, typ in (("seq_len", int), ("vocab_size", int), ("num_puzzle_ids", int),
                     ("width", int), ("height", int), ("puzzle", str)):
        if not isinstance(meta.get(key), typ):
            raise DataError(path, None, key, f"missing or not {typ.__name__}")
    return meta


def validate(folder: str | Path) -> dict:
    """Check a puzzle dataset; return its meta, or raise a one-line DataError."""
    folder = Path(folder)
    meta = read_meta(folder)
    for split in SPLITS:
        if split == "test" and not (folder / "test.safetensors").is_file():
            continue
        a = read_split(folder, split)
        path = folder / f"{split}.safetensors"
        n = len(a["inputs"])
        if n == 0:
            raise DataError(path, None, "inputs", "no puzzles")
        for k in ("inputs", "labels"):
            if a[k].ndim != 2 or a[k].shape != (n, meta["seq_len"]):
                raise DataError(path, None, k, f"shape {a[k].shape}, expected "
                                               f"({n}, {meta['seq_len']})")
            bad = np.argwhere(a[k] >= meta["vocab_size"])
            if len(bad):
                r = int(bad[0][0])
                raise DataError(path, None, k, f"row {r}: token {int(a[k][r].max())} outside the "
                                               f"vocabulary of {meta['vocab_size']}")
        for k in ("puzzle_ids", "difficulty", "givens", "group"):
            if a[k].shape != (n,):
                raise DataError(path, None, k, f"shape {a[k].shape}, expected ({n},)")
        if len(a["puzzle_ids"]) and (a["puzzle_ids"].min() < 0 or
                                     a["puzzle_ids"].max() >= meta["num_puzzle_ids"]):
            raise DataError(path, None, "puzzle_ids", f"outside 0..{meta['num_puzzle_ids'] - 1}")
    return meta


def write_dataset(ws: Workspace, name: str, splits: dict[str, dict], meta: dict,
                  force: bool = False) -> Path:
    """Write a puzzle dataset folder whole (temporary folder, validated, renamed)."""
    from clara.data.datasets import check_new

    target = check_new(ws, name, force)
    ws.datasets_dir.mkdir(parents=True, exist_ok=True)
    tmp = ws.datasets_dir / f".{name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for split, arrays in splits.items():
            write_split(tmp / f"{split}.safetensors", arrays)
        record = {"name": name, "kind": KIND, "created": now_iso(), "clara_version": __version__,
                  **meta, "rows": {s: int(len(a["inputs"])) for s, a in splits.items()}}
        io.write_toml(tmp / META, record)
        validate(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _unseen(train: dict, test: dict) -> dict:
    """Drop augmented training copies that happen to equal a test puzzle (small grids)."""
    held = {row.tobytes() for row in test["inputs"]}
    keep = np.array([row.tobytes() not in held for row in train["inputs"]], bool)
    return train if keep.all() else {k: v[keep] for k, v in train.items()}


def sudoku_dataset(n: int, train: int, test: int, augment: int, seed: int,
                   givens: int | None = None, min_guesses: int = 0) -> tuple[dict, dict]:
    """(splits, meta) of a generated Sudoku dataset; test puzzles never appear in train."""
    tr = P.generate_sudoku(n, train, seed, givens, min_guesses)
    te = P.generate_sudoku(n, test, seed + 1_000_003, givens, min_guesses,
                           exclude={tuple(int(v) - 1 for v in row) for row in tr["inputs"]})
    splits = {"train": _unseen(P.augment_sudoku(tr, n, augment, seed), te), "test": te}
    meta = {"puzzle": "sudoku", "width": n, "height": n, "seq_len": n * n,
            "vocab_size": n + 2, "num_puzzle_ids": 1, "vocab": P.sudoku_vocab(n),
            "difficulty": "solver guesses", "seed": seed,
            "params": {"size": n, "train": train, "test": test, "augment": augment,
                       "givens": givens if givens is not None else "minimal",
                       "min_guesses": min_guesses}}
    return splits, meta


def maze_dataset(N: int, train: int, test: int, augment: int, seed: int, min_path: int = 0,
                 loops: float = 0.1) -> tuple[dict, dict]:
    tr = P.generate_maze(N, train, seed, min_path, loops)
    lut = {i + 1: ch for i, ch in enumerate(P.MAZE_CHARS)}
    seen = {"".join(lut[int(v)] for v in row) for row in tr["inputs"]}
    te = P.generate_maze(N, test, seed + 1_000_003, min_path, loops, exclude=seen)
    splits = {"train": _unseen(P.augment_maze(tr, N, augment, seed), te), "test": te}
    meta = {"puzzle": "maze", "width": N, "height": N, "seq_len": N * N, "vocab_size": 6,
            "num_puzzle_ids": 1, "vocab": P.maze_vocab(), "difficulty": "shortest path length",
            "seed": seed, "params": {"size": N, "train": train, "test": test,
                                     "augment": augment, "min_path": min_path, "loops": loops}}
    return splits, meta


# ---------------------------------------------------------------------------- importers
def _np_load(path: Path):
    if not path.is_file():
        raise DataError(path, None, None, "missing")
    try:
        return np.load(path, allow_pickle=False)  # never unpickle a downloaded file
    except (ValueError, OSError) as e:
        raise DataError(path, None, None, f"not a plain .npy array ({e})") from None


def load_reference(folder: str | Path) -> tuple[dict, dict]:
    """The reference's on-disk format: FOLDER/{train,test}/dataset.json + all__*.npy.

    Tokens are kept as they are (pad 0, ignore label 0 -> no target); each example becomes one
    row, its group the reference's puzzle index."""
    folder = Path(folder)
    splits, meta = {}, None
    for split in SPLITS:
        d = folder / split
        mfile = d / "dataset.json"
        if not mfile.is_file():
            if split == "train":
                raise DataError(mfile, None, None, "missing (not a reference HRM dataset)")
            continue
        try:
            m = json.loads(mfile.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(mfile, None, None, f"not JSON ({e})") from None
        for key in ("seq_len", "vocab_size", "num_puzzle_identifiers", "sets"):
            if key not in m:
                raise DataError(mfile, None, key, "missing")
        set_name = m["sets"][0] if m["sets"] else "all"
        inputs = _np_load(d / f"{set_name}__inputs.npy")
        labels = _np_load(d / f"{set_name}__labels.npy")
        pids = _np_load(d / f"{set_name}__puzzle_identifiers.npy")
        pidx = _np_load(d / f"{set_name}__puzzle_indices.npy")
        if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != m["seq_len"]:
            raise DataError(d / f"{set_name}__inputs.npy", None, None,
                            f"shape {inputs.shape} does not match labels {labels.shape} / "
                            f"seq_len {m['seq_len']}")
        # example i belongs to puzzle p where puzzle_indices[p] <= i < puzzle_indices[p + 1]
        puzzle_of = np.searchsorted(pidx, np.arange(len(inputs)), side="right") - 1
        n = len(inputs)
        splits[split] = {"inputs": inputs.astype(np.uint8), "labels": labels.astype(np.uint8),
                         "puzzle_ids": pids[puzzle_of].astype(np.int32),
                         "difficulty": np.zeros(n, np.int32), "givens": np.zeros(n, np.int32),
                         "group": puzzle_of.astype(np.int32)}
        if meta is None:
            side = int(round(m["seq_len"] ** 0.5))
            meta = {"puzzle": "reference", "width": side if side * side == m["seq_len"] else
                    m["seq_len"], "height": side if side * side == m["seq_len"] else 1,
                    "seq_len": int(m["seq_len"]), "vocab_size": int(m["vocab_size"]),
                    "num_puzzle_ids": int(m["num_puzzle_identifiers"]),
                    "difficulty": "none", "source": str(folder)}
    return splits, meta


ARC_SIDE = 30  # the reference's ARC grid: 30 x 30, pad 0, end-of-grid 1, colours 0..9 -> 2..11


def _arc_grid(grid, path: Path, where: str) -> np.ndarray:
    if (not isinstance(grid, list) or not grid or not all(isinstance(r, list) for r in grid)
            or len({len(r) for r in grid}) != 1):
        raise DataError(path, None, where, "must be a non-empty rectangular list of lists")
    a = np.array(grid)
    if a.shape[0] > ARC_SIDE or a.shape[1] > ARC_SIDE or not np.issubdtype(a.dtype, np.integer) \
            or a.min() < 0 or a.max() > 9:
        raise DataError(path, None, where, "must be at most 30 x 30 with colours 0..9")
    out = np.zeros((ARC_SIDE, ARC_SIDE), np.uint8)
    h, w = a.shape
    out[:h, :w] = a + 2
    if h < ARC_SIDE:
        out[h, :w] = 1  # the end-of-grid marks show the model the output's size
    if w < ARC_SIDE:
        out[:h, w] = 1
    return out.reshape(-1)


def load_arc(folder: str | Path) -> tuple[dict, dict]:
    """ARC-style JSON tasks (each file {"train": [{"input", "output"}...], "test": [...]}):
    the demonstration pairs train, the test pairs with an output are the test split; each task
    gets its own puzzle id (its puzzle-embedding row)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else [folder]
    if not files:
        raise DataError(folder, None, None, "no .json task files")
    rows = {"train": [], "test": []}
    for tid, path in enumerate(files, start=1):
        try:
            task = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(path, None, None, f"not JSON ({e})") from None
        if not isinstance(task, dict) or not isinstance(task.get("train"), list):
            raise DataError(path, None, "train", "missing (a list of input/output pairs)")
        for split in SPLITS:
            for i, pair in enumerate(task.get(split) or []):
                if not isinstance(pair, dict) or "input" not in pair:
                    raise DataError(path, None, f"{split}[{i}]", "needs input and output grids")
                if "output" not in pair:
                    continue
                rows[split].append((_arc_grid(pair["input"], path, f"{split}[{i}].input"),
                                    _arc_grid(pair["output"], path, f"{split}[{i}].output"), tid))
    splits = {}
    for split, rs in rows.items():
        if not rs:
            continue
        n = len(rs)
        splits[split] = {"inputs": np.stack([r[0] for r in rs]),
                         "labels": np.stack([r[1] for r in rs]),
                         "puzzle_ids": np.array([r[2] for r in rs], np.int32),
                         "difficulty": np.zeros(n, np.int32), "givens": np.zeros(n, np.int32),
                         "group": np.array([r[2] for r in rs], np.int32)}
    if "train" not in splits:
        raise DataError(folder, None, "train", "no input/output pairs")
    meta = {"puzzle": "arc", "width": ARC_SIDE, "height": ARC_SIDE, "seq_len": ARC_SIDE ** 2,
            "vocab_size": 12, "num_puzzle_ids": len(files) + 1, "difficulty": "none",
            "vocab": ["", "|"] + [str(c) for c in range(10)], "source": str(folder)}
    return splits, meta


def to_training(arrays: dict) -> dict:
    """Model-ready arrays: int32 tokens, labels with padding (0) as IGNORE."""
    from clara.hrm.model import IGNORE

    labels = arrays["labels"].astype(np.int32)
    return {"inputs": arrays["inputs"].astype(np.int32),
            "labels": np.where(labels == 0, IGNORE, labels).astype(np.int32),
            "puzzle_ids": arrays["puzzle_ids"].astype(np.int32)}


def render(tokens, meta: dict, given=None) -> str:
    """A grid as text (sudoku with box lines); `given` marks cells to keep from the input."""
    vocab = meta.get("vocab") or [str(i) for i in range(meta["vocab_size"])]
    w, h = meta["width"], meta["height"]
    cells = [vocab[int(t)] if int(t) < len(vocab) else "?" for t in tokens]
    cells = [c if c else " " for c in cells]
    lines = []
    box = P.BOXES.get(w) if meta.get("puzzle") == "sudoku" else None
    for r in range(h):
        row = cells[r * w:(r + 1) * w]
        if box:
            parts = [" ".join(row[c:c + box[1]]) for c in range(0, w, box[1])]
            lines.append(" | ".join(parts))
            if (r + 1) % box[0] == 0 and r + 1 < h:
                lines.append("-+-".join("-" * (2 * box[1] - 1) for _ in range(w // box[1])))
        else:
            lines.append("".join(row))
    return "\n".join(lines)
