"""Puzzle generators, our own solver and the reference's augmentations; all seeded.

Sudoku n x n (n = 4, 6, 9; boxes 2x2, 2x3, 3x3): a random full grid, then givens removed in a
random order while the solution stays unique (checked by `solve`, which counts solutions up to
2). Difficulty is the number of givens and the solver's search: the guesses its depth-first
search makes after constraint propagation (0 = solvable by singles alone).
Mazes N x N (N odd): a random perfect maze with some walls knocked out (loops), start and goal
far apart, and the unique shortest path found by BFS marked.

Tokens: 0 is padding. Sudoku: 1 = blank, 2..n+1 = digits 1..n. Maze: "# SGo" -> 1..5.
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np

from clara.errors import UserError

BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
MAZE_CHARS = "# SGo"


# ---------------------------------------------------------------------------- sudoku solver
class _Grid:
    def __init__(self, n: int):
        if n not in BOXES:
            raise UserError(f"size: sudoku size must be one of {', '.join(map(str, BOXES))}")
        self.n = n
        br, bc = BOXES[n]
        self.peers = []
        for i in range(n * n):
            r, c = divmod(i, n)
            b0r, b0c = r // br * br, c // bc * bc
            ps = {r * n + k for k in range(n)} | {k * n + c for k in range(n)} | \
                {(b0r + a) * n + b0c + b for a in range(br) for b in range(bc)}
            ps.discard(i)
            self.peers.append(tuple(ps))
        self.full = (1 << n) - 1


_GRIDS: dict[int, _Grid] = {}


def _grid(n: int) -> _Grid:
    if n not in _GRIDS:
        _GRIDS[n] = _Grid(n)
    return _GRIDS[n]


def solve(cells, n: int, limit: int = 2, rng: random.Random | None = None):
    """(solutions found up to `limit`, first solution or None, guesses made).

    `cells` is a flat list with 0 for blanks and 1..n for digits. Propagation of naked singles,
    then depth-first search on the cell with fewest candidates (values in random order when
    `rng` is given, which is how full grids are generated)."""
    g = _grid(n)
    grid = list(cells)
    cand = [g.full] * (n * n)
    for i, v in enumerate(grid):
        if v:
            for p in g.peers[i]:
                cand[p] &= ~(1 << (v - 1))
    for i, v in enumerate(grid):
        if v and not cand[i] >> (v - 1) & 1:
            return 0, None, 0  # a given conflicts with a peer
    state = {"count": 0, "first": None, "guesses": 0}

    def rec(grid, cand):
        # propagate singles
        changed = True
        while changed:
            changed = False
            best, best_n = -1, n + 1
            for i in range(n * n):
                if grid[i]:
                    continue
                m = cand[i]
                if not m:
                    return
                k = bin(m).count("1")
                if k == 1:
                    v = m.bit_length()
                    grid[i] = v
                    bit = ~(1 << (v - 1))
                    for p in g.peers[i]:
                        cand[p] &= bit
                    changed = True
                elif k < best_n:
                    best, best_n = i, k
        if best < 0 or all(grid):
            if all(grid):
                state["count"] += 1
                if state["first"] is None:
                    state["first"] = list(grid)
            return
        vals = [v + 1 for v in range(n) if cand[best] >> v & 1]
        if rng is not None:
            rng.shuffle(vals)
        for v in vals:
            state["guesses"] += 1
            g2, c2 = list(grid), list(cand)
            g2[best] = v
            bit = ~(1 << (v - 1))
            for p in g.peers[best]:
                c2[p] &= bit
            rec(g2, c2)
            if state["count"] >= limit:
                return

    rec(grid, cand)
    return state["count"], state["first"], state["guesses"]


def random_full_grid(n: int, rng: random.Random) -> list[int]:
    _, grid, _ = solve([0] * (n * n), n, limit=1, rng=rng)
    return grid


def make_sudoku(n: int, rng: random.Random, givens: int | None = None) -> tuple[list, list, int]:
    """(puzzle, solution, guesses): givens removed while the solution stays unique, down to
    `givens` (or until no given can go: a minimal puzzle)."""
    solution = random_full_grid(n, rng)
    puzzle = list(solution)
    order = list(range(n * n))
    rng.shuffle(order)
    left = n * n
    for i in order:
        if givens is not None and left <= givens:
            break
        v, puzzle[i] = puzzle[i], 0
        if solve(puzzle, n, limit=2)[0] != 1:
            puzzle[i] = v
        else:
            left -= 1
    return puzzle, solution, solve(puzzle, n, limit=1)[2]


def generate_sudoku(n: int, count: int, seed: int, givens: int | None = None,
                    min_guesses: int = 0, max_tries: int = 200, exclude=()) -> dict:
    """`count` unique-solution puzzles as arrays (see `to_arrays`); each needs at least
    `min_guesses` solver guesses (hard puzzles). Puzzles in `exclude` (tuples) are skipped."""
    rng = random.Random(seed)
    seen = set(exclude)
    puzzles, solutions, guesses = [], [], []
    tries = 0
    while len(puzzles) < count:
        p, s, gs = make_sudoku(n, rng, givens)
        tries += 1
        if (gs < min_guesses or tuple(p) in seen):
            if tries > max_tries * max(count, 1):
                raise UserError(f"min_guesses: could not find {count} puzzles needing "
                                 f"{min_guesses} guesses in {tries} tries; lower it")
            continue
        seen.add(tuple(p))
        puzzles.append(p)
        solutions.append(s)
        guesses.append(gs)
    inputs = np.array(puzzles, np.uint8) + 1  # blank 0 -> 1, digit d -> d + 1
    labels = np.array(solutions, np.uint8) + 1
    givens_n = (np.array(puzzles) > 0).sum(1).astype(np.int32)
    return {"inputs": inputs, "labels": labels,
            "puzzle_ids": np.zeros(len(puzzles), np.int32),
            "difficulty": np.array(guesses, np.int32), "givens": givens_n,
            "group": np.arange(len(puzzles), dtype=np.int32)}


def augment_sudoku(arrays: dict, n: int, copies: int, seed: int) -> dict:
    """The originals plus `copies` shuffled versions of each: digit relabelling, band and stack
    permutations, rows/columns within a band/stack, and transposition (square boxes only)."""
    if copies <= 0:
        return arrays
    br, bc = BOXES[n]
    rng = np.random.default_rng(seed)
    N = len(arrays["inputs"])
    out = {k: [v] for k, v in arrays.items()}
    for _ in range(copies):
        idx_all = np.empty((N, n * n), np.int64)
        maps = np.empty((N, n + 2), np.uint8)
        for j in range(N):
            # rows: permute the bands (groups of br rows), then the rows inside each band
            rows = np.concatenate([b * br + rng.permutation(br)
                                   for b in rng.permutation(n // br)])
            cols = np.concatenate([s * bc + rng.permutation(bc)
                                   for s in rng.permutation(n // bc)])
            idx = (rows[:, None] * n + cols[None, :])
            if br == bc and rng.random() < 0.5:
                idx = idx.T
            idx_all[j] = idx.reshape(-1)
            maps[j] = np.concatenate([[0, 1], 2 + rng.permutation(n)])
        for key in ("inputs", "labels"):
            g = np.take_along_axis(arrays[key], idx_all, axis=1)
            out[key].append(np.take_along_axis(maps, g.astype(np.int64), axis=1).astype(np.uint8))
        for key in ("puzzle_ids", "difficulty", "givens", "group"):
            out[key].append(arrays[key])
    return {k: np.concatenate(v) for k, v in out.items()}


# ---------------------------------------------------------------------------- mazes
def _bfs(grid: np.ndarray, start: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Distances from start over open cells (-1: unreachable) and the number of shortest paths
    (capped at 2)."""
    N = grid.shape[0]
    dist = np.full(grid.shape, -1, np.int32)
    ways = np.zeros(grid.shape, np.int32)
    dist[start], ways[start] = 0, 1
    q = deque([start])
    while q:
        r, c = q.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            a, b = r + dr, c + dc
            if 0 <= a < N and 0 <= b < N and grid[a, b]:
                if dist[a, b] < 0:
                    dist[a, b] = dist[r, c] + 1
                    ways[a, b] = ways[r, c]
                    q.append((a, b))
                elif dist[a, b] == dist[r, c] + 1:
                    ways[a, b] = min(2, ways[a, b] + ways[r, c])
    return dist, ways


def make_maze(N: int, rng: random.Random, loops: float = 0.1, min_path: int = 0):
    """(input chars, label chars, shortest path length) or None when the draw is rejected."""
    if N < 5 or N % 2 == 0:
        raise UserError("size: maze size must be odd and at least 5")
    open_ = np.zeros((N, N), bool)
    cells = [(r, c) for r in range(1, N - 1, 2) for c in range(1, N - 1, 2)]
    start = rng.choice(cells)
    open_[start] = True
    stack, seen = [start], {start}
    while stack:  # recursive backtracker: a perfect maze
        r, c = stack[-1]
        nxt = [(r + dr, c + dc) for dr, dc in ((2, 0), (-2, 0), (0, 2), (0, -2))
               if 0 < r + dr < N - 1 and 0 < c + dc < N - 1 and (r + dr, c + dc) not in seen]
        if not nxt:
            stack.pop()
            continue
        a, b = rng.choice(nxt)
        open_[(r + a) // 2, (c + b) // 2] = open_[a, b] = True
        seen.add((a, b))
        stack.append((a, b))
    walls = [(r, c) for r in range(1, N - 1) for c in range(1, N - 1)
             if not open_[r, c] and (r % 2) != (c % 2)]
    for w in rng.sample(walls, int(len(walls) * loops)):
        open_[w] = True
    s = rng.choice(cells)
    dist, _ = _bfs(open_, s)
    far = [x for x in cells if dist[x] >= max(min_path, 1)]
    if not far:
        return None
    g = rng.choice(far)
    dist_s, ways_s = _bfs(open_, s)
    if ways_s[g] != 1:
        return None  # two shortest paths: the label would be ambiguous
    dist_g, _ = _bfs(open_, g)
    on_path = (dist_s >= 0) & (dist_g >= 0) & (dist_s + dist_g == dist_s[g])
    chars = np.where(open_, " ", "#").astype("<U1")
    chars[s], chars[g] = "S", "G"
    label = chars.copy()
    label[on_path & (chars == " ")] = "o"
    return chars, label, int(dist_s[g])


def generate_maze(N: int, count: int, seed: int, min_path: int = 0, loops: float = 0.1,
                  max_tries: int = 200, exclude=()) -> dict:
    rng = random.Random(seed)
    lut = {ch: i + 1 for i, ch in enumerate(MAZE_CHARS)}
    seen = set(exclude)
    inputs, labels, lengths = [], [], []
    tries = 0
    while len(inputs) < count:
        tries += 1
        if tries > max_tries * max(count, 1):
            raise UserError(f"min_path: could not draw {count} mazes with paths of {min_path}+ "
                             f"in {tries} tries; lower it")
        got = make_maze(N, rng, loops, min_path)
        if got is None:
            continue
        x, y, length = got
        key = "".join(x.reshape(-1))
        if key in seen:
            continue
        seen.add(key)
        inputs.append([lut[ch] for ch in x.reshape(-1)])
        labels.append([lut[ch] for ch in y.reshape(-1)])
        lengths.append(length)
    n = len(inputs)
    return {"inputs": np.array(inputs, np.uint8), "labels": np.array(labels, np.uint8),
            "puzzle_ids": np.zeros(n, np.int32), "difficulty": np.array(lengths, np.int32),
            "givens": np.zeros(n, np.int32), "group": np.arange(n, dtype=np.int32)}


def augment_maze(arrays: dict, N: int, copies: int, seed: int) -> dict:
    """The originals plus `copies` random dihedral transforms (rotations and flips) of each."""
    if copies <= 0:
        return arrays
    rng = np.random.default_rng(seed)
    base = np.arange(N * N).reshape(N, N)
    perms = []
    for k in range(8):
        t = np.rot90(base, k % 4)
        perms.append((np.fliplr(t) if k >= 4 else t).reshape(-1))
    out = {k: [v] for k, v in arrays.items()}
    M = len(arrays["inputs"])
    for _ in range(copies):
        idx = np.stack([perms[k] for k in rng.integers(1, 8, M)])
        for key in ("inputs", "labels"):
            out[key].append(np.take_along_axis(arrays[key], idx, axis=1))
        for key in ("puzzle_ids", "difficulty", "givens", "group"):
            out[key].append(arrays[key])
    return {k: np.concatenate(v) for k, v in out.items()}


# ---------------------------------------------------------------------------- text
def sudoku_vocab(n: int) -> list[str]:
    return ["", "."] + [str(d) if d < 10 else chr(ord("A") + d - 10) for d in range(1, n + 1)]


def maze_vocab() -> list[str]:
    return [""] + list(MAZE_CHARS)


def parse_sudoku(text: str, n: int | None = None) -> tuple[list[int], int]:
    """A puzzle written as n*n characters (digits, '.' or '0' for blanks; spaces, | and newlines
    ignored) -> (flat cells 0..n, n)."""
    chars = [ch for ch in text if not ch.isspace() and ch not in "|+-"]
    size = n or {16: 4, 36: 6, 81: 9}.get(len(chars))
    if size is None or len(chars) != size * size:
        raise UserError(f"puzzle: {len(chars)} cells; a sudoku needs 16, 36 or 81 "
                         "(digits, '.' or 0 for blanks)")
    cells = []
    for i, ch in enumerate(chars):
        if ch in ".0_":
            cells.append(0)
        elif ch.isdigit() and 1 <= int(ch) <= size:
            cells.append(int(ch))
        else:
            raise UserError(f"puzzle: cell {i + 1}: {ch!r} is not a digit 1..{size} or a blank")
    return cells, size
