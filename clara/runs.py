"""Training runs: one folder each under `<workspace>/runs/`, readable by any client without the app.

    run.toml        the effective configuration (kind, config, resolved paths, platform); never rewritten
    status.json     status (queued|running|completed|stopped|failed|interrupted), pid, timestamps,
                    outcome; and the user's labels: tags, archived (hidden from lists and pickers)
    metrics.jsonl   train rows (step, train_loss, learning_rate, tokens_per_second, peak_memory_gb,
                    elapsed_s, ...) and valid rows (step, val_loss, ...)
    events.jsonl    start, resume, checkpoint, best, early_stop, nan, memory, stop, error, end
    adapters/       step-N/, best/, last -> newest step-N (mlx-lm adapter folders + trainer state)
    log.txt         the worker's log
    report.md       written when the run ends
    stop.request    present while a stop is asked for

Liveness: a run whose status says running (or queued with a pid) but whose process is gone is
marked `interrupted` by whichever reader notices first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from clara import io
from clara.errors import ExitCode, UsageError, UserError
from clara.workspace import Workspace, now_iso, validate_name

STATUSES = ("queued", "running", "completed", "stopped", "failed", "interrupted")
ACTIVE = ("queued", "running")
STOP_FILE = "stop.request"
_BEST_CACHE: dict[str, tuple[tuple[int, int, int], float | None]] = {}


def _proc_start(pid: int) -> str | None:
    """Start time of a process (Linux), to tell a live run from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    if start is not None:
        current = _proc_start(int(pid))
        if current is not None and current != start:
            return False
    return True


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def adapters(self) -> Path:
        return self.path / "adapters"

    @property
    def stop_file(self) -> Path:
        return self.path / STOP_FILE

    @property
    def exists(self) -> bool:
        return (self.path / "run.toml").is_file()

    def checkpoints(self) -> list[Path]:
        """The checkpoint folders a user sees (step-N, best, last), without hidden work folders."""
        if not self.adapters.is_dir():
            return []
        return sorted(p for p in self.adapters.iterdir() if not p.name.startswith("."))

    def config(self) -> dict:
        return io.read_toml(self.path / "run.toml")

    def raw_status(self) -> dict:
        f = self.path / "status.json"
        return io.read_json(f) if f.is_file() else {"id": self.id, "status": "queued"}

    @contextlib.contextmanager
    def _status_lock(self):
        """Serialise read-modify-write of status.json between the launcher, worker and readers."""
        with open(self.path / ".status.lock", "a+") as f:
            try:
                import fcntl

                fcntl.flock(f, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows: no lock, rename stays atomic
                pass
            yield

    def write_status(self, only_if: tuple[str, ...] | None = None, **updates) -> dict:
        """Merge `updates` into status.json (atomically); with `only_if`, only from those states."""
        with self._status_lock():
            current = self.raw_status()
            if only_if is not None and current.get("status") not in only_if:
                return current
            status = {**current, **updates, "updated": now_iso()}
            io.write_json(self.path / "status.json", status)
            return status

    def status(self) -> dict:
        """status.json, with a dead worker found and the run marked interrupted.

        A reader that cannot write (a full disk, a read-only folder) still returns the run as
        interrupted; the mark lands when a later reader can write it.
        """
        st = self.raw_status()
        if not self._died(st):
            return st
        marked = {**st, "status": "interrupted", "finished": now_iso(), "updated": now_iso(),
                  "message": "the worker process died (resume with: "
                             f"clara runs resume {self.id})"}
        try:
            with self._status_lock():
                st = self.raw_status()  # again, under the lock: one reader marks it, once
                if not self._died(st):
                    return st
                io.write_json(self.path / "status.json", marked)
                io.append_jsonl(self.path / "events.jsonl",
                                {"time": now_iso(), "event": "interrupted", "pid": st.get("pid")})
        except OSError:
            pass
        return marked

    @staticmethod
    def _died(st: dict) -> bool:
        return st.get("status") in ACTIVE and bool(st.get("pid")) and \
            not pid_alive(st["pid"], st.get("pid_start"))

    def is_active(self) -> bool:
        return self.status().get("status") in ACTIVE

    def mark_running(self, pid: int) -> dict:
        if self.stop_file.exists():
            self.stop_file.unlink()
        return self.write_status(status="running", pid=pid, pid_start=_proc_start(pid),
                                 started=now_iso(), finished=None, message=None, reason=None,
                                 exit_code=None)

    def metrics(self) -> list[dict]:
        f = self.path / "metrics.jsonl"
        return io.read_jsonl(f) if f.is_file() else []

    def events(self) -> list[dict]:
        f = self.path / "events.jsonl"
        return io.read_jsonl(f) if f.is_file() else []

    def last_metric(self, key: str = "train_loss") -> dict | None:
        """The newest metrics row holding `key`, reading only the end of the file."""
        import json

        f = self.path / "metrics.jsonl"
        if not f.is_file():
            return None
        with open(f, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = fh.read().decode("utf-8", "replace").splitlines()
        for line in reversed(lines):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if key in row:
                return row
        return None

    def best_val_loss(self) -> float | None:
        """The lowest validation loss: from the status once the run has ended, else the metrics."""
        best = self.raw_status().get("best_val_loss")
        if best is None:  # a run still going, or one from before the status carried it
            best = self._best_from_metrics()
        return best

    def _best_from_metrics(self) -> float | None:
        """The lowest val_loss in metrics.jsonl, parsed again only when the file changed (a
        listing refreshed every few seconds must not parse every run's whole file each time)."""
        path = self.path / "metrics.jsonl"
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _BEST_CACHE.get(str(path))
        if cached and cached[0] == key:
            return cached[1]
        vals = [m["val_loss"] for m in self.metrics()
                if isinstance(m.get("val_loss"), (int, float))]
        best = min(vals) if vals else None
        _BEST_CACHE[str(path)] = (key, best)
        return best

    def duration(self) -> float | None:
        """Seconds of training (over every session), else wall time from start to finish."""
        seconds = (self.last_metric("elapsed_s") or {}).get("elapsed_s")
        if seconds is None:
            st = self.raw_status()
            start, end = _parse_time(st.get("started")), _parse_time(st.get("finished"))
            if start and end:
                seconds = (end - start).total_seconds()
        return seconds

    def summary(self) -> dict:
        """The facts every face shows of a run: status, progress, losses, duration."""
        st = self.status()
        doc = self.config() if self.exists else {}
        cfg = doc.get("config", {})
        last = self.last_metric("train_loss") or {}
        val = self.last_metric("val_loss") or {}
        return {"id": self.id, "kind": doc.get("kind"),
                "status": st.get("status"), "active": st.get("status") in ACTIVE,
                "step": last.get("step", 0),
                "total_steps": st.get("total_steps"), "train_loss": last.get("train_loss"),
                "val_loss": val.get("val_loss"), "best_step": st.get("best_step"),
                "best_val_loss": self.best_val_loss(), "duration_s": self.duration(),
                "model": cfg.get("model"), "data": cfg.get("data"),
                "created": st.get("created"), "reason": st.get("reason"),
                "message": st.get("message"), "world_size": st.get("world_size") or 1,
                "backend": st.get("backend"), "tags": run_tags(st),
                "archived": bool(st.get("archived"))}

    def follow(self, offsets: tuple[int, int] = (0, 0), poll: float = 0.5, proc=None,
               events: bool = True) -> Iterator["Update"]:
        """Yield what the run's files gained since `offsets` (metrics, events), every `poll`
        seconds, until the run ends (or `proc`, its worker, exits); the last update has
        `done` set. The one loop every face follows a run with."""
        follower = Follower(self, *offsets)
        while True:
            status = self.status()
            ended = status.get("status") not in ACTIVE or \
                (proc is not None and proc.poll() is not None)
            if ended and proc is not None:
                proc.wait()
                status = self.status()  # the worker's last status write has landed
            update = follower.read(status, events=events)
            update.done = ended
            yield update
            if ended:
                return
            time.sleep(poll)


def _parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


@dataclass
class Update:
    """What a run's files gained since the last read (see `Run.follow`)."""

    metrics: list[dict]
    events: list[dict]
    status: dict
    offsets: tuple[int, int]  # where the next read starts: pass back to `follow` to continue
    reset: bool = False  # metrics.jsonl was rewritten (a resume drops rows after its checkpoint)
    done: bool = False

    @property
    def last_train(self) -> dict | None:
        return next((r for r in reversed(self.metrics) if "train_loss" in r), None)


class Follower:
    """Reads the complete new lines of a run's metrics.jsonl and events.jsonl, by byte offset.

    A half-written line waits for the next read; a file that shrank or was replaced (a resume
    rewrites metrics.jsonl) is read again from the start, with `reset` set."""

    def __init__(self, run: Run, metrics_offset: int = 0, events_offset: int = 0):
        self.run = run
        self.offsets = {"metrics": metrics_offset, "events": events_offset}
        self.inodes: dict[str, int] = {}

    def _read(self, name: str) -> tuple[list[dict], bool]:
        import json

        path = self.run.path / f"{name}.jsonl"
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                reset = (name in self.inodes and self.inodes[name] != st.st_ino) or \
                    st.st_size < self.offsets[name]
                self.inodes[name] = st.st_ino
                if reset:
                    self.offsets[name] = 0
                f.seek(self.offsets[name])
                chunk = f.read()
        except OSError:
            return [], False
        end = chunk.rfind(b"\n") + 1  # only whole lines; the rest waits for the next read
        self.offsets[name] += end
        rows = []
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a damaged line: skip it, keep following
            if isinstance(row, dict):
                rows.append(row)
        return rows, reset

    def read(self, status: dict | None = None, events: bool = True) -> Update:
        metrics, reset = self._read("metrics")
        evs = self._read("events")[0] if events else []
        return Update(metrics, evs, status if status is not None else self.run.status(),
                      (self.offsets["metrics"], self.offsets["events"]), reset)


def outcome_code(status: dict) -> ExitCode:
    """The exit code of a command that ran (or followed) a run to this status."""
    state = status.get("status")
    if state == "completed":
        return ExitCode.OK
    if state == "stopped" and status.get("reason") == "memory":
        return ExitCode.GUARD
    if state in ("stopped", "interrupted"):
        return ExitCode.INTERRUPTED
    code = status.get("exit_code")
    return ExitCode(code) if code in set(ExitCode) else ExitCode.FAILURE


def runs_dir(ws: Workspace) -> Path:
    return ws.runs_dir


def new_run_id(kind: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{kind}-{stamp}-{secrets.token_hex(2)}"


def create_run(ws: Workspace, kind: str, config: dict, resolved: dict | None = None,
               name: str | None = None, extra: dict | None = None) -> Run:
    """Make the run folder: run.toml (effective config + platform), status queued, empty logs."""
    from clara.platform import blas_library, blas_preloaded, describe

    run_id = validate_name(name, "run") if name else new_run_id(kind)
    path = ws.child("runs", run_id)
    if path.exists():
        raise UserError(f"run {run_id!r} already exists in workspace {ws.name}")
    world = check_world(config)  # hosts unreachable, ports in use: said before any folder
    if world:
        extra = {**(extra or {}), "distributed": world}
    path.mkdir(parents=True)
    plat = describe()
    doc = {"id": run_id, "kind": kind, "created": now_iso(), "workspace": ws.name,
           "config": config, "resolved": resolved or {},
           "platform": {**plat, "dtype": config.get("dtype") or plat["dtype"],
                        "blas_library": blas_library(), "blas_in_this_process": blas_preloaded(),
                        "seed": config.get("seed")},
           **(extra or {})}
    io.write_toml(path / "run.toml", doc)
    io.write_json(path / "status.json", {"id": run_id, "kind": kind, "status": "queued",
                                         "created": doc["created"], "updated": doc["created"]})
    for f in ("metrics.jsonl", "events.jsonl", "log.txt"):
        io.write_text(path / f, "")
    (path / "adapters").mkdir()
    return Run(path)


def check_world(config: dict) -> dict | None:
    """The world (size, backend, hosts) of a run's settings, checked; None for one process."""
    if not any(config.get(k) for k in ("hosts", "hostfile")) and (config.get("nproc") or 1) <= 1:
        return None
    from clara.train.distributed import plan

    world = plan(config)
    return world.describe() if world else None


def list_runs(ws: Workspace, archived: bool | None = False) -> list[Run]:
    """The runs of `ws`, oldest first: those not archived (what lists and pickers offer),
    `archived=True` the archived ones only, `archived=None` all."""
    runs = []
    for p in ws.items("runs"):
        if not (p / "run.toml").is_file():
            continue
        run = Run(p)
        st = run.raw_status()
        if archived is None or bool(st.get("archived")) == archived:
            runs.append((st.get("created") or "", (p / "run.toml").stat().st_mtime_ns, run.id,
                         run))
    return [r[-1] for r in sorted(runs, key=lambda r: r[:3])]


def find_run(ws: Workspace, ref: str) -> Run:
    """A run by id, unique id prefix, or `last` (the newest), archived or not."""
    runs = list_runs(ws, archived=None)
    if ref == "last":
        if not runs:
            raise UserError(f"no runs in workspace {ws.name}")
        return runs[-1]
    exact = [r for r in runs if r.id == ref]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"run {ref!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")
    raise UserError(f"no run {ref!r} in workspace {ws.name} (see: clara runs list)")


WORKER_NICE = 10  # niceness of training workers: the app stays responsive while they train
PRIORITY_ENV = "CLARA_WORKER_PRIORITY"  # "idle" (SCHED_IDLE where there is one) or a niceness


def worker_priority(priority: str | int | None = None) -> list[str]:
    """The command prefix that starts a worker at `priority` (else $CLARA_WORKER_PRIORITY, else
    nice WORKER_NICE). "idle": Linux's SCHED_IDLE (`chrt --idle 0`; start_worker also lowers a
    detached worker's autogroup, see lower_autogroup), the training runs on CPU time nothing
    else wants and any other process that wakes takes the CPU from it at once (under nice 10 the
    app's keys still waited for a CPU beside the training); where SCHED_IDLE does not exist
    (macOS) or is refused, nice WORKER_NICE. A number: that niceness (0: none)."""
    value = os.environ.get(PRIORITY_ENV, "").strip() if priority is None else str(priority)
    value = value or str(WORKER_NICE)
    if value == "idle":
        if _sched_idle_works():
            return [shutil.which("chrt"), "--idle", "0"]  # see start_worker: its autogroup too
        value = str(WORKER_NICE)
    try:
        nice = int(value)
    except ValueError:
        nice = -1
    if not 0 <= nice <= 19:
        raise UsageError(f"{PRIORITY_ENV}={value!r}: use idle or a niceness from 0 to 19")
    return [shutil.which("nice"), "-n", str(nice)] if nice and shutil.which("nice") else []


def lower_autogroup(pid: int, nice: int = WORKER_NICE) -> None:
    """Give the session of `pid` (a worker started in a session of its own) the CPU share of
    niceness `nice` against other sessions. With autogroups (Linux's default on desktops and
    here), the CPU is shared between sessions first and by niceness only within one: a
    detached worker's nice 10 or SCHED_IDLE weighed as much as the app's whole session, and the
    app's keys waited for a CPU beside it. Not 19: the training would then get 1.5 % beside any
    busy session (on a shared machine it did not get through its start in 2.5 minutes); at 10,
    about 10 %, and all of an otherwise idle machine. Without autogroups, nothing happens."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


@functools.cache
def _sched_idle_works() -> bool:
    chrt = shutil.which("chrt")
    if not hasattr(os, "SCHED_IDLE") or not chrt:
        return False
    try:  # a sandbox may refuse the policy: then nice, not a worker that cannot start
        return subprocess.run([chrt, "--idle", "0", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_worker(run: Run, detach: bool = False, world: dict | None = None,
                 priority: str | int | None = None) -> subprocess.Popen:
    """Start `python -m clara.worker RUN_DIR` with the BLAS preload; detached: own session.

    Several processes (the run's nproc/hosts/hostfile/backend, or `world` overriding them on
    resume): the workers are started by mlx.launch (clara/train/distributed.py), in a session of
    their own so Ctrl-C reaches the CLI, which asks them to stop through the stop file.
    `priority`: see worker_priority (the default reads $CLARA_WORKER_PRIORITY)."""
    from clara.platform import env_with_blas

    prefix = worker_priority(priority)  # a bad setting fails before the run is marked queued
    if run.is_active() and run.raw_status().get("pid"):
        raise UserError(f"run {run.id} is already running (pid {run.raw_status()['pid']})")
    cfg = {**run.config().get("config", {}), **(world or {})}
    plan = None
    if any(cfg.get(k) for k in ("hosts", "hostfile")) or (cfg.get("nproc") or 1) > 1:
        from clara.train import distributed

        plan = distributed.plan(cfg)
    desc = plan.describe() if plan else {"world_size": 1, "backend": None, "hosts": []}
    run.write_status(status="queued", pid=None, message=None, launch=world or None, **desc)
    env = env_with_blas()
    env.setdefault("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "clara.worker", str(run.path)]
    if plan:
        distributed.clear_ranks(run.path)
        if run.stop_file.exists():  # every rank reads it: gone before any starts
            run.stop_file.unlink()
        cmd = distributed.launch_command(plan, run.path)
    cmd = [*prefix, *cmd]  # training yields the CPU to the app and the shell
    with open(run.path / "log.txt", "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=detach or bool(plan))
    # a session of its own (or of this process when it leads one: a detached pipeline driver),
    # never a terminal's: its autogroup is the training's alone
    if "--idle" in prefix and (detach or plan or os.getsid(0) == os.getpid()):
        lower_autogroup(proc.pid)
    # record the pid now, so a worker that dies while starting is still found out
    run.write_status(only_if=None if plan else ("queued",), pid=proc.pid,
                     pid_start=_proc_start(proc.pid))
    return proc


def request_stop(run: Run) -> bool:
    """Ask a running worker to save and stop (stop file + SIGTERM). False if it is not running."""
    st = run.status()
    if st.get("status") not in ACTIVE:
        return False
    io.write_text(run.stop_file, now_iso() + "\n")
    pid = st.get("pid")
    # several processes: every rank reads the stop file (a signal would end mlx.launch)
    if pid and (st.get("world_size") or 1) == 1 and pid_alive(pid, st.get("pid_start")):
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return True


def wait_until_done(run: Run, timeout: float | None = None, poll: float = 0.2) -> dict:
    deadline = None if timeout is None else time.monotonic() + timeout
    for update in run.follow(poll=poll, events=False):
        if update.done:
            return update.status
        if deadline is not None and time.monotonic() > deadline:
            raise UserError(f"run {run.id} still {update.status.get('status')} after "
                             f"{timeout:.0f}s")


def delete_run(run: Run, force: bool = False) -> None:
    st = run.status()
    if st.get("status") in ACTIVE and st.get("pid"):  # queued without a worker: nothing runs
        if not force:
            raise UserError(f"run {run.id} is {run.raw_status().get('status')}: "
                             "stop it first (or pass --force)")
        request_stop(run)
        try:
            wait_until_done(run, timeout=60)
        except UserError:
            pid = run.raw_status().get("pid")
            if pid and pid_alive(pid):
                os.kill(int(pid), signal.SIGKILL)
    if run.path.is_symlink():  # a link to a run folder elsewhere in the workspace: drop the link
        run.path.unlink()
    else:
        shutil.rmtree(run.path)


# -- housekeeping: rename, archive, tag ---------------------------------------------------------
TAG_MAX = 32


def run_tags(status: dict) -> list[str]:
    return [str(t) for t in status.get("tags") or []]


def _check_tag(tag: str) -> str:
    tag = tag.strip()
    if not tag or len(tag) > TAG_MAX or any(c.isspace() or c == "," for c in tag):
        raise UsageError(f"tag {tag!r}: 1 to {TAG_MAX} characters, no spaces or commas")
    return tag


def _check_exists(run: Run) -> None:
    if not run.exists:  # renamed or deleted meanwhile (by another window, or the CLI)
        raise UserError(f"no run {run.id!r} any more in {run.path.parent}")


def tag_run(run: Run, add: tuple[str, ...] | list[str] = (),
            remove: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Add and remove tags of a run (kept in status.json, in order, without repeats); returns
    them. Removing a tag the run lacks is refused (a typo would go unnoticed)."""
    add = [_check_tag(t) for t in add]
    remove = [t.strip() for t in remove]
    _check_exists(run)
    with run._status_lock():
        st = run.raw_status()
        tags = run_tags(st)
        missing = [t for t in remove if t not in tags]
        if missing:
            raise UsageError(f"run {run.id} has no tag {missing[0]!r} (tags: "
                            f"{', '.join(tags) or 'none'})")
        tags = [t for t in tags if t not in remove]
        tags += [t for t in dict.fromkeys(add) if t not in tags]
        io.write_json(run.path / "status.json", {**st, "tags": tags, "updated": now_iso()})
    return tags


def archive_run(run: Run, archived: bool = True) -> None:
    """Hide a run from lists and pickers (`archived=False` shows it again). Its folder stays;
    `clara runs list --archived` lists it, and its id still finds it. A run that is training is
    refused: it would vanish from the lists that follow it."""
    _check_exists(run)
    st = run.status()
    if archived and st.get("status") in ACTIVE:
        raise UserError(f"run {run.id} is {st.get('status')}: stop it before archiving it")
    run.write_status(archived=archived)


def run_references(ws: Workspace, run: Run) -> list[str]:
    """What names `run` in the workspace: other runs that start from its checkpoints
    (`--from`, init_from: by id or by a path into its folder) and the pipeline it belongs to."""
    def names_it(value) -> bool:
        if isinstance(value, dict):
            return any(names_it(v) for v in value.values())
        if isinstance(value, list):
            return any(names_it(v) for v in value)
        if not isinstance(value, str):
            return False
        text = value.rstrip("/")
        return text.split(":", 1)[0] == run.id or f"/runs/{run.id}/" in text + "/"

    found = []
    for p in ws.items("runs"):
        if p.name == run.id:
            continue
        for name, what in (("run.toml", "run"), ("pipeline.toml", "pipeline")):
            f = p / name
            if not f.is_file():
                continue
            try:
                doc = io.read_toml(f)
            except (OSError, ValueError, UserError):
                continue
            keep = doc.get("stages") if what == "pipeline" else \
                {"config": doc.get("config"), "resolved": doc.get("resolved")}
            if names_it(keep):
                found.append(f"{what} {p.name}")
    return found


def rename_run(ws: Workspace, run: Run, new_name: str) -> Run:
    """Give a run another id (its folder's name). Refused while it trains, to a name in use,
    and while another run or a pipeline names it (their resume would no longer find it)."""
    new_name = validate_name(new_name, "run")
    _check_exists(run)
    if new_name == run.id:
        raise UsageError(f"run {run.id} already has that name")
    target = ws.child("runs", new_name)
    if target.exists() or target.is_symlink():
        raise UsageError(f"{new_name!r} is already in use in workspace {ws.name}")
    st = run.status()
    if st.get("status") in ACTIVE:
        raise UserError(f"run {run.id} is {st.get('status')}: stop it before renaming it")
    if run.path.is_symlink():
        raise UserError(f"run {run.id} is a link to another folder: rename that folder instead")
    users = run_references(ws, run)
    if users:
        raise UserError(f"run {run.id} is used by {', '.join(users[:3])}: renaming it would "
                        "break their resume (copy its checkpoint instead)")
    old = run.id
    os.rename(run.path, target)
    moved = Run(target)
    moved.write_status(id=new_name, renamed_from=old)
    io.append_jsonl(target / "events.jsonl", {"time": now_iso(), "event": "rename",
                                              "from": old, "to": new_name})
    return moved
