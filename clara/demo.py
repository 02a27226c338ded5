"""The demo workspace: the embedded default, built from the material in `data/` on first run.

What it holds when done:
    sources/    the sample handbook (data/sample/*.pdf), imported with page tracking
    datasets/   handbook-cpt, handbook-sft, handbook-stage1..3 from it, and the synthetic
                knowledge benchmark synth-* (docs, qa, cpt, sft, stage1..3)
    models/     tiny-init (a Llama built from scratch: BPE tokenizer + random weights) and
                tiny (the same after pretraining on the handbook and the synthetic documents)
    runs/       the pretraining run, a finished LoRA SFT run on the handbook QA, and the
                CLaRa pipeline (stages 1-3) on the synthetic benchmark

Each step is skipped when its output exists, so an interrupted build resumes where it stopped.
Training steps run as real runs (worker processes), exactly as `clara train` starts them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from clara import io
from clara.errors import ClaraError
from clara.workspace import Workspace

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_PDF = DATA_DIR / "sample" / "karsholm_observatory_handbook.pdf"
SAMPLE_QA = DATA_DIR / "sample_qa.jsonl"
DEMO_NAME = "demo"
DONE_MARK = ".demo-complete"

Progress = Callable[[str], None]


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults build it in a few minutes on a 2-core CPU."""

    hidden: int = field(default=192, metadata={"help": "Hidden size of the tiny model."})
    layers: int = field(default=4, metadata={"help": "Transformer blocks of the tiny model."})
    heads: int = field(default=4, metadata={"help": "Attention heads of the tiny model."})
    vocab: int = field(default=2048, metadata={"help": "BPE vocabulary of the tiny model."})
    synth_entities: int = field(default=40, metadata={"help": "Entities of the synthetic benchmark."})
    pretrain_iters: int = field(default=400, metadata={"help": "Pretraining steps from scratch."})
    sft_iters: int = field(default=250, metadata={"help": "Steps of the LoRA SFT run."})
    clara_iters: tuple[int, int, int] = field(default=(200, 150, 100),
                                              metadata={"help": "Steps of CLaRa stages 1, 2, 3."})
    batch_size: int = field(default=8, metadata={"help": "Batch size of every run."})
    clara: bool = field(default=True, metadata={"help": "Train the CLaRa pipeline too."})


# -- steps ----------------------------------------------------------------------------------------
def _import_handbook(ws: Workspace, cfg: DemoConfig, progress: Progress) -> None:
    from clara.data.sources import import_files, list_sources

    if not list_sources(ws):
        import_files(ws, [SAMPLE_PDF])


def _handbook_datasets(ws: Workspace, cfg: DemoConfig, progress: Progress) -> None:
    from clara.data.builders import (CptConfig, SftConfig, StageConfig, build_cpt, build_sft,
                                     build_stage)

    def missing(name: str) -> bool:
        return not (ws.datasets_dir / name).is_dir()

    if missing("handbook-cpt"):
        build_cpt(ws, "handbook-cpt", CptConfig(chunk_tokens=128, overlap=16))
    if missing("handbook-sft"):
        build_sft(ws, "handbook-sft", SftConfig(qa=str(SAMPLE_QA), general_share=0.2))
    for stage, extra in ((1, {}), (2, {"k": 3}), (3, {"candidates": 10})):
        if missing(f"handbook-stage{stage}"):
            build_stage(ws, f"handbook-stage{stage}",
                        StageConfig(stage=stage, qa=str(SAMPLE_QA), doc_tokens=96, **extra))


def _synthetic_benchmark(ws: Workspace, cfg: DemoConfig, progress: Progress) -> None:
    from clara.data.synth import build_synth

    if not (ws.datasets_dir / "synth-stage3").is_dir():
        build_synth(ws, "synth", seed=0, entities=cfg.synth_entities)


def _pretraining_text(ws: Workspace) -> Path:
    """One CPT dataset of the handbook chunks and the synthetic documents (train splits)."""
    from clara.data.datasets import write_dataset

    name = "demo-pretrain"
    if not (ws.datasets_dir / name).is_dir():
        splits: dict[str, list[dict]] = {"train": [], "valid": []}
        for source in ("handbook-cpt", "synth-cpt"):
            for split in splits:
                path = ws.datasets_dir / source / f"{split}.jsonl"
                if path.is_file():
                    splits[split] += [{"text": r["text"]} for r in io.read_jsonl(path)]
        write_dataset(ws, name, "cpt", splits,
                      {"format": "text", "sources": ["handbook-cpt", "synth-cpt"], "seed": 0})
    return ws.datasets_dir / name


def _tiny_model(ws: Workspace, cfg: DemoConfig, progress: Progress) -> None:
    from clara.models.tiny import TinyConfig, build_tiny_model, dataset_texts

    out = ws.models_dir / "tiny-init"
    if out.is_dir():
        return
    texts: list[str] = []
    for name in ("handbook-cpt", "handbook-sft", "synth-cpt", "synth-sft", "synth-docs"):
        texts += dataset_texts(ws.datasets_dir / name, splits=("train", "valid", "test"))
    build_tiny_model(out, texts, TinyConfig(hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                                            num_attention_heads=cfg.heads, vocab_size=cfg.vocab))


def _train(ws: Workspace, run_name: str, overrides: dict, progress: Progress):
    """Create and run a LoRA-engine run in its worker process, reporting progress; reuse a
    finished run of that name, resume an unfinished one."""
    from clara.runs import Run, start_worker
    from clara.train.launch import lora_run

    path = ws.runs_dir / run_name
    run = Run(path) if (path / "run.toml").is_file() else lora_run(ws, overrides, name=run_name)
    if run.status().get("status") == "completed":
        return run
    proc = start_worker(run)
    follow(run, proc, progress)
    status = run.status()
    if status.get("status") != "completed":
        raise ClaraError(f"demo run {run.id} ended {status.get('status')}: "
                         f"{status.get('message') or 'see ' + str(run.path / 'log.txt')}")
    return run


def follow(run, proc, progress: Progress, every: float = 5.0) -> None:
    """Report a run's progress every few seconds until its process ends."""
    last_report, row = 0.0, {}
    for update in run.follow(proc=proc, events=False):
        row = update.last_train or row
        if row and not update.done and time.monotonic() - last_report >= every:
            last_report = time.monotonic()
            total = update.status.get("total_steps") or "?"
            progress(f"    {run.id}: step {row.get('step')}/{total}, "
                     f"loss {row.get('train_loss', float('nan')):.3f}")


def _pretrain(ws: Workspace, cfg: DemoConfig, progress: Progress) -> None:
    from clara.models.fuse import fuse_adapter
    from clara.refs import resolve

    if (ws.models_dir / "tiny").is_dir():
        return
    data = _pretraining_text(ws)
    run = _train(ws, "demo-pretrain", {
        "model": "tiny-init", "data": str(data), "mode": "cpt", "fine_tune_type": "full",
        "iters": cfg.pretrain_iters, "batch_size": cfg.batch_size, "max_seq_length": 192,
        "learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_steps": 20,
        "val_every": 100, "save_every": 100}, progress)
    progress("    fusing the pretrained weights into model tiny")
    fuse_adapter(str(ws.models_dir / "tiny-init"), resolve(ws, run.id).path,
                 ws.models_dir / "tiny")


def _lora_sft(ws: Workspace, cfg: DemoConfig, progress: Progress) -> None:
    _train(ws, "demo-handbook-sft", {
        "model": "tiny", "data": "handbook-sft", "mode": "sft", "fine_tune_type": "lora",
        "iters": cfg.sft_iters, "batch_size": cfg.batch_size, "max_seq_length": 192,
        "learning_rate": 1e-3, "lora_rank": 16, "lora_scale": 2.0, "warmup_steps": 10,
        "val_every": 25, "save_every": 50, "early_stopping_patience": 4}, progress)


def _clara_pipeline(ws: Workspace, cfg: DemoConfig, progress: Progress) -> None:
    """The CLaRa pipeline on the synthetic benchmark, started in the background: the app opens
    while it trains, and shows it live in Runs."""
    from clara import presets
    from clara.method.launch import pipeline
    from clara.method.pipeline import list_pipelines, start_driver

    if not cfg.clara or list_pipelines(ws):
        return
    per_stage = {s: {"iters": n} for s, n in zip(("stage1", "stage2", "stage3"), cfg.clara_iters)}
    per_stage["stage3"]["top_k"] = 2
    pipe = pipeline(ws, {**presets.load("clara-cpu-tiny"), "model": "tiny",
                         "batch_size": cfg.batch_size // 2, "lora_rank": 32, "val_every": 50},
                    per_stage, prefix="synth", name="demo-clara")
    start_driver(pipe)
    progress(f"    started in the background: pipeline {pipe.id} (follow it in Runs, or "
             f"clara pipelines show {pipe.id})")


def steps(cfg: DemoConfig) -> list[tuple[str, Callable[[Workspace, DemoConfig, Progress], None]]]:
    out = [
        ("import the sample handbook (PDF)", _import_handbook),
        ("build datasets from it (cpt, sft, CLaRa stages 1-3)", _handbook_datasets),
        ("build the synthetic knowledge benchmark", _synthetic_benchmark),
        ("build a tiny Llama from scratch (tokenizer + random weights)", _tiny_model),
        ("pretrain it on the handbook and the synthetic documents", _pretrain),
        ("fine-tune it with LoRA on the handbook questions", _lora_sft),
    ]
    if cfg.clara:
        out.append(("train the CLaRa pipeline (stages 1-3) on the synthetic benchmark",
                    _clara_pipeline))
        out.append(("generate 4x4 Sudoku and train a small HRM on it",
                    lambda ws, cfg, progress: __import__("clara.hrm.demo").hrm.demo.build(
                        ws, progress)))
    return out


# -- entry points -------------------------------------------------------------------------------
def demo_is_built(ws: Workspace) -> bool:
    return ws.exists and (ws.path / DONE_MARK).is_file()


def build_demo(root: str | Path, progress: Progress = print, rebuild: bool = False,
               cfg: DemoConfig | None = None) -> Workspace:
    """Create (or finish) the demo workspace under `root`."""
    cfg = cfg or DemoConfig()
    ws = Workspace(Path(root), DEMO_NAME)
    if rebuild and ws.path.exists():
        shutil.rmtree(ws.path)
    if demo_is_built(ws):
        return ws
    if not ws.exists:
        progress(f"building the demo workspace at {ws.path} (first run only; a few minutes)")
        ws.create(description="The demo: a sample handbook, datasets, a tiny model trained "
                              "from scratch, a LoRA run and a CLaRa pipeline.")
    todo = steps(cfg)
    tic = time.monotonic()
    for i, (title, step) in enumerate(todo, 1):
        progress(f"[{i}/{len(todo)}] {title}")
        step(ws, cfg, progress)
    io.write_text(ws.path / DONE_MARK, f"built in {time.monotonic() - tic:.0f} s\n")
    progress(f"demo workspace ready ({time.monotonic() - tic:.0f} s)")
    return ws
