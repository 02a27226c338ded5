"""Evaluation and step-by-step solving with a trained HRM (a run's best/ or last/ checkpoint)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from clara.errors import UserError
from clara.hrm import data as D
from clara.hrm import puzzles as P


def checkpoint_of(ws, ref: str) -> Path:
    """A run of the workspace (its best/, else last/ checkpoint) or a checkpoint folder."""
    from clara.hrm.task import CONFIG
    from clara.runs import find_run

    folder = Path(ref).expanduser()
    if (folder / CONFIG).is_file():
        return folder.resolve()
    run = find_run(ws, ref)
    if run.config().get("kind") != "hrm":
        raise UserError(f"run {run.id} is a {run.config().get('kind')} run, not hrm")
    for name in ("best", "last"):
        if (run.adapters / name / CONFIG).is_file():
            return (run.adapters / name).resolve()
    raise UserError(f"run {run.id} has no checkpoint yet (no best/ or last/)")


def evaluate(net, arrays: dict, batch_size: int = 256, max_steps: int | None = None) -> dict:
    """Exact and token accuracy after the maximum segments, the ACT view (the segment at which
    q_halt first beats q_continue, and the accuracy there), puzzles/s, and exact accuracy by
    difficulty (quartiles of the dataset's difficulty measure)."""
    import mlx.core as mx

    from clara.hrm.model import IGNORE, run_episode

    t = D.to_training(arrays)
    n = len(t["inputs"])
    if n == 0:
        raise UserError("no puzzles to evaluate")
    steps = max_steps or net.config.halt_max_steps
    exact, token, act_exact, act_steps = [], [], [], []
    net.eval()
    tic = time.perf_counter()
    for i in range(0, n, batch_size):
        b = {k: mx.array(v[i:i + batch_size]) for k, v in t.items()}
        _, _, _, trace = run_episode(net, b, steps, keep=True)
        labels = t["labels"][i:i + batch_size]
        mask = labels != IGNORE
        preds = np.stack([np.array(p) for p, _, _ in trace])  # [S, B, L]
        ok = (preds == labels[None]) | ~mask[None]
        seq_ok = ok.all(-1)  # [S, B]
        exact.append(seq_ok[-1])
        token.append(((preds[-1] == labels) & mask).sum(-1) / np.maximum(mask.sum(-1), 1))
        if net.config.variant == "hrm":
            halt = np.stack([np.array(h) > np.array(c) for _, h, c in trace])
        else:
            halt = np.stack([np.array(h) > 0 for _, h, _ in trace])
        halt[-1] = True
        first = halt.argmax(0)  # first segment the model would halt at
        act_steps.append(first + 1)
        act_exact.append(seq_ok[first, np.arange(len(first))])
    dt = time.perf_counter() - tic
    exact, token = np.concatenate(exact), np.concatenate(token)
    act_exact, act_steps = np.concatenate(act_exact), np.concatenate(act_steps)
    out = {"puzzles": n, "exact_accuracy": float(exact.mean()),
           "token_accuracy": float(token.mean()), "segments": steps,
           "act_exact_accuracy": float(act_exact.mean()), "act_mean_steps": float(act_steps.mean()),
           "seconds": round(dt, 3), "puzzles_per_second": n / dt if dt else None}
    diff = arrays["difficulty"]
    if len(np.unique(diff)) > 1:
        edges = np.unique(np.quantile(diff, [0, 0.25, 0.5, 0.75, 1.0]).astype(int))
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (diff >= lo) & ((diff < hi) if hi != edges[-1] else (diff <= hi))
            if sel.any():
                rows.append({"difficulty": f"{lo}-{hi}", "puzzles": int(sel.sum()),
                             "exact_accuracy": float(exact[sel].mean()),
                             "token_accuracy": float(token[sel].mean())})
        out["by_difficulty"] = rows
    return out


def solve_trace(net, meta: dict, tokens: np.ndarray, max_steps: int | None = None) -> list[dict]:
    """Each segment's prediction of one puzzle: [{"step", "tokens", "q_halt", "q_continue",
    "halt"}], the grid filling in as the segments go."""
    import mlx.core as mx

    from clara.hrm.model import run_episode

    b = {"inputs": mx.array(tokens[None].astype(np.int32)),
         "labels": mx.zeros((1, len(tokens)), mx.int32), "puzzle_ids": mx.zeros((1,), mx.int32)}
    net.eval()
    _, _, _, trace = run_episode(net, b, max_steps, keep=True)
    out = []
    for s, (p, h, c) in enumerate(trace, start=1):
        pred = np.array(p[0])
        # keep the givens as given: the model is asked only for the blanks
        given = (tokens > 1) if meta.get("puzzle") == "sudoku" else np.zeros_like(tokens, bool)
        pred = np.where(given, tokens, pred)
        hv, cv = float(h[0]), float(c[0])
        out.append({"step": s, "tokens": pred.tolist(), "q_halt": hv, "q_continue": cv,
                    "halt": hv > cv if net.config.variant == "hrm" else hv > 0})
    return out


def puzzle_tokens(text: str, meta: dict) -> np.ndarray:
    """A puzzle given as text -> the model's tokens (sudoku digits/blanks, or maze characters)."""
    if meta.get("puzzle") == "sudoku":
        cells, n = P.parse_sudoku(text, meta["width"])
        return np.array(cells, np.int32) + 1
    vocab = meta.get("vocab") or []
    lut = {ch: i for i, ch in enumerate(vocab) if ch}
    chars = [ch for ch in text if ch != "\n"]
    if len(chars) != meta["seq_len"] or any(ch not in lut for ch in chars):
        raise UserError(f"puzzle: needs {meta['seq_len']} characters from {''.join(lut)!r}")
    return np.array([lut[ch] for ch in chars], np.int32)


def is_valid_sudoku(cells: list[int], n: int) -> bool:
    """True when the filled grid breaks no row, column or box rule."""
    g = np.array(cells).reshape(n, n)
    br, bc = P.BOXES[n]
    want = set(range(1, n + 1))
    return (all(set(r) == want for r in g) and all(set(c) == want for c in g.T)
            and all(set(g[r:r + br, c:c + bc].reshape(-1)) == want
                    for r in range(0, n, br) for c in range(0, n, bc)))
