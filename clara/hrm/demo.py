"""The demo workspace's HRM part: 4x4 Sudoku puzzles and a small HRM run trained on them in the
background (the app's HRM screen then steps through its segments)."""

from __future__ import annotations

from typing import Callable

DATASET, RUN = "sudoku4", "demo-sudoku"
# a CPU learns these puzzles (12 givens) to high exact accuracy in a few hundred steps
SETTINGS = {"data": DATASET, "hidden_size": 64, "num_heads": 2, "H_layers": 1, "L_layers": 1,
            "H_cycles": 1, "L_cycles": 1, "halt_max_steps": 2, "batch_size": 64,
            "learning_rate": 1e-3, "lr_schedule": "constant", "warmup_steps": 10, "iters": 400,
            "val_every": 50, "save_every": 100, "val_puzzles": 100}


def build(ws, progress: Callable[[str], None] = print, start: bool = True):
    """Generate the dataset and start the run (each skipped when it exists); return the run."""
    from clara.hrm import data as D
    from clara.hrm.config import hrm_run
    from clara.runs import Run, start_worker

    if not (ws.datasets_dir / DATASET).is_dir():
        splits, meta = D.sudoku_dataset(4, 200, 100, 10, seed=0, givens=12)
        D.write_dataset(ws, DATASET, splits, meta)
    path = ws.runs_dir / RUN
    if (path / "run.toml").is_file():
        return Run(path)
    run = hrm_run(ws, dict(SETTINGS), name=RUN)
    if start:
        start_worker(run, detach=True)
        progress(f"    started in the background: HRM run {run.id} on {DATASET} (watch it in "
                 f"the HRM screen, or clara solve {run.id} --puzzle '12..|..1.|....|.3.4')")
    return run
