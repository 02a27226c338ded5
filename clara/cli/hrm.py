"""HRM commands, attached to the existing groups: `clara data puzzles sudoku|maze|import|show`,
`clara train hrm`, `clara eval hrm`, and `clara solve` (a puzzle, segment by segment)."""

from __future__ import annotations

import json

import click

from clara.cli.common import AppContext, emit_record, emit_rows, format_option, pass_app
from clara.cli.data import data_group
from clara.cli.eval import eval_group
from clara.cli.train import config_options, train_group
from clara.hrm.config import HRMTrainConfig


# ---------------------------------------------------------------------------- data
@data_group.group("puzzles")
def puzzles_group():
    """Puzzle datasets for HRM: generated Sudoku and mazes, or imported ones."""


_common = [
    click.option("--train", "n_train", type=int, default=1000, show_default=True,
                 help="Training puzzles (before augmentation)."),
    click.option("--test", "n_test", type=int, default=500, show_default=True,
                 help="Held-out test puzzles (never in train; not augmented)."),
    click.option("--augment", type=int, default=0, show_default=True,
                 help="Augmented copies of each training puzzle."),
    click.option("--seed", type=int, default=0, show_default=True, help="Generator seed."),
    click.option("--force", is_flag=True, help="Replace an existing dataset of that name."),
]


def _with(options):
    def deco(fn):
        for o in reversed(options):
            fn = o(fn)
        return fn
    return deco


def _check_counts(n_train, n_test, augment):
    from clara.errors import UserError

    if n_train < 1 or n_test < 0 or augment < 0:
        raise UserError("--train must be >= 1, --test and --augment >= 0")


def _target(app: AppContext, name: str, force: bool):
    """The workspace, once the new dataset's name is known to be free (before generating)."""
    from clara.data.datasets import check_new
    from clara.workspace import validate_name

    ws = app.workspace(create=True)
    check_new(ws, validate_name(name, "dataset"), force)
    return ws


def _done(path, meta_rows):
    click.echo(f"wrote {path}  ({', '.join(f'{k} {v}' for k, v in meta_rows.items())})")


@puzzles_group.command("sudoku")
@click.argument("name")
@click.option("--size", type=click.Choice(["4", "6", "9"]), default="9", show_default=True,
              help="Grid size (boxes 2x2, 2x3, 3x3).")
@click.option("--givens", type=int, default=None,
              help="Stop removing givens at this count (default: minimal puzzles).")
@click.option("--min-guesses", type=int, default=0, show_default=True,
              help="Keep only puzzles our solver needs at least this many guesses for (hard).")
@_with(_common)
@pass_app
def puzzles_sudoku(app: AppContext, name, size, givens, min_guesses, n_train, n_test, augment,
                   seed, force):
    """Generate Sudoku puzzles with unique solutions (checked by our own solver).

    Example: clara data puzzles sudoku sudoku9 --size 9 --train 1000 --test 500 --augment 1000
    """
    from clara.hrm import data as D

    ws = _target(app, name, force)
    _check_counts(n_train, n_test, augment)
    splits, meta = D.sudoku_dataset(int(size), n_train, n_test, augment, seed, givens,
                                    min_guesses)
    path = D.write_dataset(ws, name, splits, meta, force)
    _done(path, {k: len(v["inputs"]) for k, v in splits.items()})


@puzzles_group.command("maze")
@click.argument("name")
@click.option("--size", type=int, default=15, show_default=True, help="Grid side (odd, >= 5).")
@click.option("--min-path", type=int, default=0, show_default=True,
              help="Keep only mazes whose shortest path is at least this long (hard).")
@click.option("--loops", type=float, default=0.1, show_default=True,
              help="Share of inner walls knocked out (more than one route).")
@_with(_common)
@pass_app
def puzzles_maze(app: AppContext, name, size, min_path, loops, n_train, n_test, augment, seed,
                 force):
    """Generate mazes with their unique shortest path marked (BFS).

    Example: clara data puzzles maze maze15 --size 15 --train 1000 --test 200 --augment 8
    """
    from clara.hrm import data as D

    ws = _target(app, name, force)
    _check_counts(n_train, n_test, augment)
    splits, meta = D.maze_dataset(size, n_train, n_test, augment, seed, min_path, loops)
    path = D.write_dataset(ws, name, splits, meta, force)
    _done(path, {k: len(v["inputs"]) for k, v in splits.items()})


@puzzles_group.command("import")
@click.argument("name")
@click.option("--from", "source", required=True, type=click.Path(exists=True),
              help="A reference HRM dataset folder (train/, test/ with dataset.json) or ARC "
                   "task JSON files (a folder of them or one file).")
@click.option("--format", "fmt", type=click.Choice(["auto", "reference", "arc"]), default="auto",
              show_default=True, help="Which format the source is in.")
@click.option("--force", is_flag=True, help="Replace an existing dataset of that name.")
@pass_app
def puzzles_import(app: AppContext, name, source, fmt, force):
    """Import puzzles: the reference's on-disk format or ARC-style JSON tasks."""
    from pathlib import Path

    from clara.hrm import data as D

    ws = _target(app, name, force)
    src = Path(source)
    if fmt == "auto":
        fmt = "reference" if (src / "train" / "dataset.json").is_file() else "arc"
    splits, meta = D.load_reference(src) if fmt == "reference" else D.load_arc(src)
    path = D.write_dataset(ws, name, splits, meta, force)
    _done(path, {k: len(v["inputs"]) for k, v in splits.items()})


@puzzles_group.command("show")
@click.argument("name")
@click.option("--split", default="test", show_default=True)
@click.option("--index", "-i", type=int, default=0, show_default=True)
@pass_app
def puzzles_show(app: AppContext, name, split, index):
    """Print one puzzle and its solution."""
    from clara.data.datasets import resolve
    from clara.errors import UserError
    from clara.hrm import data as D

    folder = resolve(app.workspace(), name)
    meta = D.validate(folder)
    a = D.read_split(folder, split)
    if not 0 <= index < len(a["inputs"]):
        raise UserError(f"--index: {index} is outside 0..{len(a['inputs']) - 1}")
    click.echo(D.render(a["inputs"][index], meta))
    click.echo(f"\nsolution (difficulty {int(a['difficulty'][index])}):")
    click.echo(D.render(a["labels"][index], meta))


# ---------------------------------------------------------------------------- train
@train_group.command("hrm", context_settings={"max_content_width": 110})
@click.option("--data", "-d", "data", default=None,
              help="Puzzle dataset: workspace dataset name or folder (clara data puzzles ...).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML file of settings; flags override it.")
@click.option("--name", default=None, help="Run id (default: hrm-DATE-TIME-XXXX).")
@click.option("--detach", is_flag=True, help="Start in the background and print the run id.")
@config_options(HRMTrainConfig, skip={"data"})
@pass_app
def train_hrm(app: AppContext, data, config_file, name, detach, **flags):
    """Train HRM (or TRM, --variant trm) on a puzzle dataset, with ACT and deep supervision.

    AdamW for the network, sign-SGD for puzzle embeddings; best/ and early stopping follow
    validation exact accuracy. Metrics: token/exact/q-halt accuracy and steps, per series.

    Example: clara train hrm -d sudoku4 --hidden-size 64 --iters 600 --learning-rate 1e-3
    """
    from clara.cli.runs import launch
    from clara.hrm.config import hrm_run

    overrides = {k: v for k, v in flags.items() if v not in (None, (), [])}
    overrides["data"] = data
    launch(hrm_run(app.workspace(), overrides, config_file, name), detach)


# ---------------------------------------------------------------------------- eval / solve
@eval_group.command("hrm", context_settings={"max_content_width": 110})
@click.argument("run")
@click.option("--split", default="test", show_default=True, help="Dataset split to score.")
@click.option("--data", "-d", default=None, help="Another puzzle dataset (default: the run's).")
@click.option("--limit", type=int, default=None, help="Score only the first N puzzles.")
@click.option("--steps", type=int, default=None, help="Segments to run (default: the maximum).")
@format_option
@pass_app
def eval_hrm(app: AppContext, run, split, data, limit, steps, fmt):
    """Score an HRM run: exact and token accuracy, steps used, by difficulty."""
    from clara.data.datasets import resolve
    from clara.hrm import data as D
    from clara.hrm.infer import checkpoint_of, evaluate
    from clara.hrm.task import load_model

    ws = app.workspace()
    ckpt = checkpoint_of(ws, run)
    net, cfg = load_model(ckpt)
    folder = resolve(ws, data) if data else resolve(ws, cfg.get("dataset", ""))
    D.validate(folder)
    arrays = D.read_split(folder, split)
    if limit:
        arrays = {k: v[:limit] for k, v in arrays.items()}
    result = {"checkpoint": str(ckpt), "dataset": str(folder), "split": split,
              **evaluate(net, arrays, max_steps=steps)}
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    by = result.pop("by_difficulty", None)
    emit_record(result, fmt)
    if by:
        click.echo("\nby difficulty:")
        emit_rows(by, [("difficulty", "difficulty"), ("puzzles", "puzzles"),
                       ("exact_accuracy", "exact"), ("token_accuracy", "token")], fmt)


@click.command("solve", context_settings={"max_content_width": 110})
@click.argument("run")
@click.option("--puzzle", "-p", required=True,
              help="The puzzle: sudoku digits with '.' or 0 for blanks (16, 36 or 81 cells), or "
                   "a maze's characters.")
@click.option("--steps", type=int, default=None, help="Segments to run (default: the maximum).")
@click.option("--show-steps", is_flag=True, help="Print every segment's prediction.")
@format_option
@pass_app
def solve(app: AppContext, run, puzzle, steps, show_steps, fmt):
    """Solve a puzzle with a trained HRM run, segment by segment.

    Example: clara solve last --puzzle '1...|..2.|.3..|...4' --show-steps
    """
    from clara.hrm import data as D
    from clara.hrm.infer import checkpoint_of, is_valid_sudoku, puzzle_tokens, solve_trace
    from clara.hrm.task import load_model

    ckpt = checkpoint_of(app.workspace(), run)
    net, cfg = load_model(ckpt)
    meta = _meta_of(cfg, net)
    tokens = puzzle_tokens(puzzle.replace("|", ""), meta)
    trace = solve_trace(net, meta, tokens, steps)
    final = trace[-1]
    valid = None
    if meta["puzzle"] == "sudoku":
        valid = is_valid_sudoku([t - 1 for t in final["tokens"]], meta["width"])
    if fmt == "json":
        click.echo(json.dumps({"puzzle": tokens.tolist(), "segments": trace, "valid": valid}))
        return
    click.echo("puzzle:")
    click.echo(D.render(tokens, meta))
    for seg in trace if show_steps else []:
        click.echo(f"\nsegment {seg['step']}  q_halt {seg['q_halt']:+.2f}  q_continue "
                   f"{seg['q_continue']:+.2f}{'  (would halt)' if seg['halt'] else ''}")
        click.echo(D.render(seg["tokens"], meta))
    halt_at = next((s["step"] for s in trace if s["halt"]), len(trace))
    click.echo(f"\nanswer (after {len(trace)} segments; ACT would halt at {halt_at}):")
    click.echo(D.render(final["tokens"], meta))
    if valid is not None:
        click.echo(f"\n{'a valid solution' if valid else 'NOT a valid solution'}")


def _meta_of(cfg: dict, net) -> dict:
    """The dataset meta of a checkpoint (for rendering), from its dataset if it is still there."""
    from pathlib import Path

    from clara.hrm import data as D
    from clara.hrm import puzzles as P

    folder = Path(cfg.get("dataset", ""))
    if (folder / D.META).is_file():
        return D.read_meta(folder)
    c = net.config
    side = int(round(c.seq_len ** 0.5))
    puzzle = cfg.get("puzzle", "sudoku")
    vocab = P.sudoku_vocab(side) if puzzle == "sudoku" else P.maze_vocab()
    return {"puzzle": puzzle, "width": side, "height": side, "seq_len": c.seq_len,
            "vocab_size": c.vocab_size, "num_puzzle_ids": c.num_puzzle_ids, "vocab": vocab}


COMMANDS = [solve]
