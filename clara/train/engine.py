"""The training loop every run goes through, whatever the task (see clara/train/protocol.py).

We own the loop rather than use mlx-lm's `train`: it has no early stopping, best checkpoint,
epochs or exact resume. The engine writes into the run folder:
    metrics.jsonl   one row per report (train) and per validation (valid), appended whole
    events.jsonl    start, resume, checkpoint, best, early_stop, nan, memory, stop, end
    adapters/       step-N/ (resumable), best/ (lowest validation loss), last -> newest step-N
Resume restores weights, optimizer state, step, data position and RNG key, so a resumed run
follows the same loss curve as one never stopped.

Each step is queued on the device before the previous one is read (mx.async_eval), so the GPU
is not idle while the host reads numbers and encodes kernels; a step queued ahead is dropped
exactly (weights, optimizer, RNG, data position) when a stop, the memory guard or a NaN ends
the run after the step before it. CLARA_STEP_AHEAD=0 in the environment runs one step at a time
(for comparisons: bench/distributed_scaling.py --cases 2:8:CLARA_STEP_AHEAD=0).

Memory. MLX allocates an array's memory when the host queues its kernel and frees it when the
device is done, so a host that runs ahead of the device holds the buffers of everything it has
queued: on the H200 half of a CLaRa step's peak (1.1B stage 1, batch 8: 21.85 GB, of which the
weights and what the backward keeps are 10). Above MLX's memory limit (mx.set_memory_limit) the
host waits for the device instead. The engine sets that limit to MEMORY_HOLD of the memory
guard's limit where it matters: always when `memory_limit_gb` is given (a lean run: 1.1B stage 1
at a 10 GB MLX limit peaked at 11.86 GB, 30 % slower; with checkpointing and chunked CE at 6 GB,
8.44 GB; 8B 4-bit at 8 GB, 8.82 GB), and on CUDA by default (where MLX's own limit is the
whole GPU, so a run that would not fit waits instead of failing; a run that fits is untouched).
The guard still stops a run whose peak passes its limit. CLARA_MLX_MEMORY_LIMIT_GB=X sets MLX's
limit directly (bench/clara_throughput.py's +limX).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from clara import io
from clara.train import checkpoint as ckpt
from clara.train.config import EngineConfig
from clara.workspace import now_iso

log = logging.getLogger("clara.train")
STEP_AHEAD = os.environ.get("CLARA_STEP_AHEAD", "1") != "0"
# MLX's limit as a share of the guard's: a throttled step still passes MLX's limit by up to
# 1.4x (measured above: 11.86/10, 8.44/6, 8.82/8), which must stay under the guard's
MEMORY_HOLD = 0.7
# benchmarks read the host time of the last this many steps (Engine.host_times, host_parts)
HOST_STEPS = 4096


@dataclass
class EngineResult:
    status: str  # completed | stopped | failed
    reason: str  # done | early_stop | stop | memory | nan
    step: int
    total_steps: int
    best_step: int | None = None
    best_val_loss: float | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)


def make_schedule(cfg: EngineConfig, total_steps: int):
    lr, warm = cfg.learning_rate, cfg.warmup_steps
    main_steps = max(1, total_steps - warm)
    main = (optim.cosine_decay(lr, main_steps, cfg.min_learning_rate)
            if cfg.lr_schedule == "cosine" else (lambda step: mx.array(lr, mx.float32)))
    if warm <= 0:
        return main
    # starts at lr/(warm+1), not 0, so the first step already moves the weights
    return optim.join_schedules([optim.linear_schedule(lr / (warm + 1), lr, warm), main], [warm])


def memory_limit_bytes(cfg: EngineConfig) -> int:
    """90% of the device's memory (Metal working set, CUDA GPU memory, host RAM on the CPU)."""
    if cfg.memory_limit_gb:
        return int(cfg.memory_limit_gb * 1e9)
    from clara.platform import device_memory

    size, _ = device_memory()
    return int(size * 0.9) if size else 1 << 62


def mlx_memory_limit(cfg: EngineConfig) -> int | None:
    """The memory limit the engine gives MLX (bytes), or None to leave MLX's own (see the
    module's doc): CLARA_MLX_MEMORY_LIMIT_GB, else MEMORY_HOLD of memory_limit_gb when it is
    given, else on CUDA MEMORY_HOLD of the guard's default limit."""
    if os.environ.get("CLARA_MLX_MEMORY_LIMIT_GB"):
        return int(float(os.environ["CLARA_MLX_MEMORY_LIMIT_GB"]) * 1e9)
    if cfg.memory_limit_gb:
        return int(MEMORY_HOLD * cfg.memory_limit_gb * 1e9)
    from clara.platform import backend

    if backend() == "cuda":
        return int(MEMORY_HOLD * memory_limit_bytes(cfg))
    return None


def system_memory_low() -> bool:
    """True when the machine (Linux) has under 3% of its memory left: stop before the OOM killer."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f if ":" in line}
        return info["MemAvailable"] < 0.03 * info["MemTotal"]
    except (OSError, KeyError, ValueError, IndexError):
        return False


class Engine:
    def __init__(self, task, cfg: EngineConfig, run_dir: str | Path, dist=None, watchdog=None):
        cfg.validate()
        self.task, self.cfg = task, cfg
        # data parallel (clara/train/distributed.py): None with one process; rank 0 alone writes
        self.dist = dist if dist is not None and dist.size > 1 else None
        self.writer = self.dist is None or self.dist.main
        self.watchdog = watchdog
        self._stop = False
        self.run_dir = Path(run_dir)
        self.adapters = self.run_dir / "adapters"
        self.metrics_file = self.run_dir / "metrics.jsonl"
        self.events_file = self.run_dir / "events.jsonl"
        self.n_batches = task.num_train_batches()
        if self.n_batches < 1:
            raise ValueError("the task has no training batches")
        self.total_steps = cfg.total_steps(self.n_batches)
        self.schedule = make_schedule(cfg, self.total_steps)
        self.optimizer = optim.AdamW(learning_rate=self.schedule, weight_decay=cfg.weight_decay)
        # the training state that a checkpoint carries
        self.step = 0
        self.epoch = 0
        self.pos = 0  # micro-batches of `epoch` already consumed
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.elapsed = 0.0  # seconds of training over all sessions
        self.tokens_seen = 0
        self.window = {"loss": 0.0, "steps": 0, "tokens": 0, "time": 0.0, "extras": {}}
        # for benchmarks: how often the step was traced (mx.compile traces again for every new
        # batch shape), and the host's seconds spent queuing each step (launch()); the last
        # HOST_STEPS steps only, so that a long run does not grow them without end
        self.traces = 0
        self.host_times: deque[float] = deque(maxlen=HOST_STEPS)
        # and its parts (seconds per launch): making the batch, calling the step (the compiled
        # step replays its graph: one array per op), mx.async_eval (encoding and launching
        # the kernels), counting tokens, the distributed sums
        self.host_parts: deque[dict] = deque(maxlen=HOST_STEPS)

    # -- files ------------------------------------------------------------------------------
    def event(self, kind: str, **data) -> None:
        if self.writer:
            io.append_jsonl(self.events_file, {"time": now_iso(), "event": kind, **data})
        log.info("%s %s", kind, " ".join(f"{k}={v}" for k, v in data.items()))

    def metric(self, row: dict) -> None:
        if self.writer:
            io.append_jsonl(self.metrics_file, row)

    def _trainer_state(self) -> dict:
        return {"step": self.step, "total_steps": self.total_steps, "epoch": self.epoch,
                "pos": self.pos, "rng": [int(v) for v in mx.random.state[0].tolist()],
                "best_val": self.best_val, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "elapsed": self.elapsed,
                "tokens_seen": self.tokens_seen, "window": self.window,
                "kind": getattr(self.task, "kind", None), "time": now_iso()}

    def save_checkpoint(self, reason: str) -> Path:
        name = ckpt.step_name(self.step)
        if not self.writer:
            return self.adapters / name
        state = self._trainer_state()

        def fill(tmp: Path) -> None:
            self.task.save_weights(tmp)
            ckpt.save_optimizer(tmp / ckpt.OPTIMIZER_FILE, self.optimizer)
            io.write_json(tmp / ckpt.STATE_FILE, state)

        path = ckpt.write_dir_atomically(self.adapters / name, fill)
        ckpt.point_last(self.adapters, name)
        ckpt.prune(self.adapters, self.cfg.keep_checkpoints)
        self.event("checkpoint", step=self.step, path=f"adapters/{name}", reason=reason)
        return path

    def save_best(self, val_loss: float) -> None:
        if not self.writer:
            return

        def fill(tmp: Path) -> None:
            self.task.save_weights(tmp)
            io.write_json(tmp / "best.json", {"step": self.step, "val_loss": val_loss})

        ckpt.write_dir_atomically(self.adapters / "best", fill)
        self.event("best", step=self.step, val_loss=val_loss)

    def restore(self) -> bool:
        """Load the newest checkpoint if there is one; drop metrics written after it."""
        folder = ckpt.latest(self.adapters)
        if folder is None:
            return False
        state = ckpt.read_state(folder)
        self.task.load_weights(folder)
        ckpt.load_optimizer(folder / ckpt.OPTIMIZER_FILE, self.optimizer)
        self.optimizer.init(self.task.model.trainable_parameters())  # fills nothing; marks it ready
        a, b = state["rng"]
        mx.random.seed((a << 32) | b)  # the seed of key (a, b) is that key itself
        for k in ("step", "epoch", "pos", "best_val", "best_step", "bad_evals", "elapsed",
                  "tokens_seen", "window"):
            setattr(self, k, state[k])
        if self.writer and self.metrics_file.is_file():
            rows = [r for r in io.read_jsonl(self.metrics_file) if r.get("step", 0) <= self.step]
            io.write_jsonl(self.metrics_file, rows)
        self.event("resume", step=self.step, checkpoint=f"adapters/{folder.name}")
        return True

    # -- the loop ---------------------------------------------------------------------------
    def _batches(self):
        while True:
            # several processes: this rank's share of each global batch, in the same order
            source = self.task.train_shards(self.epoch, self.cfg.seed, self.dist.rank,
                                            self.dist.size) if self.dist else \
                self.task.train_batches(self.epoch, self.cfg.seed)
            for i, batch in enumerate(source):
                if i < self.pos:
                    continue
                self.pos = i + 1
                yield batch
            self.epoch, self.pos = self.epoch + 1, 0

    def _build_step(self):
        model, task, opt, cfg = self.task.model, self.task, self.optimizer, self.cfg
        accum = cfg.grad_accumulation_steps
        clip = cfg.grad_clip
        dist = self.dist
        # a task may update some parameters its own way (e.g. sign-SGD on sparse rows)
        apply = getattr(task, "apply_gradients", None) or (lambda o, m, g: o.update(m, g))

        def loss_fn(m, batch):
            if dist:  # this rank's share of the global loss, times size: averaged grads = sum
                batch, counts, totals = batch
                loss, ntoks, extras = task.shared_loss(m, batch, counts, totals)
                return loss * dist.size, ntoks, extras
            loss, ntoks, extras = task.loss(m, batch)
            return loss, ntoks, extras

        value_and_grad = nn.value_and_grad(model, loss_fn)

        def step(batch, prev_grad, do_update):
            self.traces += 1  # Python runs here only while mx.compile traces (or uncompiled)
            (loss, ntoks, extras), grad = value_and_grad(model, batch)
            if prev_grad is not None:
                grad = tree_map(lambda a, b: a + b, grad, prev_grad)
            if dist:
                loss = loss / dist.size
            norm = mx.array(0.0)
            if do_update:
                if dist:
                    grad = dist.reduce_grads(grad)
                if accum > 1:
                    grad = tree_map(lambda g: g / accum, grad)
                if clip:
                    grad, norm = optim.clip_grad_norm(grad, clip)
                apply(opt, model, grad)
                grad = None
            return loss, ntoks, extras, grad, norm

        if cfg.compile and getattr(task, "compile_step", True):
            state = [model.state, opt.state, mx.random.state]
            return partial(mx.compile, inputs=state, outputs=state)(step), state
        return step, [model.state, opt.state]

    def validate(self) -> tuple[float, dict] | None:
        model, task = self.task.model, self.task
        model.eval()
        total, ntoks, extras = mx.array(0.0), mx.array(0), {}
        n = 0
        dist, first = self.dist, None
        for i, batch in enumerate(task.valid_batches()):
            if 0 <= self.cfg.val_batches <= i:
                break
            if dist and i % dist.size != dist.rank:  # whole batches per rank; sums reduced
                first = batch if first is None else first
                continue
            loss, toks, ex = task.loss(model, batch)
            total = total + loss.astype(mx.float32) * toks
            ntoks = ntoks + toks
            for k, v in ex.items():
                extras[k] = extras.get(k, mx.array(0.0)) + v.astype(mx.float32) * toks
            mx.eval(total, ntoks, extras)
            n += 1
            if self.watchdog:
                self.watchdog.beat()
        if dist:
            if n == 0 and first is not None:  # no batch here: learn the extras' names at weight 0
                _, _, ex = task.loss(model, first)
                extras = {k: mx.array(0.0) for k in ex}
            keys = sorted(extras)
            sums = dist.sums([total.item(), float(ntoks.item()), float(n)]
                             + [extras[k].item() for k in keys])
            total, ntoks, n = mx.array(sums[0]), mx.array(sums[1]), int(sums[2])
            extras = {k: mx.array(v) for k, v in zip(keys, sums[3:])}
        model.train()
        if n == 0 or ntoks.item() == 0:
            return None
        t = ntoks.item()
        return total.item() / t, {k: v.item() / t for k, v in extras.items()}

    def run(self, stop_requested: Callable[[], bool] = lambda: False,
            resume: bool = True) -> EngineResult:
        hold = mlx_memory_limit(self.cfg)
        before = mx.set_memory_limit(hold) if hold else None
        try:
            return self._run(stop_requested, resume)
        finally:
            if before is not None:  # the process may train again (tests, the bench)
                mx.set_memory_limit(before)
            if os.environ.get("CLARA_HOST_PARTS") and self.host_parts:  # benchmarks: per rank
                rank = self.dist.rank if self.dist else 0
                io.write_json(Path(f"{os.environ['CLARA_HOST_PARTS']}.rank{rank}.json"),
                              {"launch_s": list(self.host_times),
                               "parts": list(self.host_parts)})

    def _run(self, stop_requested, resume) -> EngineResult:
        cfg, task, model = self.cfg, self.task, self.task.model
        mx.random.seed(cfg.seed)
        self.optimizer.init(model.trainable_parameters())
        resumed = resume and self.restore()
        if not resumed:
            if self.metrics_file.is_file() and self.metrics_file.stat().st_size:
                io.write_text(self.metrics_file, "")  # a session that died before any checkpoint
            self.event("start", total_steps=self.total_steps, batches_per_epoch=self.n_batches,
                       **(task.describe() if hasattr(task, "describe") else {}))
            if getattr(task, "validate_at_start", False):
                self._validate_and_track()  # the starting weights are a candidate for best/
        if cfg.grad_checkpoint and hasattr(model, "layers"):
            from mlx_lm.tuner.trainer import grad_checkpoint

            grad_checkpoint(model.layers[0])  # patches the block class: fine in a worker process
        step_fn, state = self._build_step()
        mem_limit = memory_limit_bytes(cfg)
        from clara.platform import kernel_cache_dir, kernels_cold

        if kernels_cold():  # a visible step: the first steps may take minutes on a fresh machine
            self.event("compiling", message="compiling kernels… (first run on this machine; "
                       "cached for later runs)", cache=str(kernel_cache_dir()))
        model.train()
        batches = self._batches()
        accum = cfg.grad_accumulation_steps
        session_start = time.perf_counter()
        last_mem_check, low = 0.0, False
        elapsed0 = self.elapsed

        def result(status, reason, message="", **extra):
            return EngineResult(status, reason, self.step, self.total_steps, self.best_step,
                                self.best_val, message, extra)

        if self.dist:  # rank 0 decides; every rank's stop request counts
            self._stop = self.dist.sums([float(stop_requested())])[0] > 0

        def boundary(step: int) -> bool:
            """After `step` the engine needs its weights (validation, a checkpoint, the end)."""
            return step >= self.total_steps or step % cfg.save_every == 0 or \
                bool(cfg.val_every and step % cfg.val_every == 0)

        def launch() -> dict:
            """Queue the next step on the device (mx.async_eval) without waiting for it: while
            it runs, the host reads the previous step's numbers and queues the one after, so
            the GPU does not idle while Python and kernel encoding run (most of a small step's
            time on CUDA, and what two processes cannot halve)."""
            tic = time.perf_counter()
            grad, out = None, {"losses": [], "extras": [], "tokens": 0, "tic": tic}
            parts = dict.fromkeys(("batch", "step", "eval", "tokens", "dist"), 0.0)
            for micro in range(accum):
                t0 = time.perf_counter()
                batch = next(batches)
                real = True
                if self.dist:  # (shard, its counts, is it real[, the batch's]) -> step inputs
                    batch, counts, real, *known = batch
                    batch = (batch, *self.dist.totals(counts, known[0] if known else None))
                t1 = time.perf_counter()
                loss, ntoks, extras, grad, norm = step_fn(batch, grad, micro == accum - 1)
                t2 = time.perf_counter()
                mx.async_eval(state, loss, ntoks, extras, grad, norm)
                t3 = time.perf_counter()
                out["losses"].append(loss)
                out["extras"].append(extras)
                out["tokens"] += task.batch_tokens(batch[0] if self.dist else batch) if real \
                    else 0
                for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)):
                    parts[k] += dt
            # the rate this step used: computed inside the step (read before the next replaces it)
            out["lr"], out["norm"] = self.optimizer.state["learning_rate"], norm
            out["epoch"] = round(self.epoch + self.pos / self.n_batches, 4)  # before the next
            t4 = time.perf_counter()
            if self.dist:  # the step's reduction, queued before the next step
                if time.monotonic() - mem_check[0] > 1.0:
                    mem_check[:] = [time.monotonic(), system_memory_low()]
                extras = {k: [ex[k] for ex in out["extras"]] for k in out["extras"][0]}
                out["sums"] = self.dist.step_sums(out["losses"], out["tokens"], extras,
                                                  stop_requested(),
                                                  mx.get_peak_memory() > mem_limit or mem_check[1])
            out["launch_s"] = time.perf_counter() - tic
            self.host_times.append(out["launch_s"])
            parts["dist"] = time.perf_counter() - t4
            self.host_parts.append(parts)
            return out

        def queue_ahead() -> dict:
            """launch(), keeping what it changes so that it can be dropped (a stop or the
            memory guard after the step before it): the arrays of the weights, optimizer and
            RNG (immutable: references suffice) and the data position."""
            keep = ([tree_map(lambda x: x, s) for s in state[:2]], mx.random.state[0],
                    self.epoch, self.pos)
            out = launch()
            out["keep"] = keep
            return out

        def drop(queued: dict | None) -> None:
            nonlocal batches
            if queued is None:
                return
            saved, key, self.epoch, self.pos = queued["keep"]
            for live, old in zip(state[:2], saved):
                _restore(live, old)
            a, b = key.tolist()
            mx.random.seed((a << 32) | b)  # the seed of key (a, b) is that key itself
            batches = self._batches()  # rewound to self.pos

        ahead, last_done = None, time.perf_counter()
        mem_over = False
        mem_check = [0.0, False]  # (when, was the machine low on memory)
        while self.step < self.total_steps:
            if self._stop if self.dist else stop_requested():
                drop(ahead)  # the step queued ahead never happened: stop exactly here
                self.save_checkpoint("stop")
                self.event("stop", step=self.step)
                return result("stopped", "stop", "stopped on request")
            queued_before = ahead is not None
            current = ahead or launch()
            current.pop("keep", None)  # only a step still queued ahead can be dropped
            # queue the next step now unless this one ends at a boundary (same decision on
            # every rank: it depends on step numbers alone)
            ahead = None if boundary(self.step + 1) or not STEP_AHEAD else queue_ahead()
            tokens = current["tokens"]
            nan_here = False
            if self.dist:  # one all_sum: global loss, tokens, extras, anyone's stop/memory
                losses, tokens, extras_sum, self._stop, mem_over = \
                    self.dist.read_step_sums(current["sums"])
                # every rank holds the same summed loss bits (a NaN anywhere is a NaN in it),
                # so rank 0's NaN verdict is everyone's without another round
                nan_here = not math.isfinite(losses[0])
                if self.watchdog:
                    self.watchdog.beat(self.step + 1)
            else:
                losses = [v.item() for v in current["losses"]]
                extras_sum = {}
                for ex in current["extras"]:
                    for k, v in ex.items():
                        extras_sum[k] = extras_sum.get(k, 0.0) + v.item()
            peak = mx.get_peak_memory()
            now = time.perf_counter()
            dt = now - max(current["tic"], last_done)  # queued ahead: from the last step's end
            # A launch's own time goes to its step: on a CPU, mx.async_eval computes the step
            # then and there, so the next step's launch ran inside this interval and this
            # step's inside the last one (without this a step after a checkpoint read ~0 s)
            if ahead is not None:
                dt -= ahead["launch_s"]
            if queued_before:
                dt += current["launch_s"]
            last_done = now
            self.step += 1
            train_loss = sum(losses) / len(losses)
            lr = float(current["lr"].item())
            norm = current["norm"]
            if nan_here or (not self.dist and not math.isfinite(train_loss)):
                drop(ahead)
                hint = (f"lower the learning rate (now {cfg.learning_rate:g}; try "
                        f"{cfg.learning_rate / 10:g}), keep grad_clip on, or check the data")
                self.event("nan", step=self.step, loss=str(train_loss), hint=hint)
                return result("failed", "nan",
                              f"loss became {train_loss} at step {self.step}: {hint}")
            self.tokens_seen += tokens
            self.elapsed = elapsed0 + time.perf_counter() - session_start
            w = self.window
            w["loss"] += train_loss
            w["steps"] += 1
            w["tokens"] += tokens
            w["time"] += dt
            for k, v in extras_sum.items():
                w["extras"][k] = w["extras"].get(k, 0.0) + v / accum
            if self.step % cfg.report_every == 0 or self.step == self.total_steps:
                row = {"step": self.step, "epoch": current["epoch"],
                       "train_loss": w["loss"] / w["steps"], "learning_rate": lr,
                       "tokens_per_second": w["tokens"] / w["time"] if w["time"] else None,
                       "tokens": self.tokens_seen, "peak_memory_gb": peak / 1e9,
                       "elapsed_s": round(self.elapsed, 3)}
                if cfg.grad_clip:
                    row["grad_norm"] = float(norm.item())
                row.update({f"train_{k}": v / w["steps"] for k, v in w["extras"].items()})
                self.metric(row)
                self.window = {"loss": 0.0, "steps": 0, "tokens": 0, "time": 0.0, "extras": {}}
            done = self.step == self.total_steps
            if (cfg.val_every and self.step % cfg.val_every == 0) or done:
                stop_early = self._validate_and_track()
                if self.dist:
                    stop_early = self.dist.decide(stop_early)[0]
                if stop_early:
                    self.save_checkpoint("early_stop")
                    self.event("early_stop", step=self.step, best_step=self.best_step,
                               best_val_loss=self.best_val,
                               patience=cfg.early_stopping_patience)
                    return result("completed", "early_stop",
                                  f"early stop at step {self.step}: no improvement in "
                                  f"{self.bad_evals} validations")
            if not self.dist:
                if time.monotonic() - last_mem_check > 1.0:  # /proc: once a second
                    last_mem_check, low = time.monotonic(), system_memory_low()
                mem_over = peak > mem_limit or low
            if mem_over:
                drop(ahead)
                return self._memory_stop(result, peak, mem_limit)
            if self.step % cfg.save_every == 0 or done:
                self.save_checkpoint("done" if done else "periodic")
        return result("completed", "done", f"trained {self.step} steps")

    def _memory_stop(self, result, peak: int, mem_limit: int) -> EngineResult:
        self.save_checkpoint("memory")
        hint = "lower batch_size or max_seq_length, or turn on grad_checkpoint"
        self.event("memory", step=self.step, peak_memory_gb=peak / 1e9,
                   limit_gb=mem_limit / 1e9, hint=hint)
        return result("stopped", "memory",
                      f"memory guard: peak {peak / 1e9:.2f} GB over the limit "
                      f"{mem_limit / 1e9:.2f} GB at step {self.step}: {hint}")

    def _validate_and_track(self) -> bool:
        """Validate, log, keep the best; True when early stopping should fire."""
        tic = time.perf_counter()
        out = self.validate()
        if out is None:
            return False
        val_loss, extras = out
        row = {"step": self.step, "val_loss": val_loss,
               "val_time_s": round(time.perf_counter() - tic, 3)}
        row.update({f"val_{k}": v for k, v in extras.items()})
        self.metric(row)
        # a task may name the validation metric that selects best/ ("loss" or an extra, min|max)
        key, mode = getattr(self.task, "best_metric", ("loss", "min"))
        score = val_loss if key == "loss" else extras.get(key, math.nan)
        if not math.isfinite(score):
            return False
        sign = -1.0 if mode == "max" else 1.0
        if self.best_val is None or \
                sign * score < sign * self.best_val - self.cfg.early_stopping_min_delta:
            self.best_val, self.best_step, self.bad_evals = score, self.step, 0
            self.save_best(score)
            return False
        self.bad_evals += 1
        return 0 < self.cfg.early_stopping_patience <= self.bad_evals


def _restore(live, old) -> None:
    """Put the arrays of `old` (a tree_map copy of `live`) back into `live` in place: the
    compiled step holds these very containers."""
    items = old.items() if isinstance(old, dict) else enumerate(old)
    for k, v in items:
        if isinstance(v, (dict, list)) and isinstance(live[k], (dict, list)):
            _restore(live[k], v)
        else:
            live[k] = v


def configure_logging(log_file: Path) -> None:
    """Log to the run's log.txt (and stderr), once per process."""
    root = logging.getLogger("clara")
    if any(getattr(h, "_clara_run", None) == str(log_file) for h in root.handlers):
        return
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler._clara_run = str(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    if sys.stderr.isatty() and not any(
            type(h) is logging.StreamHandler and getattr(h, "stream", None) is sys.stderr
            for h in root.handlers):
        root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(logging.INFO)
