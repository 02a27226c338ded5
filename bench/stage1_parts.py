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

and two parts that need no model (run alone, nothing is built):

    dropout     the self-check of the CUDA dropout kernel (adapters.kernel_dropped_lora):
                keep rate, its output and gradients against the MLX-ops path with the same
                (hashed) mask, then one adapter call's compiled forward + backward at the
                decoder's MLP width with each mask generator (none, threefry, hash, kernel)
    attn        causal attention alone (mx.fast.scaled_dot_product_attention), compiled
                forward + backward, at the step's encoder and decoder widths (--enc-len,
                --dec-len; the 1.1B preset's 320 and 448) and at those widths rounded up to a
                multiple of 128: MLX 0.32.4 runs cuDNN's fused backward only when the query
                length is a multiple of 128 (ScaledDotProductAttentionVJP::use_fallback), else
                its unfused fallback (scores, softmax and their backward per block); and at the
                step's widths padded to 128 inside the call (the model's CLARA_ATTN_PAD=128)
    linears     a block's seven adapted projections at the step's token counts: the base
                matmuls alone, the adapter pairs alone, base + adapters unfolded and folded
                (adapters.lora_fold), and a block's norms and SwiGLU product (linears_part)

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


def dropout_part(s: dict, args) -> dict:
    """The CUDA dropout kernel's self-check and one adapter call per mask generator."""
    import mlx.core as mx

    from clara.method import adapters
    from clara.platform import backend

    res: dict = {"backend": backend()}
    B, L, d, r = s["batch_size"], args.dec_len, s["intermediate"], s["rank"]
    dtype = getattr(mx, s["dtype"])
    mx.random.seed(0)
    x = mx.random.normal((B, L, d)).astype(dtype)
    w = (mx.random.normal((d, s["hidden"])) * d ** -0.5).astype(dtype)
    a = (mx.random.normal((d, r)) * d ** -0.5).astype(dtype)
    b = (mx.random.normal((r, s["hidden"])) * 0.1).astype(dtype)
    key, p = mx.array([12345, 678], dtype=mx.uint32), mx.array(0.1)
    if res["backend"] == "cuda":
        keep = adapters.hashed_keep(key, x.shape, p)
        ref = mx.where(keep, x / (1 - p).astype(dtype), 0)
        got = adapters.cuda_dropout(x, key, p)
        res["keep_rate"] = float(keep.astype(mx.float32).mean())
        res["kernel_keep_rate"] = float(((got != 0) | (x == 0)).astype(mx.float32).mean())
        res["fwd_mismatches"] = int((got != ref).sum())

        def loss(f):
            return lambda x, a, b: (f(x, key, p, a, b).astype(mx.float32) ** 2).sum()

        os.environ["CLARA_DROPOUT_RNG"] = "hash"
        g_ops = mx.grad(loss(adapters.dropped_lora), argnums=(0, 1, 2))(x, a, b)
        g_ker = mx.grad(loss(adapters.kernel_dropped_lora), argnums=(0, 1, 2))(x, a, b)
        res["grad_max_rel_diff"] = {
            n: float(mx.abs((u - v).astype(mx.float32)).max()
                     / (mx.abs(v.astype(mx.float32)).max() + 1e-12))
            for n, u, v in zip("xab", g_ker, g_ops)}
        print(f"dropout self-check: keep rate {res['keep_rate']:.5f} (kernel "
              f"{res['kernel_keep_rate']:.5f}, want 0.9), forward elements differing from the "
              f"MLX ops {res['fwd_mismatches']} of {x.size}, gradients' max relative "
              f"difference {res['grad_max_rel_diff']}", flush=True)
    else:
        print(f"dropout self-check: no CUDA ({res['backend']}), the kernel is not run; "
              "'kernel' below is the MLX-ops hash", flush=True)
    res["ms"] = {}
    for rng in ("none", "threefry", "hash", "kernel"):
        os.environ["CLARA_DROPOUT_RNG"] = "threefry" if rng == "none" else rng
        pair = adapters.LoRAPair(a, b, 1.0, 0.0 if rng == "none" else 0.1)
        pair.train()

        def f(x, a, b):
            pair.lora_a, pair.lora_b = a, b
            y = x @ w + pair.delta(x)
            return (y.astype(mx.float32) ** 2).sum()

        vg = mx.compile(mx.value_and_grad(f, argnums=(0, 1, 2)))
        sec = timed(lambda: vg(x, a, b), args.reps, args.warm)
        res["ms"][rng] = 1e3 * sec
    os.environ.pop("CLARA_DROPOUT_RNG", None)
    print(f"one adapter call [{B}x{L}x{d}] -> {s['hidden']}, forward + backward, compiled: "
          + ", ".join(f"{k} {v:.3f} ms" for k, v in res["ms"].items()), flush=True)
    return res


def attn_part(s: dict, args) -> dict:
    """Causal attention's forward + backward alone at the step's widths and at multiples of
    128 (cuDNN's fused backward in MLX 0.32.4 on CUDA)."""
    import mlx.core as mx

    from clara.method.model import _padded_sdpa

    def sdpa_plain(q, k, v, cache=None, scale=1.0, mask=None):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)

    padded = _padded_sdpa(sdpa_plain, 128)
    B, H, KV = s["batch_size"], s["heads"], s["kv_heads"]
    D = s["hidden"] // H
    dtype = getattr(mx, s["dtype"])
    res = {}
    for L in sorted({args.enc_len, args.dec_len, -(-args.enc_len // 128) * 128,
                     -(-args.dec_len // 128) * 128}):
        mx.random.seed(0)
        q = mx.random.normal((B, H, L, D)).astype(dtype)
        k, v = (mx.random.normal((B, KV, L, D)).astype(dtype) for _ in range(2))
        c = mx.random.normal((B, H, L, D)).astype(dtype)

        def f(q, k, v, sdpa=sdpa_plain):
            return (sdpa(q, k, v, scale=D ** -0.5, mask="causal") * c).astype(mx.float32).sum()

        vg = mx.compile(mx.value_and_grad(f, argnums=(0, 1, 2)))
        fwd = mx.compile(f)
        res[L] = {"fwd_bwd_ms": 1e3 * timed(lambda: vg(q, k, v), args.reps, args.warm),
                  "fwd_ms": 1e3 * timed(lambda: fwd(q, k, v), args.reps, args.warm)}
        extra = ""
        if L % 128:  # the model's CLARA_ATTN_PAD=128: padded inside the call, output cut back
            vgp = mx.compile(mx.value_and_grad(partial(f, sdpa=padded), argnums=(0, 1, 2)))
            res[L]["pad128_fwd_bwd_ms"] = 1e3 * timed(lambda: vgp(q, k, v), args.reps, args.warm)
            extra = f", padded to 128 in the call {res[L]['pad128_fwd_bwd_ms']:7.3f} ms"
        print(f"attention B={B} H={H}/{KV} D={D} L={L:4d}: forward {res[L]['fwd_ms']:7.3f} ms, "
              f"forward + backward {res[L]['fwd_bwd_ms']:7.3f} ms per block{extra}", flush=True)
    n = s["layers"]
    e, d = args.enc_len, args.dec_len
    e2, d2 = -(-e // 128) * 128, -(-d // 128) * 128
    tot = lambda a, b: n * (res[a]["fwd_bwd_ms"] + res[b]["fwd_bwd_ms"])  # noqa: E731
    inc = n * (res[e].get("pad128_fwd_bwd_ms", res[e]["fwd_bwd_ms"])
               + res[d].get("pad128_fwd_bwd_ms", res[d]["fwd_bwd_ms"]))
    print(f"a step's attention ({n} blocks, encoder + decoder): at {e}/{d} {tot(e, d):.1f} ms, "
          f"at {e2}/{d2} {tot(e2, d2):.1f} ms, at {e}/{d} padded in the call {inc:.1f} ms",
          flush=True)
    return {str(k): v for k, v in res.items()}


def linears_part(s: dict, args) -> dict:
    """One block's seven adapted projections (q, k, v, o, gate, up, down; clara.method.adapters
    MultiLoRALinear, dropout 0.1, the platform's mask), compiled forward + backward (input
    gradients; adapter gradients where there are adapters) at the encoder's and the decoder's
    token counts: the base matmuls alone, the adapter pairs alone, base + adapters as the model
    runs them (unfolded), and folded (adapters.lora_fold); and a block's two RMS norms and its
    SwiGLU product. Times per block and per step (x layers, encoder + decoder)."""
    import mlx.core as mx
    import mlx.nn as nn

    from clara.method import adapters

    B, h, i, r = s["batch_size"], s["hidden"], s["intermediate"], s["rank"]
    kv = s["kv_heads"] * (h // s["heads"])
    dtype = getattr(mx, s["dtype"])
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    mx.random.seed(0)
    mods = []
    for din, dout in shapes:
        base = nn.Linear(din, dout, bias=False)
        base.set_dtype(dtype)
        m = adapters.MultiLoRALinear(base, r, 2.0, 0.1)
        m.add("x")
        m.adapters["x"].lora_b = mx.random.normal(m.adapters["x"].lora_b.shape) * 0.01
        m.freeze()
        m.unfreeze(keys=["lora_a", "lora_b"])
        m.train()
        mods.append(m)
    res: dict = {}
    for where, L in (("enc", args.enc_len), ("dec", args.dec_len)):
        T = B * L
        xs = [mx.random.normal((T, din)).astype(dtype) for din, _ in shapes]
        cs = [mx.random.normal((T, dout)).astype(dtype) for _, dout in shapes]
        mx.eval(xs, cs)
        ws = [m.linear.weight for m in mods]
        ps = [(m.adapters["x"].lora_a, m.adapters["x"].lora_b) for m in mods]

        def proj(xs, ab, mode):
            adapters.begin_pass()
            tot = 0
            for m, x, c, (a, b), w in zip(mods, xs, cs, ab, ws):
                m.adapters["x"].lora_a, m.adapters["x"].lora_b = a, b
                if mode == "base":
                    y = x @ w.T
                elif mode == "adapters":
                    y = m.adapters["x"].delta(x)
                else:
                    os.environ["CLARA_LORA_FOLD"] = "1" if mode == "folded" else "0"
                    y = m(x)
                tot = tot + (y * c).astype(mx.float32).sum()
            adapters.end_pass()
            for m, (a, b) in zip(mods, ps):  # the module keeps concrete arrays, not tracers
                m.adapters["x"].lora_a, m.adapters["x"].lora_b = a, b
            return tot

        row = {}
        for mode in ("base", "adapters", "unfolded", "folded"):
            argn = (0,) if mode == "base" else (0, 1)
            vg = mx.compile(mx.value_and_grad(partial(proj, mode=mode), argnums=argn),
                            inputs=[mx.random.state], outputs=[mx.random.state])
            row[mode] = 1e3 * timed(lambda: vg(xs, ps), args.reps, args.warm)
        os.environ.pop("CLARA_LORA_FOLD", None)
        xn = mx.random.normal((T, h)).astype(dtype)
        g = mx.random.normal((T, i)).astype(dtype)
        u = mx.random.normal((T, i)).astype(dtype)
        wn = mx.ones((h,), dtype=dtype)

        def other(xn, g, u):
            n = mx.fast.rms_norm(xn, wn, 1e-5) * 2 + mx.fast.rms_norm(xn + 1, wn, 1e-5)
            return (n.astype(mx.float32).sum() + (nn.silu(g) * u).astype(mx.float32).sum())

        vg = mx.compile(mx.value_and_grad(other, argnums=(0, 1, 2)))
        row["norms+swiglu"] = 1e3 * timed(lambda: vg(xn, g, u), args.reps, args.warm)
        res[where] = row
        print(f"{where} ({T} tokens), per block, forward + backward: "
              + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()), flush=True)
    n = s["layers"]
    step = {k: n * (res["enc"][k] + res["dec"][k]) for k in res["enc"]}
    res["step"] = step
    print(f"a step's ({n} blocks, encoder + decoder): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in step.items()), flush=True)
    return res


# kernel name -> part of the step (first match wins); cuBLAS's gemms are split by their grid
# size into the adapters' thin products (a dimension of the rank) and the rest (see kernel_shares)
KERNEL_PARTS = [
    ("attention (cuDNN SDPA)", ("sdpa", "fmha", "flash", "cudnn")),
    ("dropout kernel", ("clara_dropout",)),
    ("gemm", ("nvjet", "gemm", "gemv", "cutlass", "sm90_xmma", "matmul")),
    ("norm", ("rms", "layer_norm")),
    ("softmax / CE", ("softmax", "logsumexp", "cross_entropy")),
    ("reduce", ("reduce",)),
    ("copy / gather / scatter", ("copy", "gather", "scatter", "concat", "slice")),
    ("random bits", ("rbits", "threefry")),
    ("fused elementwise", ("compiled", "fused")),
    ("elementwise", ("unary", "binary", "ternary", "select", "where", "arange")),
]


def kernel_shares(csv_path: str, thin_grid: int = 0) -> dict:
    """Nsight Compute's raw per-launch CSV (`ncu -i REP --csv --page raw --metrics
    gpu__time_duration.sum,launch__grid_size`) grouped by KERNEL_PARTS: ms, share, kernels."""
    import csv
    import re

    rows = list(csv.reader(open(csv_path, errors="replace")))
    head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    cols = rows[head]
    name, dur = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
    unit = rows[head + 1][dur] if len(rows) > head + 1 else "nsecond"
    scale = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0,
             "ms": 1.0}.get(unit, 1e-6)
    grid = cols.index("launch__grid_size") if "launch__grid_size" in cols else None
    out: dict = {}
    for r in rows[head + 1:]:
        if len(r) <= dur:
            continue
        try:
            ms = float(r[dur].replace(",", "")) * scale
        except ValueError:
            continue
        low = r[name].lower()
        part = next((p for p, keys in KERNEL_PARTS if any(k in low for k in keys)), "other")
        tile = re.search(r"tst_(\d+)x(\d+)_", r[name])
        if part == "gemm" and tile:  # cuBLAS's tile: a side <= 32 is a rank-16 LoRA product
            part = "gemm, thin tiles (LoRA)" if min(map(int, tile.groups())) <= 32 \
                else "gemm, wide tiles"
        elif part == "gemm" and grid is not None and thin_grid:
            part = "gemm, thin (grid <= %d)" % thin_grid if int(float(r[grid])) <= thin_grid \
                else "gemm, wide"
        elif part == "other" and re.match(r"void mlx::[A-Z]", r[name]):
            part = "fused elementwise"  # mx.compile's kernels are named by their op chain
        o = out.setdefault(part, {"ms": 0.0, "kernels": 0, "names": {}})
        o["ms"] += ms
        o["kernels"] += 1
        o["names"][r[name][:60]] = o["names"].get(r[name][:60], 0) + ms
    total = sum(o["ms"] for o in out.values())
    for part, o in sorted(out.items(), key=lambda kv: -kv[1]["ms"]):
        top = sorted(o["names"].items(), key=lambda kv: -kv[1])[:2]
        print(f"{part:<28} {o['ms']:8.2f} ms {100 * o['ms'] / total:5.1f} % {o['kernels']:5d}  "
              + "; ".join(f"{n} {ms:.1f}" for n, ms in top))
    print(f"{'total':<28} {total:8.2f} ms        {sum(o['kernels'] for o in out.values()):5d}")
    return out


MODEL_FREE = {"dropout": dropout_part, "attn": attn_part, "linears": linears_part}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu")
    for k in ("layers", "batch_size"):
        p.add_argument("--" + k.replace("_", "-"), type=int, help="override the preset's")
    p.add_argument("--parts", default="step,step-drop0,loss,enc,dec")
    p.add_argument("--enc-len", type=int, default=320, help="attn: the encoder's row width")
    p.add_argument("--dec-len", type=int, default=448, help="attn: the decoder's row width")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warm", type=int, default=2)
    p.add_argument("--ncu", action="store_true", help="profile one warm step (see above)")
    p.add_argument("--json", default=None)
    p.add_argument("--ncu-csv", help="summarise Nsight Compute's raw CSV (kernel_shares); no run")
    p.add_argument("--thin-grid", type=int, default=0, help="--ncu-csv: split gemms by grid size")
    args = p.parse_args(argv)
    if args.ncu_csv:
        kernel_shares(args.ncu_csv, args.thin_grid)
        return 0

    import mlx.core as mx
    import mlx.nn as nn

    from bench.clara_throughput import PRESETS, build, model_cfg_of, step_flops
    from clara import io
    from clara.method.tasks import ClaraTrainConfig, build_task
    from clara.train.engine import Engine

    s = dict(PRESETS[args.preset])
    s.update({k: v for k, v in vars(args).items() if k in s and v is not None})
    out = {"shape": s, "parts": {}}
    free = [x for x in args.parts.split(",") if x in MODEL_FREE]
    for part in free:
        out["parts"][part] = MODEL_FREE[part](s, args)
    if len(free) == len(args.parts.split(",")):
        if args.json:
            io.write_json(Path(args.json), out)
        return 0
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

        for part in [x for x in args.parts.split(",") if x not in MODEL_FREE]:
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
