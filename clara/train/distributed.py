"""Data-parallel training on MLX's own engine: `mx.distributed` (ring over TCP, JACCL over
Thunderbolt RDMA, MPI, NCCL on CUDA) with its processes started by `mlx.launch`. We write no
communication of our own: gradients go through `mlx.nn.average_gradients`, scalars through
`mx.distributed.all_sum`, both on the default stream (the GPU's on CUDA: NCCL rejects the CPU
stream).

Launch side (`plan`, `launch_command`): the world of a run from its settings (--nproc, --hosts,
--hostfile, --backend, --dist-port), checked before a run folder is written (IP addresses for
the ring, hosts reachable, ports free), and the mlx.launch command line that starts
`python -m clara.worker RUN_DIR` on every rank.

Rank side (`Dist`): what the engine consults. Every rank reads the same global batches in the
same order and takes its disjoint share of each (the task's `train_shards`); each rank's loss is
its share of the global batch's loss (the task's `shared_loss`, normalised by the global counts),
so the summed gradient is exactly the one-process gradient at the same global batch. Rank 0
alone writes files; stop, NaN, memory and early-stopping decisions are rank 0's, followed by all.

Failures (`Watchdog`): each rank records its pid in `ranks/K.json`; a thread on every rank ends
the whole run (status `interrupted`, event `rank_lost` naming the rank) when a peer on the same
host dies without saying it is done, when mlx.launch terminates it because a rank failed, or when
no step finishes within `dist_timeout` seconds (a collective that hangs).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from clara import io
from clara.errors import UserError

BACKENDS = ("auto", "ring", "jaccl", "mpi", "nccl")
LOCAL = "127.0.0.1"  # the one host name mlx.launch starts without ssh
RANKS_DIR = "ranks"
GRACE_S = 5.0  # after mlx.launch's SIGTERM (a peer failed), how long a rank may take to end


# ---------------------------------------------------------------------------- launch side
@dataclass
class World:
    size: int
    backend: str
    hosts: list[str]  # ssh name of every rank
    args: list[str] = field(default_factory=list)  # mlx.launch's arguments

    def describe(self) -> dict:
        return {"world_size": self.size, "backend": self.backend,
                "hosts": sorted(set(self.hosts), key=self.hosts.index)}


def _free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


def _free_block(ip: str, n: int) -> int:
    """A first port p with p..p+n-1 free on ip (asked of the OS, then checked)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
            p = s.getsockname()[1]
        if p + n < 65535 and all(_free(ip, p + i) for i in range(n)):
            return p
    raise UserError(f"no {n} free consecutive ports on {ip}")


def _reachable(host: str) -> str | None:
    """None when `ssh host true` works without a password within seconds, else why not."""
    try:
        out = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", host, "true"],
                             capture_output=True, text=True, timeout=8)
    except FileNotFoundError:
        return "no ssh client on this machine"
    except subprocess.TimeoutExpired:
        return "ssh timed out"
    if out.returncode != 0:
        return (out.stderr.strip().splitlines() or [f"ssh exit {out.returncode}"])[-1]
    return None


def _cuda() -> bool:
    try:
        import mlx.core as mx

        return bool(mx.cuda.is_available())
    except Exception:
        return False


def plan(config: dict, check: bool = True) -> World | None:
    """The world of a run's settings; None for one process (nothing changes). With `check`,
    every problem that would stop mlx.launch is a one-line UserError now."""
    from mlx._distributed_utils.common import Hostfile  # mlx.launch's own parser

    nproc = int(config.get("nproc") or 1)
    hosts, hostfile = config.get("hosts"), config.get("hostfile")
    backend = config.get("backend") or "auto"
    port = config.get("dist_port")
    if backend not in BACKENDS:
        raise UserError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if nproc < 1:
        raise UserError("nproc: must be at least 1")
    if hosts and hostfile:
        raise UserError("hosts, hostfile: give one of them, not both")
    where = "hosts"
    try:
        if hostfile:
            where = f"hostfile {hostfile}"
            hf = Hostfile.from_file(hostfile)
            if nproc > 1:
                raise UserError(f"{where}: nproc: list a host once per process in the hostfile "
                                 "instead of --nproc")
        else:
            hf = Hostfile.from_list(hosts or LOCAL, nproc)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None
    if not hf.hosts:
        raise UserError(f"{where}: names no host")
    if len(hf.hosts) == 1:
        return None
    if backend == "auto":
        backend = hf.backend or ("nccl" if _cuda() else "ring")
    names = [h.ssh_hostname for h in hf.hosts]
    args = ["--backend", backend, "--python", sys.executable]
    args += ["--hostfile", str(Path(hostfile).resolve())] if hostfile else \
        ["--hosts", hosts or LOCAL, "-n", str(nproc)]
    local_ips = {ip for h in hf.hosts if h.ssh_hostname == LOCAL for ip in h.ips}
    if check:
        for h in hf.hosts:
            if backend == "ring" and not h.ips:
                raise UserError(f"{where}: host {h.ssh_hostname!r}: the ring backend needs IP "
                                 "addresses (give IPs, or \"ips\" in a hostfile)")
        for name in sorted(set(names) - {LOCAL}):
            why = _reachable(name)
            if why:
                raise UserError(f"{where}: host {name!r} is unreachable ({why})")
        if backend == "mpi" and not shutil.which("mpirun"):
            raise UserError("backend: mpi needs mpirun on the PATH")
    # ports: ring and jaccl listen from --starting-port up (one per rank and IP), nccl on one
    if backend in ("ring", "jaccl"):
        n = sum(max(1, len(h.ips)) for h in hf.hosts) if backend == "ring" else 1
        if port is None:
            port = _free_block(sorted(local_ips)[0], n) if local_ips and \
                len(set(names)) == 1 else 32323
        elif check:
            k = port
            for h in hf.hosts:
                for ip in h.ips or [None]:
                    if h.ssh_hostname == LOCAL and ip and not _free(ip, k):
                        raise UserError(f"{where}: port {ip}:{k} is in use (choose another "
                                         "first port with --dist-port)")
                    k += 1
        args += ["--starting-port", str(port)]
    elif backend == "nccl":
        master = (hf.hosts[0].ips or [LOCAL])[0]
        if port is None:
            port = _free_block(master, 1) if hf.hosts[0].ssh_hostname == LOCAL else 12345
        elif check and hf.hosts[0].ssh_hostname == LOCAL and not _free(master, port):
            raise UserError(f"{where}: port {master}:{port} is in use (choose another with "
                             "--dist-port)")
        args += ["--nccl-port", str(port)]
        # measured on 2 H200s (bench/distributed_scaling.py): with an NCCL all-reduce inside
        # MLX's CUDA graphs a 2-process step took 1.5x as long as with graphs off (52.6k ->
        # 78.8k tokens/s, 1B LoRA, batch 8x512); one process loses 5% without them, so they
        # go off for NCCL ranks alone, unless the user chose
        if "MLX_USE_CUDA_GRAPHS" not in os.environ:
            args += ["--env", "MLX_USE_CUDA_GRAPHS=0"]
    # remote ranks do not inherit our environment: pass what the worker needs
    if set(names) - {LOCAL}:
        for key in ("PYTHONPATH", "HF_HUB_OFFLINE", "HF_HOME"):
            if os.environ.get(key):
                args += ["--env", f"{key}={os.environ[key]}"]
    return World(len(hf.hosts), backend, names, args)


def launch_command(world: World, run_dir: Path) -> list[str]:
    """mlx.launch (its own entry point, so it works where the console script is not installed)
    starting `python -m clara.worker RUN_DIR` on every rank."""
    entry = "import sys; from mlx._distributed_utils.launch import main; " \
            "sys.argv[0] = 'mlx.launch'; sys.exit(main())"
    return [sys.executable, "-c", entry, *world.args, "--", "-m", "clara.worker",
            str(Path(run_dir).resolve())]


# ---------------------------------------------------------------------------- rank side
def launched() -> bool:
    """True in a process started by mlx.launch (it sets MLX_RANK)."""
    return "MLX_RANK" in os.environ


def gpu_cpus(index: int) -> list[int] | None:
    """The CPUs for the rank on CUDA GPU `index`: those of the GPU's NUMA node (sysfs
    local_cpulist of its PCI device), split evenly among the GPUs that share the node. None
    where nvidia-smi or sysfs do not say."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=pci.bus_id", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.split()
        lists = []
        for bus in out:
            dom, rest = bus.lower().split(":", 1)
            text = (Path("/sys/bus/pci/devices") / f"{dom[-4:]}:{rest}" /
                    "local_cpulist").read_text().strip()
            cpus = []
            for part in text.split(","):
                a, _, b = part.partition("-")
                cpus += range(int(a), int(b or a) + 1)
            lists.append(cpus)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return share_of_node(lists, index, cpu_core)


def cpu_core(cpu: int) -> str:
    """The physical core of a logical CPU: its hyper-thread siblings (sysfs), or itself."""
    try:
        return (Path("/sys/devices/system/cpu") / f"cpu{cpu}" / "topology" /
                "thread_siblings_list").read_text().strip()
    except OSError:
        return str(cpu)


def share_of_node(lists: list[list[int]], index: int, core=None) -> list[int] | None:
    """GPU `index`'s part of its NUMA node's CPUs (`lists`: each GPU's node CPUs): the node's
    physical cores (`core`: a CPU's core key; default each CPU its own) split evenly, in GPU
    order, among the GPUs on that node, each core with all its hyper-threads (two ranks never
    share a core's threads). The 2-H200 host has no hyper-threads (one CPU per core), where
    this is the plain halves."""
    if not 0 <= index < len(lists):
        return None
    peers = [i for i, c in enumerate(lists) if c == lists[index]]
    cores: dict = {}
    for c in lists[index]:
        cores.setdefault(core(c) if core else c, []).append(c)
    groups, k, n = list(cores.values()), peers.index(index), len(peers)
    return sorted(c for g in groups[k * len(groups) // n:(k + 1) * len(groups) // n]
                  for c in g) or None


def pin_to_gpu_cpus() -> list[int] | None:
    """On a CUDA rank (mlx.launch gives each its GPU in CUDA_VISIBLE_DEVICES): every thread of
    this process onto gpu_cpus() of that GPU, so that ranks do not share cores and each
    launches its kernels from its GPU's NUMA node. Measured on 2 H200s (one NUMA node of 32
    cores, bench/distributed_scaling.py, 1B LoRA): 2 ranks at global batch 8 went from 85.8k
    to 93.9k tokens/s, at 16 from 111.1k to 128.3k, at 32 from 161.8k to 163.2k.
    CLARA_PIN_CPUS=0 turns it off. Returns the CPUs, or None (not done)."""
    dev = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if os.environ.get("CLARA_PIN_CPUS", "1") == "0" or not dev.isdigit():
        return None
    cpus = gpu_cpus(int(dev))
    if not cpus:
        return None
    for tid in os.listdir("/proc/self/task"):  # threads made so far; later ones inherit
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # a thread that ended since the listing: nothing to pin
            continue
    import logging

    logging.getLogger("clara.train").info("pinned to CPUs %s (GPU %s)", cpus, dev)
    return cpus


class Dist:
    """This rank's view of the group: sums across ranks and rank 0's decisions."""

    def __init__(self, backend: str = "any"):
        import mlx.core as mx

        self.pinned = pin_to_gpu_cpus()
        self.group = mx.distributed.init(strict=True, backend=backend)
        self.rank, self.size = self.group.rank(), self.group.size()
        self.main = self.rank == 0

    def all_sum(self, x):
        import mlx.core as mx

        return mx.distributed.all_sum(x, group=self.group)  # default stream (NCCL: the GPU's)

    def sums(self, values: list[float]) -> list[float]:
        """Element-wise sums of `values` over the ranks (every rank gets the same numbers)."""
        import mlx.core as mx

        if not values:
            return []
        return self.all_sum(mx.array(values, dtype=mx.float32)).tolist()

    def step_sums(self, losses: list, tokens: int, extras: dict, stop: bool, memory: bool):
        """One all_sum per step, queued on the device right behind the step (before the next
        step is queued, so reading it waits for this step alone): the step's loss (mean over
        micro-batches), tokens and extras (lists of device scalars), and whether any rank was
        asked to stop or ran short of memory. `read_step_sums` turns it into numbers."""
        import mlx.core as mx

        keys = sorted(extras)
        parts = [sum(v.astype(mx.float32) for v in losses) / len(losses),
                 mx.array(float(tokens)), mx.array(float(stop)), mx.array(float(memory))]
        parts += [sum(v.astype(mx.float32) for v in extras[k]) for k in keys]
        out = self.all_sum(mx.stack([mx.reshape(x, ()) for x in parts]))
        mx.async_eval(out)
        return out, keys

    @staticmethod
    def read_step_sums(queued):
        """(losses, tokens, extras, stop, memory) of a step_sums: the same on every rank."""
        out, keys = queued
        s = out.tolist()
        return [s[0]], int(round(s[1])), dict(zip(keys, s[4:])), s[2] > 0, s[3] > 0

    def decide(self, *flags: bool) -> list[bool]:
        """Rank 0's decisions, followed by every rank."""
        return [v > 0 for v in self.sums([float(bool(f)) if self.main else 0.0 for f in flags])]

    def totals(self, counts: dict, known: dict | None = None):
        """The global counts of a batch as arrays for the compiled step: `known` when the task
        counted them on the host (no collective before the step), else the sum over ranks."""
        import mlx.core as mx

        keys = sorted(counts)
        local = mx.array([float(counts[k]) for k in keys], dtype=mx.float32)
        total = mx.array([float(known[k]) for k in keys], dtype=mx.float32) if known else \
            self.all_sum(local)
        return ({k: local[i] for i, k in enumerate(keys)},
                {k: total[i] for i, k in enumerate(keys)})

    def reduce_grads(self, grad):
        """The sum over ranks of their gradients: MLX's average_gradients (bucketed all_sum on
        the default stream); the loss of each rank was multiplied by `size`, so the average is
        the sum."""
        from mlx.nn import average_gradients

        return average_gradients(grad, group=self.group)


# ---------------------------------------------------------------------------- failures
def rank_file(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / RANKS_DIR / f"{rank}.json"


def write_rank(run_dir: Path, rank: int, state: str, **extra) -> None:
    from clara.runs import _proc_start

    io.write_json(rank_file(run_dir, rank),
                  {"rank": rank, "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                   "host": socket.gethostname(), "state": state, **extra})


def launcher_named_rank(run_dir: Path) -> int | None:
    """The rank mlx.launch reported dead in log.txt ("Node with rank K exited ...")."""
    try:
        with open(Path(run_dir) / "log.txt", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = re.findall(r"Node with rank (\d+) (?:exited with code -?\d+|was killed)", text)
    return int(found[0]) if found else None


class Watchdog:
    """A daemon thread that ends this rank, and marks the run, when the group cannot go on."""

    def __init__(self, run, dist: Dist, timeout: float, poll: float = 0.5):
        self.run, self.dist, self.timeout, self.poll = run, dist, timeout, poll
        self.last = time.monotonic()
        self.step = 0
        self.active = True
        self.terminated_at: float | None = None
        self.host = socket.gethostname()
        self._thread = threading.Thread(target=self._loop, name="clara-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def beat(self, step: int | None = None) -> None:
        self.last = time.monotonic()
        if step is not None:
            self.step = step

    def terminated(self) -> None:
        """SIGTERM arrived (mlx.launch ends the others when a rank fails)."""
        if self.terminated_at is None:
            self.terminated_at = time.monotonic()

    def _dead_peer(self) -> dict | None:
        from clara.runs import pid_alive

        folder = self.run.path / RANKS_DIR
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                info = io.read_json(f)
            except (OSError, ValueError):
                continue
            if info.get("rank") == self.dist.rank or info.get("host") != self.host:
                continue
            if info.get("state") != "done" and not pid_alive(info.get("pid"),
                                                             info.get("pid_start")):
                return info
        return None

    def check(self) -> tuple[str, dict] | None:
        """(why, details) when this rank must end now, else None."""
        if not self.active:
            return None
        peer = self._dead_peer()
        if peer is not None:
            return "rank_lost", peer
        now = time.monotonic()
        if self.terminated_at is not None and now - self.terminated_at > GRACE_S:
            rank = launcher_named_rank(self.run.path)
            return "rank_lost", {"rank": rank if rank is not None else "unknown",
                                 "detail": "mlx.launch ended the run"}
        if now - self.last > self.timeout:
            return "timeout", {"rank": "unknown", "detail": f"no step finished in "
                                                          f"{self.timeout:.0f}s"}
        return None

    def _loop(self) -> None:
        while True:
            time.sleep(self.poll)
            found = self.check()
            if found is not None:
                self.end(*found)

    def end(self, why: str, info: dict) -> None:
        record_loss(self.run, why, info, self.step)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)


def record_loss(run, why: str, info: dict, step: int) -> None:
    """Mark the run ended because a rank was lost (once, whichever survivor sees it first)."""
    from clara.runs import ACTIVE
    from clara.workspace import now_iso

    rank = info.get("rank")
    failed = info.get("state") == "failed"
    if failed:
        message = f"rank {rank} failed: {info.get('message')}"
    elif why == "timeout":
        message = f"a collective hung ({info.get('detail')}); resume with: " \
                  f"clara runs resume {run.id}"
    else:
        message = f"rank {rank} died" + (f" (pid {info['pid']} on {info['host']})"
                                         if info.get("pid") else "") + \
                  f"; resume with: clara runs resume {run.id}"
    with run._status_lock():
        st = run.raw_status()
        if st.get("status") not in ACTIVE:
            return
        status = "failed" if failed else "interrupted"
        io.write_json(run.path / "status.json",
                      {**st, "status": status, "reason": why, "message": message,
                       "finished": now_iso(), "updated": now_iso()})
        io.append_jsonl(run.path / "events.jsonl",
                        {"time": now_iso(), "event": why, "rank": rank, "step": step,
                         "message": message})


def clear_ranks(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / RANKS_DIR, ignore_errors=True)

