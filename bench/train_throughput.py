"""Our training engine against mlx-lm's trainer: same model, data, LoRA settings and seed.

Both trainers get the very same batches in the same order (our LoRA task's batches are fed to
mlx-lm's `train` through its `iterate_batches` hook) and the same loss function, optimizer and
schedule, so their loss curves must match; what differs is the loop around them. Tokens/s is
counted the same way for both: tokens processed by the forward pass (padding excluded) over the
time of each step after a warm-up, median over steps (mlx-lm's own figure counts loss tokens
only).

    python bench/train_throughput.py                   # builds a tiny model and text data
    python bench/train_throughput.py --model PATH --iters 50 --batch-size 4 --seq 256

Writes bench/results/train_throughput-DATE.json (git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import io as io_
import random
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = ("the a mill tower archive harbour orchard river glass salt bell north built "
             "repaired guarded painted sold found in of and by with year old new city keeper "
             "long short water stone road market light dark").split()
    return [" ".join(rng.choice(vocab) for _ in range(words)) + "." for _ in range(n)]


def build_inputs(args, work: Path) -> tuple[str, Path]:
    from clara import io
    from clara.models.tiny import TinyConfig, build_tiny_model

    data = work / "data"
    texts = make_texts(args.rows + 16, args.seq // 2 + 16, args.seed)
    io.write_jsonl(data / "train.jsonl", [{"text": t} for t in texts[: args.rows]])
    io.write_jsonl(data / "valid.jsonl", [{"text": t} for t in texts[args.rows:]])
    if args.model:
        return args.model, data
    model = build_tiny_model(work / "model", texts, TinyConfig(
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        vocab_size=args.vocab, seed=args.seed))
    return str(model), data


def task_config(args, model: str, data: Path):
    from clara.train.config import TrainConfig

    return TrainConfig(model=model, data=str(data), mode="cpt", iters=args.iters,
                       batch_size=args.batch_size, max_seq_length=args.seq + 1,
                       learning_rate=args.lr, lr_schedule="constant", grad_clip=0.0,
                       lora_rank=args.rank, num_layers=-1, val_every=0,
                       save_every=args.iters + 1, seed=args.seed, compile=True)


def throughput(times: list[float], tokens: list[int], warmup: int) -> float:
    """Median over the steps after the warm-up of (step tokens / step time).

    The median rather than total tokens over total time: on a shared machine a few steps slowed
    by other processes would otherwise decide the comparison.
    """
    rates = sorted(tokens[i] / (times[i] - times[i - 1]) for i in range(max(1, warmup), len(times)))
    return rates[len(rates) // 2]


def train_mlx_lm(task, cfg, batches, adapter_file: Path):
    """mlx-lm's own trainer on `task`'s model with our schedule and `batches`; returns the
    callback with every step's loss and the time it was reported."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train

    from clara.train.engine import make_schedule
    from clara.train.lora import lm_loss

    class Record(TrainingCallback):
        def __init__(self):
            self.losses, self.times = [], []

        def on_train_loss_report(self, info):
            self.times.append(time.perf_counter())
            self.losses.append(info["train_loss"])

    rec = Record()
    opt = optim.AdamW(learning_rate=make_schedule(cfg, cfg.iters), weight_decay=cfg.weight_decay)
    mx.random.seed(cfg.seed)
    targs = TrainingArgs(batch_size=cfg.batch_size, iters=cfg.iters, steps_per_report=1,
                         steps_per_eval=10**9, steps_per_save=10**9,
                         max_seq_length=cfg.max_seq_length, adapter_file=str(adapter_file))
    train(task.model, opt, train_dataset=list(range(cfg.batch_size)), args=targs,
          loss=lm_loss, iterate_batches=batches, training_callback=rec)
    return rec


def run_mlx_lm(cfg, model_path: str, data: Path, work: Path, warmup: int) -> dict:
    import mlx.core as mx
    from clara.train.lora import LoraTask

    mx.reset_peak_memory()
    task = LoraTask(cfg, model_path, data)  # same model load, LoRA layers (same seed) and batches
    tokens: list[int] = []

    def batches(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        epoch = 0
        while True:
            for batch in task.train_batches(epoch, cfg.seed):
                tokens.append(task.batch_tokens(batch))
                yield batch
            epoch += 1
            if not loop:
                return

    rec = train_mlx_lm(task, cfg, batches, work / "mlx_lm_adapters.safetensors")
    n = cfg.iters
    return {"losses": rec.losses, "tokens_per_second": throughput(rec.times, tokens[:n], warmup),
            "peak_memory_gb": mx.get_peak_memory() / 1e9, "tokens": sum(tokens[:n])}


def run_ours(cfg, model_path: str, data: Path, work: Path, warmup: int) -> dict:
    import mlx.core as mx

    from clara.runs import create_run
    from clara.train.engine import Engine
    from clara.train.lora import LoraTask
    from clara.workspace import Workspace

    mx.reset_peak_memory()
    ws = Workspace(work / "ws", "bench").create(exist_ok=True)
    run = create_run(ws, "lora", asdict(cfg))
    task = LoraTask(cfg, model_path, data)
    Engine(task, cfg, run.path).run()
    rows = [r for r in run.metrics() if "train_loss" in r]
    times = [r["elapsed_s"] for r in rows]
    tokens = [b - a for a, b in zip([0] + [r["tokens"] for r in rows], [r["tokens"] for r in rows])]
    return {"losses": [r["train_loss"] for r in rows],
            "tokens_per_second": throughput(times, tokens, warmup),
            "peak_memory_gb": mx.get_peak_memory() / 1e9, "tokens": sum(tokens)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="mlx-lm model folder (default: build a tiny Llama)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--seq", type=int, default=128, help="about this many tokens per row")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2,
                   help="alternate the trainers this many times each; the median counts")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)

    from clara import io
    from clara.platform import describe

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, data = build_inputs(args, work)
        cfg = task_config(args, model, data)
        refs, ourss = [], []
        for i in range(args.repeats):  # alternate, so neither always runs on a warmer machine
            order = [("mlx_lm", run_mlx_lm), ("clara", run_ours)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                with contextlib.redirect_stdout(io_.StringIO()):  # mlx-lm's progress table
                    r = fn(cfg, model, data, work, args.warmup)
                (refs if name == "mlx_lm" else ourss).append(r)
                print(f"  {name:<7} {r['tokens_per_second']:9.1f} tok/s", file=sys.stderr)
        ref = sorted(refs, key=lambda r: r["tokens_per_second"])[len(refs) // 2]
        ours = sorted(ourss, key=lambda r: r["tokens_per_second"])[len(ourss) // 2]
    diffs = [abs(a - b) for a, b in zip(ref["losses"], ours["losses"])]
    result = {
        "platform": describe(), "settings": vars(args),
        "mlx_lm": {k: v for k, v in ref.items() if k != "losses"},
        "clara": {k: v for k, v in ours.items() if k != "losses"},
        "ratio": ours["tokens_per_second"] / ref["tokens_per_second"],
        "all_tokens_per_second": {"mlx_lm": [r["tokens_per_second"] for r in refs],
                                  "clara": [r["tokens_per_second"] for r in ourss]},
        "max_loss_difference": max(diffs), "final_loss": {"mlx_lm": ref["losses"][-1],
                                                          "clara": ours["losses"][-1]},
        "losses": {"mlx_lm": ref["losses"], "clara": ours["losses"]},
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    io.write_json(Path(args.out) / f"train_throughput-{stamp}.json", result)
    print(f"{'trainer':<8} {'tokens/s':>10} {'peak GB':>9} {'final loss':>11}")
    for name, r in (("mlx-lm", ref), ("clara", ours)):
        print(f"{name:<8} {r['tokens_per_second']:>10.1f} {r['peak_memory_gb']:>9.3f} "
              f"{r['losses'][-1]:>11.5f}")
    print(f"ratio clara/mlx-lm: {result['ratio']:.3f}   max |loss difference|: "
          f"{result['max_loss_difference']:.2e}   "
          f"(BLAS preload: {result['platform']['blas_preload']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
