"""One CLaRa stage-1 step taken apart on the device: where its time goes.

The step is the engine's own compiled step (clara/train/engine.py `_build_step`: forward,
backward, clipping, AdamW) on one batch of the model and rows of bench/clara_throughput.py,
run again and again on that same batch, each run waited for (mx.eval), so a figure is the
device's time for the graph plus whatever of the host's encoding it does not hide. Parts:

    step        the whole training step
    step-drop0  the same with LoRA dropout off (a new compiled step)
    step-threefry, step-hash  the step with the dropout masks of MLX's threefry draw or of
                the hash (clara.method.adapters.keep_mask; `step`: the platform's default)
    loss        the forward alone (compiled)
    enc         forward + backward of the encoder alone (compressor: its memory states' sum
                plus the MSE), compiled
    dec         forward + backward of the decoder alone (generator CE, the compressed vectors
                given and differentiated), compiled

`--ncu` instead runs a few warm steps and then one more between cuProfilerStart and
cuProfilerStop, for Nsight Compute's per-kernel summary (ncu --profile-from-start off ...;
scripts/gpu-check.sh's `profile` step).

    python bench/stage1_parts.py --preset cpu --parts step,step-drop0,loss,enc,dec
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def set_dropout(model, p: float) -> None:
    from clara.method.adapters import LoRAPair

    for _, m in model.named_modules():
        if isinstance(m, LoRAPair):
            m.dropout._p_1 = 1 - p


def timed(fn, reps: int, warm: int) -> float:
    """Median seconds of fn() waited for (mx.eval), after `warm` untimed calls."""
    import mlx.core as mx

    for _ in range(warm):
        mx.eval(fn())
    ts = []
    for _ in range(reps):
        tic = time.perf_counter()
        mx.eval(fn())
        ts.append(time.perf_counter() - tic)
    return sorted(ts)[len(ts) // 2]


def profiler(on: bool) -> int:
    """cuProfilerStart/Stop through the driver (Nsight Compute's --profile-from-start off)."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        print(f"no CUDA driver ({e}): nothing to profile", file=sys.stderr)
        return -1
    return int(lib.cuProfilerStart() if on else lib.cuProfilerStop())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu")
    for k in ("layers", "batch_size"):
        p.add_argument("--" + k.replace("_", "-"), type=int, help="override the preset's")
    p.add_argument("--parts", default="step,step-drop0,loss,enc,dec")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warm", type=int, default=2)
    p.add_argument("--ncu", action="store_true", help="profile one warm step (see above)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import mlx.core as mx
    import mlx.nn as nn

    from bench.clara_throughput import PRESETS, build, model_cfg_of, step_flops
    from clara import io
    from clara.method.tasks import ClaraTrainConfig, build_task
    from clara.train.engine import Engine

    s = dict(PRESETS[args.preset])
    s.update({k: v for k, v in vars(args).items() if k in s and v is not None})
    out = {"shape": s, "parts": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        build(s, work)
        cfg = ClaraTrainConfig(model=str(work / "model"), data=str(work / "stage1"),
                               batch_size=s["batch_size"], doc_max_tokens=s["doc"],
                               compression_rate=s["cr"], lora_rank=s["rank"], iters=10,
                               val_every=0, save_every=10**6, grad_clip=1.0, seed=0)
        task = build_task(cfg, "stage1")
        model = task.model
        model.train()
        batch = next(iter(task.train_batches(0, 0)))
        mx.eval(batch)
        flops = step_flops(model_cfg_of(task), batch, s["rank"])
        out.update(tokens=task.batch_tokens(batch), flops=flops,
                   shapes={k: list(v.shape) for k, v in batch.items()})

        def engine_step(run_dir):
            eng = Engine(task, cfg, run_dir)
            eng.optimizer.init(model.trainable_parameters())
            fn, state = eng._build_step()
            return lambda: (fn(batch, None, True), state)

        state = [model.state, mx.random.state]
        compiled = partial(mx.compile, inputs=state, outputs=state)

        def enc_loss(m, b):
            comp, mse = m.compress(b["enc_ids"], b["enc_mask"], b["enc_mem_pos"])
            return comp.astype(mx.float32).mean() + mse

        comp0 = mx.stop_gradient(model.compress(batch["enc_ids"], batch["enc_mask"],
                                                batch["enc_mem_pos"])[0])
        mx.eval(comp0)
        k = comp0.shape[0] // batch["dec_ids"].shape[0]

        def dec_loss(m, b, comp):
            return m.decode_ce(b, comp, k)[0]

        if args.ncu:
            fn = engine_step(work / "run")
            for _ in range(args.warm + 1):
                mx.eval(fn())
            mx.synchronize()
            print("cuProfilerStart:", profiler(True), flush=True)
            mx.eval(fn())
            mx.synchronize()
            print("cuProfilerStop:", profiler(False), flush=True)
            return 0

        for part in args.parts.split(","):
            set_dropout(model, cfg.lora_dropout)
            os.environ.pop("CLARA_DROPOUT_RNG", None)
            if part in ("step-threefry", "step-hash"):  # adapters.keep_mask's generator
                os.environ["CLARA_DROPOUT_RNG"] = part[5:]
            if part.startswith("step") and part != "step-drop0":
                fn = engine_step(work / part)
            elif part == "step-drop0":
                set_dropout(model, 0.0)
                fn = engine_step(work / part)
            elif part == "loss":
                f = compiled(lambda b: task.loss(model, b)[0])
                fn = lambda: f(batch)  # noqa: E731
            elif part == "enc":
                vg = nn.value_and_grad(model, enc_loss)
                f = compiled(lambda b: vg(model, b))
                fn = lambda: f(batch)  # noqa: E731
            elif part == "dec":
                vg = nn.value_and_grad(model, lambda m, c: dec_loss(m, batch, c))
                f = compiled(lambda c: vg(model, c))
                fn = lambda: f(comp0)  # noqa: E731
            else:
                raise SystemExit(f"unknown part {part}")
            sec = timed(fn, args.reps, args.warm)
            out["parts"][part] = sec
            print(f"{part:<11} {1e3 * sec:9.1f} ms"
                  + (f"  {flops / sec / 1e12:7.1f} TFLOP/s (the step's model FLOPs, 4N)"
                     if part.startswith("step") else ""), flush=True)
            set_dropout(model, cfg.lora_dropout)
            os.environ.pop("CLARA_DROPOUT_RNG", None)
    print(f"batch {s['batch_size']}, layers {s['layers']}: {out['tokens']} real tokens, "
          f"{flops / 1e12:.2f} TFLOP a step; shapes {json.dumps(out['shapes'])}")
    if args.json:
        io.write_json(Path(args.json), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
