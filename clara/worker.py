"""A training run's own process: `python -m clara.worker RUN_DIR`.

It marks the run running (with its pid), builds the run's task from its kind, resumes from the
newest checkpoint if there is one, trains, and records the outcome. SIGTERM, SIGINT or a
`stop.request` file make it save a checkpoint and exit with status `stopped`.

A full disk ends the run `failed` with "disk full: free space and resume": the worker keeps a
small reserve file in the run folder and deletes it to make room for its last status, event and
report; a checkpoint cut short leaves nothing visible (see clara/train/checkpoint.py), so
`clara runs resume` continues from the last complete one once space is freed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

RESERVE = ".disk-reserve"
RESERVE_BYTES = 256 * 1024


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m clara.worker RUN_DIR", file=sys.stderr)
        return 2
    from clara.errors import os_error_message
    from clara.runs import Run

    run = Run(Path(argv[0]))
    if not run.exists:
        print(f"{run.path}: not a run folder (no run.toml)", file=sys.stderr)
        return 2
    from clara.train import distributed

    logging.raiseExceptions = False  # a log line that cannot be written is dropped, not printed
    dist = watchdog = None
    try:
        if distributed.launched():  # one rank of several (mlx.launch): clara/train/distributed.py
            dist, watchdog = _join(run)
        else:
            run.mark_running(os.getpid())
        with open(run.path / RESERVE, "wb") as f:
            f.write(bytes(RESERVE_BYTES))
    except OSError as e:  # no room even to start: the reader marks the run interrupted
        print(os_error_message(e), file=sys.stderr)
        return 1
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
                         reason=None, exit_code=None, world_size=dist.size)
    return dist, distributed.Watchdog(run, dist, cfg.dist_timeout).start()


def _disk_full(e: BaseException, folder: Path) -> bool:
    """ENOSPC, or a failed save (MLX reports it as a RuntimeError) on a disk with no room left."""
    import shutil

    from clara.errors import is_disk_full

    if is_disk_full(e) or "No space left" in str(e):
        return True
    try:
        return shutil.disk_usage(folder).free < 4 * RESERVE_BYTES
    except OSError:
        return False


def _train(run, stop_requested, dist=None, watchdog=None) -> int:
    from clara import io
    from clara.errors import DISK_FULL, UserError, ExitCode
    from clara.runs import outcome_code
    from clara.train import tasks
    from clara.train.engine import Engine, configure_logging
    from clara.train.config import EngineConfig
    from clara.train.report import write_report
    from clara.workspace import now_iso

    rank = dist.rank if dist is not None else 0
    configure_logging(run.path / ("log.txt" if not rank else f"log.rank{rank}.txt"))
    doc = run.config()

    def error(message: str, code: int = ExitCode.FAILURE, reason: str = "error") -> int:
        if dist is not None:
            from clara.train import distributed

            if watchdog is not None:  # a collective that failed because a peer died: interrupted
                time.sleep(2 * watchdog.poll)
                found = watchdog.check()
                if found is not None:
                    watchdog.end(*found)
            distributed.write_rank(run.path, rank, "failed", message=message)
            if rank:
                return int(code)
        # every write may meet a full disk: each is tried, none may raise
        for write in (lambda: io.append_jsonl(run.path / "events.jsonl",
                                              {"time": now_iso(), "event": "error",
                                               "message": message}),
                      lambda: run.write_status(status="failed", reason=reason, message=message,
                                               exit_code=int(code), finished=now_iso()),
                      lambda: write_report(run)):
            try:
                write()
            except Exception:
                pass
        return int(code)

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
        io.append_jsonl(run.path / "events.jsonl",
                        {"time": now_iso(), "event": "end", "status": result.status,
                         "reason": result.reason, "step": result.step})
        status = run.write_status(status=result.status, reason=result.reason,
                                  message=result.message, step=result.step,
                                  total_steps=result.total_steps, best_step=result.best_step,
                                  best_val_loss=result.best_val_loss, finished=now_iso())
    except UserError as e:
        return error(str(e), e.exit_code)
    except Exception as e:  # keep the traceback in log.txt, one line in status
        if _disk_full(e, run.path):
            (run.path / RESERVE).unlink(missing_ok=True)  # room for the last writes
            return error(f"{DISK_FULL} (then: clara runs resume {run.id})", reason="disk_full")
        try:
            with open(run.path / ("log.txt" if not rank else f"log.rank{rank}.txt"), "a",
                      encoding="utf-8") as f:
                f.write(traceback.format_exc())
        except OSError:
            pass
        return error(f"{type(e).__name__}: {e}")
    run.stop_file.unlink(missing_ok=True)
    (run.path / RESERVE).unlink(missing_ok=True)
    try:
        write_report(run)
    except OSError:
        pass  # the outcome is recorded; the report is a summary of it
    return int(outcome_code(status))


if __name__ == "__main__":
    sys.exit(main())
