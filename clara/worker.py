"""A training run's own process: `python -m clara.worker RUN_DIR`.

It marks the run running (with its pid), builds the run's task from its kind, resumes from the
newest checkpoint if there is one, trains, and records the outcome. SIGTERM, SIGINT or a
`stop.request` file make it save a checkpoint and exit with status `stopped`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m clara.worker RUN_DIR", file=sys.stderr)
        return 2
    from clara.runs import Run

    run = Run(Path(argv[0]))
    if not run.exists:
        print(f"{run.path}: not a run folder (no run.toml)", file=sys.stderr)
        return 2
    from clara.train import distributed

    dist = watchdog = None
    if distributed.launched():  # one rank of several (mlx.launch): see clara/train/distributed.py
        dist, watchdog = _join(run)
    else:
        run.mark_running(os.getpid())
    stop = {"asked": False}

    def on_signal(signum, frame):
        stop["asked"] = True
        if watchdog is not None and signum == signal.SIGTERM:
            watchdog.terminated()  # mlx.launch ends the others when a rank fails

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return _train(run, lambda: stop["asked"] or run.stop_file.exists(), dist, watchdog)


def _join(run):
    """Join the group: rank 0 marks the run running (the pid stays mlx.launch's), other ranks
    log to log.rankK.txt; every rank records its pid and starts the watchdog."""
    from clara.train import distributed
    from clara.train.config import EngineConfig
    from clara.workspace import now_iso

    rank = int(os.environ["MLX_RANK"])
    if rank:
        out = os.open(run.path / f"log.rank{rank}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out, 1)
        os.dup2(out, 2)
    distributed.write_rank(run.path, rank, "starting")
    cfg = EngineConfig.from_dict(run.config().get("config", {}))
    backend = run.raw_status().get("backend") or cfg.backend
    dist = distributed.Dist("any" if backend == "auto" else backend)
    distributed.write_rank(run.path, rank, "running")
    if dist.main:
        run.write_status(status="running", started=now_iso(), finished=None, message=None,
                         reason=None, world_size=dist.size)
    return dist, distributed.Watchdog(run, dist, cfg.dist_timeout).start()


def _train(run, stop_requested, dist=None, watchdog=None) -> int:
    from clara import io
    from clara.errors import ClaraError
    from clara.train import tasks
    from clara.train.engine import Engine, configure_logging
    from clara.train.config import EngineConfig
    from clara.train.report import write_report
    from clara.workspace import now_iso

    rank = dist.rank if dist is not None else 0
    configure_logging(run.path / ("log.txt" if not rank else f"log.rank{rank}.txt"))
    doc = run.config()

    def error(message: str) -> int:
        if dist is not None:
            from clara.train import distributed

            if watchdog is not None:  # a collective that failed because a peer died: interrupted
                time.sleep(2 * watchdog.poll)
                found = watchdog.check()
                if found is not None:
                    watchdog.end(*found)
            distributed.write_rank(run.path, rank, "failed", message=message)
            if rank:
                return 1
        io.append_jsonl(run.path / "events.jsonl",
                        {"time": now_iso(), "event": "error", "message": message})
        run.write_status(status="failed", reason="error", message=message, finished=now_iso())
        write_report(run)
        return 1

    try:
        task = tasks.create(doc["kind"], doc, run.path)
        engine = Engine(task, EngineConfig.from_dict(doc.get("config", {})), run.path,
                        dist=dist, watchdog=watchdog)
        if rank == 0:
            run.write_status(total_steps=engine.total_steps)
        result = engine.run(stop_requested=stop_requested)
        if dist is not None:
            from clara.train import distributed

            watchdog.active = False
            distributed.write_rank(run.path, rank, "done")
            if rank:
                return 0
    except ClaraError as e:
        return error(str(e))
    except Exception as e:  # keep the traceback in log.txt, one line in status
        with open(run.path / ("log.txt" if not rank else f"log.rank{rank}.txt"), "a",
                  encoding="utf-8") as f:
            f.write(traceback.format_exc())
        return error(f"{type(e).__name__}: {e}")
    io.append_jsonl(run.path / "events.jsonl",
                    {"time": now_iso(), "event": "end", "status": result.status,
                     "reason": result.reason, "step": result.step})
    run.write_status(status=result.status, reason=result.reason, message=result.message,
                     step=result.step, total_steps=result.total_steps,
                     best_step=result.best_step, best_val_loss=result.best_val_loss,
                     finished=now_iso())
    if run.stop_file.exists():
        run.stop_file.unlink()
    write_report(run)
    return 1 if result.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
