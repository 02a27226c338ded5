"""Data-parallel scaling: the same LoRA run (model, data, seed, global batch) on 1 and on N
processes through `clara`'s own launch path (the worker subprocess; with N > 1, mlx.launch and
mx.distributed with --backend), compared by tokens/s, scaling efficiency and loss curves.

Tokens/s is the engine's per-step figure (tokens of the whole global batch, padding excluded,
over the step's time; reduced across ranks), median over the steps after a warm-up. Scaling
efficiency = speed-up / N. The loss curves should agree to float rounding (bfloat16 on a GPU
makes that looser): N processes train the one-process model.

    python bench/distributed_scaling.py                          # CPU, ring, tiny model
    python bench/distributed_scaling.py --backend nccl --hidden 2048 --layers 22 --heads 32 \\
        --kv-heads 4 --intermediate 5632 --batch-size 8 --seq 512     # ~1B on 2 GPUs

Writes bench/results/distributed_scaling-DATE.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_inputs(args, work: Path) -> tuple[str, Path]:
    from bench.train_throughput import make_texts
    from clara import io
    from clara.models.tiny import TinyConfig, build_tiny_model

    data = work / "data"
    texts = make_texts(args.rows + 8, args.seq + 16, args.seed)  # about a token a word: full rows
    io.write_jsonl(data / "train.jsonl", [{"text": t} for t in texts[: args.rows]])
    io.write_jsonl(data / "valid.jsonl", [{"text": t} for t in texts[args.rows:]])
    if args.model:
        return args.model, data
    model = build_tiny_model(work / "model", texts, TinyConfig(
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate,
        vocab_size=args.vocab, seed=args.seed))
    return str(model), data


def run_once(args, ws, model: str, data: Path, nproc: int) -> dict:
    from clara.runs import create_run, start_worker
    from clara.train.config import TrainConfig, merge_config

    cfg = merge_config(TrainConfig, None, {
        "model": model, "data": str(data), "mode": "cpt", "iters": args.iters,
        "batch_size": args.batch_size, "max_seq_length": args.seq + 1, "learning_rate": args.lr,
        "lr_schedule": "constant", "lora_rank": args.rank, "fine_tune_type": args.fine_tune_type,
        "val_every": 0, "save_every": args.iters + 1, "seed": args.seed, "dtype": args.dtype,
        "nproc": nproc, "backend": args.backend, "compile": not args.no_compile})
    run = create_run(ws, "lora", asdict(cfg), name=f"n{nproc}-{time.strftime('%H%M%S')}")
    tic = time.perf_counter()
    proc = start_worker(run)
    proc.wait()
    wall = time.perf_counter() - tic
    st = run.status()
    if st.get("status") != "completed":
        tail = (run.path / "log.txt").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{nproc} processes: run {st.get('status')}: {st.get('message')}\n{tail}")
    rows = [r for r in run.metrics() if "train_loss" in r]
    rates = sorted(r["tokens_per_second"] for r in rows[args.warmup:])
    return {"nproc": nproc, "world_size": st.get("world_size"), "backend": st.get("backend"),
            "tokens_per_second": rates[len(rates) // 2],
            "tokens_per_step": rows[-1]["tokens"] / len(rows),
            "peak_memory_gb": max(r["peak_memory_gb"] for r in rows),
            "losses": [r["train_loss"] for r in rows], "wall_s": round(wall, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="mlx-lm model folder (default: build a random Llama)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--seq", type=int, default=128, help="tokens per row (rows are cut to it)")
    p.add_argument("--batch-size", type=int, default=8, help="the GLOBAL batch")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--fine-tune-type", default="lora")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dtype", default=None, help="default: the platform's (float32 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="train without mx.compile")
    p.add_argument("--nprocs", default="1,2", help="process counts to compare; the first is "
                                                   "the reference")
    p.add_argument("--backend", default="auto", help="ring, nccl, jaccl, mpi or auto")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)

    from clara import io
    from clara.platform import describe
    from clara.workspace import Workspace

    counts = [int(x) for x in args.nprocs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, data = build_inputs(args, work)
        ws = Workspace(work / "ws", "bench").create(exist_ok=True)
        results = []
        for n in counts:
            r = run_once(args, ws, model, data, n)
            results.append(r)
            print(f"  {n} process(es): {r['tokens_per_second']:.1f} tok/s", file=sys.stderr)
    ref = results[0]
    for r in results:
        r["speedup"] = r["tokens_per_second"] / ref["tokens_per_second"]
        r["efficiency"] = r["speedup"] / (r["nproc"] / ref["nproc"])
        r["max_rel_loss_difference"] = max(abs(a - b) / abs(a)
                                           for a, b in zip(ref["losses"], r["losses"]))
    result = {"platform": describe(), "settings": vars(args), "runs": results}
    out = Path(args.out) / f"distributed_scaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    io.write_json(out, result)
    print(f"{'procs':>5} {'backend':>8} {'tokens/s':>11} {'speed-up':>9} {'efficiency':>10} "
          f"{'peak GB':>8} {'final loss':>11} {'max rel loss diff':>18}")
    for r in results:
        print(f"{r['nproc']:>5} {r['backend'] or '-':>8} {r['tokens_per_second']:>11.1f} "
              f"{r['speedup']:>9.3f} {r['efficiency']:>10.3f} {r['peak_memory_gb']:>8.2f} "
              f"{r['losses'][-1]:>11.5f} {r['max_rel_loss_difference']:>18.2e}")
    print(f"global batch {args.batch_size} x {args.seq} tokens, {args.iters} steps "
          f"({args.warmup} warm-up), {args.fine_tune_type}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
