"""The demo workspace: the embedded default, built from the material in `data/` on first run.

What it holds when done:
    sources/    the sample handbook (data/sample/*.pdf), imported with page tracking
    models/     reader: the tiny Llama (data/models/reader, 1.9 MB; it reads the synthetic
                world it was trained on, not the handbook's prose), and reader-handbook: the
                reader with the SFT run fused in (the base of the CLaRa pipeline)
    datasets/   handbook-qa (pairs generated from the handbook by the rule-based generator,
                plus the hand-written data/sample_qa.jsonl as golden rows), handbook-cpt,
                handbook-sft and handbook-stage1..3 built from it (stage 2 from the golden
                pairs alone)
    runs/       demo-handbook-sft (fine-tuning on the handbook questions) and the CLaRa
                pipeline demo-clara (stages 1-3 on the handbook chunks, on reader-handbook)
    evals/      demo-trained and demo-paraphrased: the base closed-book against the SFT run and
                CLaRa, on the questions trained on and on data/eval_questions.jsonl
    report.md   the figures of those evaluations

Each step is skipped when its output exists, so an interrupted build resumes where it stopped
(a training run resumes from its last checkpoint). Training steps run as real runs (worker
processes), exactly as `clara train` starts them. The build reports its progress to
`.demo-build.json` in the workspace (step, title, detail, ETA, the parts ready), which the app
reads to show the build while it opens at once; `clara demo` builds in the foreground.

Measured (`clara eval`, keyword match, a default build; `/usr/bin/time -f %U+%S python -m
clara.demo ROOT`, 2 cores shared with other jobs):

    configuration                     issue 15 as filed   session 8          session 9         session 12
                                      trained paraphr.    trained paraphr.   trained paraphr.  trained paraphr.
    base, closed-book                   0.0     0.0         0.0     0.0        0.0     0.0       0.0     0.0
    SFT run, closed-book               87.9     4.8        99.1    38.1       99.1    38.1      99.4    28.6
    SFT run, its memory (top pair)       -       -           -       -          -       -       96.5    71.4
    CLaRa stage 2 (BM25's 2 chunks)     0.0     0.0        62.4    14.3         -     26.2        -     28.6
    CLaRa stage 3 (its own 2 chunks)    0.0     0.0        46.2    23.8       50.0    19.0      33.8*   21.4
    stage-3 recall of the gold chunk    8.6 % (chance 2.7) 17.7 %             37.2 %            30.0 %*
    build, CPU-seconds                  199+11 (demo7)     304+103 (load ~4)  291+83 (load ~8)  276 (idle)
    build, wall on 2 cores                     -                  -                  -          222.5 s (idle)

    * on the first 40 trained questions (clara_eval_limit)

Session 8: 113 golden pairs covering every paraphrased fact in other words, SFT 400 steps with
shuffled content-word wordings, CLaRa on reader-handbook with stage 2 training the generator
only, stage 3 40 steps at 1e-3. Session 9: CLaRa's chunks compressed whole (doc_max_tokens 104:
at 96 the title chunk was cut and every stage warned of it), CLaRa stage 2 evaluated on the
paraphrased set only (stage 3 on both). The paraphrased target (50 %) is not met: 38.1 % at seed
0, 19.0 % at seed 1 with the same recipe; the variants measured are in data/README.md. Session
10 measured a prose-reading base pretrained on a GPU (bench/prose_reader_gpu.sh; as the base it
fell to 14.6 % trained, 2.4 % paraphrased) and keyword-only answer rows (paraphrased 31-36 %,
trained 78-81 %): neither is adopted (data/README.md). Session 11 measured, on batch 8 x 800:
each handbook fact restated by rules as extra rows (19.0 / 26.2 at seeds 0 / 1, against 35.7 /
38.1), peak lr 2e-3 / 4.5e-3 / 6e-3, weight decay 0.1, and averaging the last checkpoints'
weights (at best 47.6 / 31.0), batch 4 x 1600 (31.0 / 45.2 / 47.6 at seeds 0 / 1 / 2): none
reaches 50 % at two seeds. The lead (data/README.md, commit 423cd23's `memory_rows`): rows that
answer from the BM25 top-2 golden pairs in the prompt, 69.0 / 69.0 / 73.8 % at seeds 0 / 1 / 2
when the paraphrased questions get those pairs too. `base`, `sft_seed`, `sft_save_every`, `sft_keep`
and `sft_weight_decay` run such checks. Session 12 adopted it as a product feature
(clara.chat.memory: `clara data build sft --memory-k`, `clara chat --memory`, `clara eval
--memory -c memory=RUN`): handbook-sft gets one row per golden pair answering from its top pair
of handbook-qa (`memory_k` 1: two pairs made rows of 178 tokens that the reader copied from
badly), the SFT run is 8 x 800 (16 x 400 missed 50 % at seed 2: 42.9; 8 x 600 passed at seeds
0 / 1 / 2 with 52.4 / 61.9 / 64.3, by one question at the default seed), and the evaluations ask
it closed-book and with its memory: 71.4 / 61.9 / 57.1 % of the paraphrased questions at SFT
seeds 0 / 1 / 2 (closed-book 28.6 / 38.1 / 40.5). CLaRa stage 3 is evaluated on the first 40
trained questions. The build runs its steps side by side once what they need is done (a
training beside an evaluation, two evaluations together; DemoConfig.parallel), each in a process
of its own on one BLAS thread. `python bench/demo_build.py` on two idle cores: 222.5 s (276
CPU-s; SFT 106 s, CLaRa 105 s, CLaRa's evaluations 10 s after it); with 8 x 600 182.3 s, and
one step at a time 200.2 s (the same figures in every build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from clara import io
from clara.errors import UserError
from clara.workspace import Workspace, now_iso

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_PDF = DATA_DIR / "sample" / "karsholm_observatory_handbook.pdf"
SAMPLE_QA = DATA_DIR / "sample_qa.jsonl"
EVAL_QA = DATA_DIR / "eval_questions.jsonl"
READER = DATA_DIR / "models" / "reader"
DEMO_NAME = "demo"
DONE_MARK = ".demo-complete"
PROGRESS_FILE = ".demo-build.json"
LOG_FILE = ".demo-build.log"
SFT_RUN = "demo-handbook-sft"
PIPELINE = "demo-clara"
CLARA_BASE = "reader-handbook"

Progress = Callable[[str], None]


@dataclass
class DemoConfig:
    """Sizes of the demo: 3 min 43 s on two idle CPU cores (bench/demo_build.py; the issue's
    limit is 5 minutes)."""

    base: str = field(default="", metadata={
        "help": "Folder of the base model every run trains ('': data/models/reader)."})
    qa_per_chunk: int = field(default=8, metadata={
        "help": "Most rule-generated QA pairs per handbook chunk."})
    qa_chunk_tokens: int = field(default=64, metadata={"help": "Words per QA generation chunk."})
    sft_type: str = field(default="full", metadata={
        "help": "lora or full: the reader is tiny (0.9 M), so every weight trains fast, and "
                "LoRA on it learns the handbook far more slowly."})
    sft_iters: int = field(default=800, metadata={"help": "Steps of the SFT run."})
    sft_lr: float = field(default=3e-3, metadata={"help": "Peak learning rate of the SFT run."})
    sft_batch_size: int = field(default=8, metadata={"help": "Batch size of the SFT run."})
    sft_seed: int = field(default=0, metadata={"help": "Seed of the SFT run (data order)."})
    sft_save_every: int = field(default=0, metadata={
        "help": "SFT: steps between checkpoints (0: a third of the run)."})
    sft_keep: int = field(default=2, metadata={"help": "SFT: step checkpoints kept."})
    sft_weight_decay: float = field(default=0.0, metadata={"help": "SFT: AdamW weight decay."})
    batch_size: int = field(default=8, metadata={"help": "Batch size of the CLaRa runs."})
    doc_tokens: int = field(default=32, metadata={
        "help": "Words per CLaRa document chunk (about 2 reader tokens each)."})
    doc_max_tokens: int = field(default=104, metadata={
        "help": "CLaRa: tokens compressed per chunk. The handbook's 32-word chunks are 62 reader "
                "tokens at the median and 104 at most (the title page's): every chunk fits "
                "whole, so the build warns of no cut document."})
    compression_rate: int = field(default=4, metadata={"help": "CLaRa: tokens per memory vector."})
    clara_iters: tuple[int, int, int] = field(default=(30, 120, 40), metadata={
        "help": "Steps of CLaRa stages 1, 2, 3."})
    clara_base: str = field(default="sft", metadata={
        "help": "Base of the CLaRa pipeline: sft (reader-handbook, the reader with the SFT run "
                "fused in) or reader (the bare reader: in the build's steps its stage-2 LoRA "
                "generator learns only the answers' prior, e.g. '20 m' to every question)."})
    clara_lr: float = field(default=3e-3, metadata={
        "help": "CLaRa stage 2: peak learning rate (stage 1 runs at 1e-3)."})
    clara_stage3_lr: float = field(default=1e-3, metadata={
        "help": "CLaRa stage 3 (the query reasoner, with the retrieval loss on the gold chunk): "
                "peak learning rate. 60 steps at 1e-3 retrieved the gold chunk for 13 % of the "
                "trained questions (chance 2.7 %)."})
    candidates: int = field(default=10, metadata={"help": "Stage 3: candidates per question."})
    clara_stage3_negatives: str = field(default="rows", metadata={
        "help": "CLaRa stage 3: the retrieval loss's negatives (rows | batch | pool). The "
                "method's default is batch since session 12; on the demo, rows: batch moved "
                "stage 3 to 50.0 / 16.7 % (trained first 40 / paraphrased) and its recall to "
                "47.5 %, against rows' 47.5 / 19.0 and 40.0, the figures its tests hold."})
    clara: bool = field(default=True, metadata={"help": "Train the CLaRa pipeline."})
    evaluate: bool = field(default=True, metadata={"help": "Evaluate and write report.md."})
    hrm: bool = field(default=True, metadata={
        "help": "Start a small HRM run on 4x4 Sudoku (it trains on in the background)."})
    eval_max_tokens: int = field(default=48, metadata={"help": "Most tokens per eval answer."})
    clara_eval_limit: int | None = field(default=40, metadata={
        "help": "CLaRa stage 3 on the trained questions: the first N only (None: all 113; "
                "the evaluation runs after CLaRa, at the end of the build)."})
    parallel: int = field(default=2, metadata={
        "help": "Steps run side by side (a training beside an evaluation, two evaluations): "
                "each is a process on one core, so 2 fits two cores; 1 runs them in turn."})
    eval_limit: int | None = field(default=None, metadata={
        "help": "Evaluate only the first N questions of each set (tests)."})
    top_k: int = field(default=2, metadata={"help": "Chunks retrieved for rag and CLaRa."})
    rag_k: int = field(default=2, metadata={"help": "Chunks in the context of SFT rows."})
    golden_repeat: int = field(default=1, metadata={
        "help": "Copies of each golden pair's closed-book row in handbook-sft (they are short: "
                "repeating them is the cheap way to make the run remember them)."})
    question_variants: int = field(default=1, metadata={
        "help": "Extra closed-book rows per short question, its wording thinned (words dropped "
                "at random, names and numbers kept): a tiny model then keys on the content "
                "words, which paraphrases share."})
    question_shuffles: int = field(default=3, metadata={
        "help": "Extra closed-book rows per short question made of its content words only, "
                "in random order (names kept whole): the run learns that the content words, "
                "not the question's frame, pick the answer."})
    memory_k: int = field(default=1, metadata={
        "help": "Memory rows in handbook-sft: one per golden pair, its prompt the top k pairs "
                "of handbook-qa BM25 ranks for its question (clara.chat.memory), and the "
                "evaluations also answer from that memory (memory=demo-handbook-sft); 0: off."})
    memory_repeat: int = field(default=1, metadata={"help": "Copies of each memory row."})
    rag_repeat: int = field(default=0, metadata={
        "help": "Copies of each pair's row with its retrieved chunks in handbook-sft (0: none; "
                "the reader cannot read the handbook's prose, and these long rows cost most "
                "of the run while teaching it little, see report.md)."})

    @classmethod
    def from_json(cls, text: str) -> "DemoConfig":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        if "clara_iters" in raw:
            raw["clara_iters"] = tuple(raw["clara_iters"])
        return cls(**{k: v for k, v in raw.items() if k in known})


# -- steps ----------------------------------------------------------------------------------------
def _import_handbook(ws: Workspace, cfg: DemoConfig, report: "Reporter") -> None:
    from clara.data.sources import import_files, list_sources

    if not list_sources(ws):
        import_files(ws, [SAMPLE_PDF])


def _reader_model(ws: Workspace, cfg: DemoConfig, report: "Reporter") -> None:
    """The base every run trains: the tiny reader, copied so the workspace stands alone."""
    out = ws.models_dir / "reader"
    if not (out / "config.json").is_file():
        tmp = ws.models_dir / ".reader.copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(Path(cfg.base) if cfg.base else READER, tmp)
        tmp.rename(out)


def _missing(ws: Workspace, name: str) -> bool:
    return not (ws.datasets_dir / name).is_dir()


def _handbook_datasets(ws: Workspace, cfg: DemoConfig, report: "Reporter") -> None:
    from clara.data.builders import CptConfig, StageConfig, build_cpt, build_stage
    from clara.data.qa import QAGenConfig, build_qa

    if _missing(ws, "handbook-qa"):
        _path, rep = build_qa(ws, "handbook-qa", QAGenConfig(
            per_chunk=cfg.qa_per_chunk, chunk_tokens=cfg.qa_chunk_tokens, golden=str(SAMPLE_QA)))
        report.detail(rep.line())
    if _missing(ws, "handbook-cpt"):
        build_cpt(ws, "handbook-cpt", CptConfig(chunk_tokens=128, overlap=16))
    if _missing(ws, "handbook-sft"):
        _sft_dataset(ws, cfg)
    # stage 2 (the generator learns to answer from the compressed chunks) on the golden pairs
    # alone: about 8 passes over them in the build's steps
    for stage, qa, extra in ((1, "handbook-qa", {}), (2, str(SAMPLE_QA), {"k": cfg.top_k}),
                             (3, "handbook-qa", {"candidates": cfg.candidates})):
        if _missing(ws, f"handbook-stage{stage}"):
            build_stage(ws, f"handbook-stage{stage}", StageConfig(
                stage=stage, qa=qa, doc_tokens=cfg.doc_tokens, valid_share=0.05, **extra))


def _sft_dataset(ws: Workspace, cfg: DemoConfig, name: str = "handbook-sft") -> None:
    """handbook-sft: every pair of handbook-qa closed-book (the question alone, answer-only
    loss), the golden pairs `golden_repeat` times, plus thinned wordings of their questions
    and shuffled bags of their content words (what carries to paraphrased questions);
    optionally each pair again with the handbook chunks BM25 finds for it, in the prompt `rag`
    configurations use (the gold chunk swapped in when retrieval misses it).
    The reader (data/models/reader) learned to read the synthetic world's short documents, not
    prose like the handbook's (its 1024-token BPE splits the handbook into near-characters), so
    the run remembers the pairs rather than learning to read them. Valid: a seeded sample of
    the closed-book rows (the demo measures what the run remembers; the paraphrased questions
    are evaluated apart)."""
    import random

    from clara.chat.engine import rag_prompt
    from clara.data.builders import chat_row, read_qa, resolve_qa
    from clara.data.datasets import write_dataset
    from clara.evaluation.rag import ChunkIndex

    index = ChunkIndex.from_workspace(ws, cfg.doc_tokens, 0)
    items = read_qa(resolve_qa(ws, "handbook-qa"))
    golden = {(q["question"], q["answer"]) for q in io.read_jsonl(SAMPLE_QA)}
    rng = random.Random(0)
    closed, train = [], []
    for item in items:
        row = chat_row(item.question, item.answer, origin="closed")
        closed.append(row)
        train += [row] * (cfg.golden_repeat if (item.question, item.answer) in golden else 1)
        if (item.question, item.answer) in golden:  # the generated pairs once each: the
            # demo measures the golden ones, and their wordings would cost a third of the run
            train += [chat_row(q, item.answer, origin="variant")
                      for q in thinned(item.question, cfg.question_variants, rng)]
            train += [chat_row(q, item.answer, origin="shuffled")
                      for q in shuffled(item.question, cfg.question_shuffles, rng)]
        if cfg.rag_repeat:
            top = index.search(item.question, cfg.rag_k)
            gold = index.gold(item.question, item.answer, item.keywords, item.source)
            if gold and gold[0] not in top:
                top = top[:-1] + [gold[0]]
            train += [chat_row(rag_prompt(item.question, [index.texts[i] for i in top]),
                               item.answer, origin="rag")] * cfg.rag_repeat
    if cfg.memory_k:
        from clara.chat.memory import memory_rows

        train += memory_rows([i for i in items if (i.question, i.answer) in golden],
                             cfg.memory_k, items) * cfg.memory_repeat
    rng.shuffle(train)
    valid = rng.sample(closed, min(16, len(closed)))
    write_dataset(ws, name, "sft", {"train": train, "valid": valid}, {
        "format": "chat", "sources": ["handbook-qa"], "seed": 0,
        "parameters": {"golden_repeat": cfg.golden_repeat,
                       "question_variants": cfg.question_variants,
                       "question_shuffles": cfg.question_shuffles,
                       "rag_repeat": cfg.rag_repeat, "chunk_tokens": cfg.doc_tokens,
                       "rag_k": cfg.rag_k, "memory_k": cfg.memory_k,
                       "memory_repeat": cfg.memory_repeat},
        "note": "each pair closed-book (golden pairs repeated, short questions also thinned); "
                "with rag_repeat, also with its BM25 chunks as context; valid is a sample of "
                "the closed-book training rows"})


def thinned(question: str, n: int, rng) -> list[str]:
    """n distinct wordings of `question` with words dropped at random: most function words,
    a few content words; capitalised words (after the first) and numbers always stay."""
    from clara.data.builders import terms

    words = question.rstrip("?").split()
    content = [bool(terms(w)) for w in words]
    out: list[str] = []
    for _ in range(4 * n):
        if len(out) == n:
            break
        kept = [w for i, w in enumerate(words)
                if (i and w[:1].isupper()) or any(c.isdigit() for c in w)
                or rng.random() < (0.85 if content[i] else 0.35)]
        q = " ".join(kept) + "?"
        n_content = sum(bool(terms(w)) for w in kept)
        if n_content >= max(2, sum(content) - 1) and q != question and q not in out:
            out.append(q)
    return out


def _content_units(text: str) -> list[str]:
    """`text`'s content words, runs of capitalised words (names) joined into one unit."""
    from clara.data.builders import terms

    units: list[str] = []
    for i, w in enumerate(text.rstrip("?").split()):
        if i and w[:1].isupper() and units and units[-1][:1].isupper():
            units[-1] += " " + w
        else:
            units.append(w)
    return [u for u in units if terms(u) or any(c.isdigit() for c in u)]


def shuffled(question: str, n: int, rng) -> list[str]:
    """n distinct bags of `question`'s content words in random order (a few dropped; runs of
    capitalised words, names, kept whole and always)."""
    content = _content_units(question)
    out: list[str] = []
    for _ in range(4 * n):
        if len(out) == n or len(content) < 2:
            break
        kept = [u for u in content if u[:1].isupper() or rng.random() < 0.85]
        rng.shuffle(kept)
        q = " ".join(kept) + "?"
        if len(kept) >= max(2, len(content) - 1) and q not in out:
            out.append(q)
    return out


def _drop_partial(folder: Path, marker: str) -> None:
    """A demo run folder that a killed build left without its first file is started again."""
    if folder.is_dir() and not (folder / marker).is_file():
        shutil.rmtree(folder)


def _train(ws: Workspace, run_name: str, overrides: dict, report: "Reporter"):
    """Create and run a LoRA-engine run in its worker process, reporting progress; reuse a
    finished run of that name, resume an unfinished one."""
    from clara.runs import Run, start_worker
    from clara.train.launch import lora_run

    path = ws.runs_dir / run_name
    _drop_partial(path, "run.toml")
    run = Run(path) if (path / "run.toml").is_file() else lora_run(ws, overrides, name=run_name)
    if run.status().get("status") == "completed":
        return run
    proc = start_worker(run)
    follow(run, proc, report)
    status = run.status()
    if status.get("status") != "completed":
        raise UserError(f"demo run {run.id} ended {status.get('status')}: "
                         f"{status.get('message') or 'see ' + str(run.path / 'log.txt')}")
    return run


def follow(run, proc, report: "Reporter", every: float = 5.0, share: tuple = (0.0, 1.0)) -> None:
    """Report a run's progress every few seconds until its process ends; `share` is the part of
    the current step this run stands for (a pipeline's stages share one step)."""
    last, row = 0.0, {}
    for update in run.follow(proc=proc, events=False):
        row = update.last_train or row
        if row and not update.done and time.monotonic() - last >= every:
            last = time.monotonic()
            total = update.status.get("total_steps")
            if total:
                done = min(1.0, row.get("step", 0) / total)
                report.fraction(share[0] + done * (share[1] - share[0]))
            report.detail(f"{run.id}: step {row.get('step')}/{total or '?'}, "
                          f"loss {row.get('train_loss', float('nan')):.3f}")


def _sft(ws: Workspace, cfg: DemoConfig, report: "Reporter") -> None:
    _train(ws, SFT_RUN, {
        "model": "reader", "data": "handbook-sft", "mode": "sft",
        "fine_tune_type": cfg.sft_type, "iters": cfg.sft_iters,
        "batch_size": cfg.sft_batch_size, "seed": cfg.sft_seed,
        "max_seq_length": 320, "learning_rate": cfg.sft_lr, "min_learning_rate": cfg.sft_lr / 10,
        "lora_rank": 32, "lora_scale": 4.0, "warmup_steps": 10,
        "val_every": max(1, cfg.sft_iters // 3),
        "save_every": cfg.sft_save_every or max(1, cfg.sft_iters // 3),
        "keep_checkpoints": cfg.sft_keep, "weight_decay": cfg.sft_weight_decay},
        report)


def _clara_pipeline(ws: Workspace, cfg: DemoConfig, report: "Reporter") -> None:
    """The CLaRa pipeline (stages 1-3) on the handbook chunks, driven here, stage by stage."""
    from clara.method.launch import pipeline
    from clara.method.pipeline import drive, find_pipeline

    base = _clara_base(ws, cfg)
    _drop_partial(ws.runs_dir / PIPELINE, "pipeline.toml")
    for stage in (1, 2, 3):
        _drop_partial(ws.runs_dir / clara_run(ws, stage), "run.toml")
    try:
        pipe = find_pipeline(ws, PIPELINE)
    except UserError:
        pipe = None
    if pipe is None:
        per_stage = {s: {"iters": n} for s, n in zip(("stage1", "stage2", "stage3"),
                                                       cfg.clara_iters)}
        per_stage["stage2"].update(learning_rate=cfg.clara_lr)
        per_stage["stage3"].update(top_k=cfg.top_k, learning_rate=cfg.clara_stage3_lr)
        pipe = pipeline(ws, {"model": base, "batch_size": cfg.batch_size,
                             "doc_max_tokens": cfg.doc_max_tokens,
                             "compression_rate": cfg.compression_rate, "max_len": 256,
                             "lora_rank": 32, "lora_dropout": 0.0, "mse_weight": 0.0,
                             "learning_rate": 1e-3, "warmup_steps": 10, "val_every": 0,
                             # stage 2 trains the generator only: the compressor stage 1 made
                             # keeps what a retriever reads in its vectors (stage 3 copies it;
                             # bench/clara_stage3_study.py), and the steps are cheaper
                             "stage2_train": "generator",
                             # auto would centre here (doc-doc cosine 0.9996): measured worse on
                             # the demo (stage-3 validation recall@1 47.0 -> 17.7; study round 7)
                             "retrieval_center": "off",
                             "stage3_negatives": cfg.clara_stage3_negatives,
                             "val_batches": 2, "save_every": 50, "seed": 0},
                        per_stage, prefix="handbook", name=PIPELINE)
    if pipe.status().get("status") == "completed":
        return
    total = sum(cfg.clara_iters)
    starts = {"stage1": 0, "stage2": cfg.clara_iters[0], "stage3": sum(cfg.clara_iters[:2])}

    def stage_follow(stage, run, proc):
        i = ("stage1", "stage2", "stage3").index(stage)
        follow(run, proc, report,
               share=(starts[stage] / total, (starts[stage] + cfg.clara_iters[i]) / total))
        return run.status()

    status = drive(pipe, follow=stage_follow)
    if status.get("status") != "completed":
        raise UserError(f"demo pipeline {pipe.id} ended {status.get('status')}: "
                         f"{status.get('message') or ''}")


def _clara_base(ws: Workspace, cfg: DemoConfig) -> str:
    """The CLaRa pipeline's base: the reader with the SFT run fused in (made once, built aside
    and renamed), or the bare reader. On the bare reader, stage 2's fresh LoRA generator learned
    only the answers' prior in the build's steps (loss 5.8 -> 3.0 in 300 steps, "20 m" to every
    question); on the fused base it starts from a model that knows the handbook's answers and
    learns to give them from the compressed chunks (loss 2.0 -> 0.07 in 120 steps)."""
    if cfg.clara_base != "sft":
        return "reader"
    if not (ws.models_dir / CLARA_BASE).is_dir():
        from clara.models.fuse import fuse_adapter
        from clara.refs import LORA, resolve

        found = resolve(ws, SFT_RUN, want=LORA)
        fuse_adapter(str(ws.models_dir / "reader"), found.path, ws.models_dir / CLARA_BASE)
    return CLARA_BASE


def clara_run(ws: Workspace | None, stage: int) -> str:
    return f"{PIPELINE}-stage{stage}"


EVALS = {"demo-trained": str(SAMPLE_QA), "demo-paraphrased": str(EVAL_QA)}
CLARA_SUFFIX = "-clara"  # demo-trained-clara: the same questions, CLaRa on its own base
MEMORY_SUFFIX = "-memory"  # demo-trained-memory: the SFT run answering from its memory


@dataclass
class EvalJob:
    """One of the demo's evaluations: `clara eval` on one question set, one base."""
    name: str
    data: str
    base: str  # "reader", or "clara": the CLaRa pipeline's base (made by _clara_base)
    configs: list[str]
    after: tuple[str, ...]  # the steps whose runs it evaluates
    seconds: float  # expected duration on an idle core (the ETA)
    top_k: int | None = None  # documents or memory pairs per question (None: cfg.top_k)
    limit: int | None = None  # the first N questions only (None: cfg.eval_limit)
    memory: str | None = None  # the QA dataset `memory` configurations answer from


def eval_jobs(cfg: DemoConfig) -> list[EvalJob]:
    """Before/after: the base closed-book, the SFT run closed-book and CLaRa (answers from the
    compressed chunks; stage-3 retrieval) on the questions trained on and on paraphrases. One
    evaluation per base: the reader's configurations, and CLaRa's on its own base (stage 3
    trains the query reasoner only, so its answers from BM25's chunks are stage 2's); raw-text
    rag (the base cannot read the chunks; BM25's recall) on the paraphrased set only."""
    jobs = [EvalJob(name, data, "reader",
                    ["closed", f"closed={SFT_RUN}"] + ["rag"] * (data == str(EVAL_QA)),
                    ("sft",), 25 if data == str(SAMPLE_QA) else 8)
            for name, data in EVALS.items()]
    # the SFT run with the top memory_k pairs of handbook-qa in its prompt, as it trained
    if cfg.memory_k:
        jobs += [EvalJob(name + MEMORY_SUFFIX, data, "reader", [f"memory={SFT_RUN}"], ("sft",),
                         15 if data == str(SAMPLE_QA) else 4, top_k=cfg.memory_k,
                         memory="handbook-qa")
                 for name, data in EVALS.items()]
    # CLaRa: stage 3 (its own retrieval) on both sets; stage 2 (BM25's chunks) on the
    # paraphrased one only (on the 113 trained questions it cost a fifth of the build's eval)
    if cfg.clara:
        jobs += [EvalJob(name + CLARA_SUFFIX, data, "clara",
                         [f"clara={clara_run(None, 2)}"] * (data == str(EVAL_QA))
                         + [f"clara-retrieval={clara_run(None, 3)}"],
                         ("clara",), 24 if data == str(SAMPLE_QA) else 36,
                         limit=cfg.clara_eval_limit if data == str(SAMPLE_QA) else None)
                 for name, data in EVALS.items()]
    return jobs


def _evaluate(ws: Workspace, cfg: DemoConfig, report: "Reporter", job: EvalJob) -> None:
    """`clara eval` in its own process, as a user runs it: evaluations run side by side with a
    training or with each other (one process each, so neither waits on the other's GIL), and
    a killed build leaves no half-written evaluation that counts as done."""
    import re

    from clara.platform import env_with_blas

    folder = ws.path / "evals" / job.name
    if (folder / "summary.json").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)  # a build killed while it was being written
    model = _clara_base(ws, cfg) if job.base == "clara" else job.base
    args = [sys.executable, "-m", "clara", "--root", str(ws.root), "-w", ws.name, "eval",
            "-d", job.data, "-m", model, "--name", job.name,
            "--top-k", str(job.top_k or cfg.top_k),
            "--max-tokens", str(cfg.eval_max_tokens), "--chunk-tokens", str(cfg.doc_tokens),
            "--chunk-overlap", "0", "--format", "json"]
    limit = min(x for x in (cfg.eval_limit, job.limit, 10 ** 9) if x is not None)
    args += ["--limit", str(limit)] * (limit < 10 ** 9)
    args += ["--memory", job.memory] * bool(job.memory)
    for c in job.configs:
        args += ["-c", c]
    report.detail(f"evaluating {len(job.configs)} configuration"
                  f"{'s' * (len(job.configs) > 1)} on {Path(job.data).name}")
    proc = subprocess.Popen(args, env=env_with_blas(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    seen: list[str] = []  # the configurations in the order they ran
    tail: list[str] = []
    for line in proc.stderr:  # `label: done/total` a question when not on a terminal
        tail = (tail + [line.rstrip()])[-5:]
        m = re.fullmatch(r"(.+): (\d+)/(\d+)", line.strip())
        if m:
            seen += [m[1]] * (m[1] not in seen)
            report.fraction((seen.index(m[1]) + int(m[2]) / max(int(m[3]), 1))
                            / len(job.configs))
    if proc.wait() != 0:
        raise UserError(f"demo evaluation {job.name} failed: "
                        f"{next((t for t in reversed(tail) if t), 'exit ' + str(proc.returncode))}")
    io.write_text(ws.path / "report.md", report_markdown(ws))


def figures(ws: Workspace) -> dict[str, dict[str, dict]]:
    """{eval name: {config: summary row}} of the demo's evaluations (those written so far)."""
    out: dict[str, dict[str, dict]] = {}
    for name in EVALS:
        for folder in (name, name + MEMORY_SUFFIX, name + CLARA_SUFFIX):
            path = ws.path / "evals" / folder / "summary.json"
            if path.is_file():
                out.setdefault(name, {}).update(
                    {r["config"]: r for r in io.read_json(path)["summary"]})
    return out


def report_markdown(ws: Workspace) -> str:
    figs = figures(ws)
    lines = ["# The demo's before and after", "",
             "Measured by `clara eval` when the demo was built (greedy answers; keyword match: "
             "the share of an answer's keywords it contains; recall@k: the gold chunk among the "
             "k chunks retrieved).", "",
             "| configuration | trained questions: keyword % | EM % | paraphrased: keyword % "
             "| EM % | recall@k % |", "|---|---|---|---|---|---|"]
    configs = list(dict.fromkeys(c for f in figs.values() for c in f))

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    for c in configs:
        t = figs.get("demo-trained", {}).get(c, {})
        p = figs.get("demo-paraphrased", {}).get(c, {})
        rec = t.get("recall") if t.get("recall") is not None else p.get("recall")
        lines.append(f"| {c} | {pct(t.get('keyword'))} | {pct(t.get('em'))} | "
                     f"{pct(p.get('keyword'))} | {pct(p.get('em'))} | {pct(rec)} |")
    trained_clara = next((r.get("n") for c, r in figs.get("demo-trained", {}).items()
                          if c.startswith("clara")), None)
    lines += ["", "Trained questions: data/sample_qa.jsonl (in the SFT and CLaRa training data"
              + (f"; CLaRa's row: the first {trained_clara}" if trained_clara else "") + "). "
              "Paraphrased: data/eval_questions.jsonl (the same facts, asked in other words). "
              "`memory=demo-handbook-sft`: the same SFT run given its memory, the pair of "
              "handbook-qa (the generated and golden question/answer pairs it trained on, "
              "never the evaluation questions) that BM25 ranks first for the question, in its "
              "prompt; it trained on rows answering that way (`clara chat -a demo-handbook-sft "
              "--memory handbook-qa --top-k 1`). "
              "CLaRa's rows use its own base, the reader with the SFT run fused in "
              "(reader-handbook): its answers reflect what that base knows. `clara eval show "
              "demo-trained --answers` lists every answer (demo-trained-clara: CLaRa's).", ""]
    return "\n".join(lines)


@dataclass
class Step:
    id: str
    title: str
    fn: Callable[[Workspace, DemoConfig, "Reporter"], None]
    seconds: float = field(metadata={"help": "Expected duration on an idle core (the ETA)."})
    ready: str = field(default="", metadata={"help": "What the app can use once it is done."})
    after: tuple[str, ...] = field(default=(), metadata={
        "help": "Ids of the steps it needs done first; steps whose needs are met run side by "
                "side, up to DemoConfig.parallel at once."})


def steps(cfg: DemoConfig) -> list[Step]:
    """The build's steps, each after the ones it needs (a list in an order that runs)."""
    out = [
        Step("import", "import the sample handbook (PDF)", _import_handbook, 4, "sources"),
        Step("reader", "add the base model (the tiny reader)", _reader_model, 1, "model"),
        Step("datasets", "generate QA from the handbook; build SFT and CLaRa datasets",
             _handbook_datasets, 6, "datasets", after=("import",)),
        Step("sft", "fine-tune the reader on the handbook questions", _sft,
             0.0175 * cfg.sft_iters * cfg.sft_batch_size, "chat: " + SFT_RUN,
             after=("reader", "datasets")),
    ]
    if cfg.clara:
        out.append(Step("clara", "train CLaRa (stages 1-3) on the compressed handbook chunks",
                        _clara_pipeline, 0.98 * sum(cfg.clara_iters), "CLaRa: " + PIPELINE,
                        after=("sft",)))
    if cfg.evaluate:
        for job in eval_jobs(cfg):
            what = "CLaRa" if job.base == "clara" else (
                "the SFT run with its memory" if job.memory else "the base and the SFT run")
            which = "trained" if job.data == str(SAMPLE_QA) else "paraphrased"
            out.append(Step(f"eval-{job.name}", f"evaluate {what} ({which} questions)",
                            lambda ws, cfg, report, job=job: _evaluate(ws, cfg, report, job),
                            job.seconds, f"eval: {job.name}", after=job.after))
    # More demo parts go here, one call each: out.append(Step(id, title, fn(ws, cfg, report),
    # expected seconds, what the app can use once it is done, the ids of the steps it needs)).
    if cfg.hrm:  # last: its training goes on after the build and would slow the build's steps
        out.append(Step("hrm", "generate 4x4 Sudoku and start a small HRM run on it",
                        lambda ws, cfg, report: __import__("clara.hrm.demo").hrm.demo.build(
                            ws, report.detail), 2, "HRM: demo-sudoku (training)",
                        after=tuple(s.id for s in out)))
    return out


def makespan(todo: list[Step], left: list[float], slots: int) -> float:
    """Seconds until every step is done: each step, in list order, starts on the first slot
    free once the steps it needs are done (a step with nothing left takes no slot)."""
    index = {s.id: i for i, s in enumerate(todo)}
    free, end = [0.0] * max(1, slots), [0.0] * len(todo)
    for i, s in enumerate(todo):
        ready = max((end[index[d]] for d in s.after if d in index), default=0.0)
        if left[i] <= 0:
            end[i] = ready
            continue
        j = min(range(len(free)), key=free.__getitem__)
        end[i] = free[j] = max(ready, free[j]) + left[i]
    return max(end, default=0.0)


# -- progress ------------------------------------------------------------------------------------
class Reporter:
    """Writes `.demo-build.json` (what the app shows) and prints progress lines. Steps run in
    threads of their own: each reports for the step its thread runs (`bind`)."""

    def __init__(self, ws: Workspace, todo: list[Step], progress: Progress, slots: int = 1):
        self.ws, self.todo, self.print, self.slots = ws, todo, progress, slots
        self.tic = time.monotonic()
        self.lock = threading.RLock()
        self.local = threading.local()
        self.running: dict[int, list] = {}  # step index -> [start time, fraction]
        self.finished: set[int] = set()
        self.took: dict[str, float] = {}  # seconds each finished step took
        self.i, self.text = 0, ""
        self.spent = 0.0  # seconds spent on finished steps that did real work
        self.planned = 0.0  # their expected seconds
        self.ready: list[str] = []
        self.last_write = 0.0

    def bind(self, i: int) -> None:
        self.local.i = i

    def start(self, i: int) -> None:
        with self.lock:
            self.running[i] = [time.monotonic(), 0.0]
            self.i = min(self.running)
            self.print(f"[{i + 1}/{len(self.todo)}] {self.todo[i].title}")
            self.write(force=True)

    def finish(self, i: int) -> None:
        with self.lock:
            step, (tic, _) = self.todo[i], self.running.pop(i)
            self.finished.add(i)
            self.took[step.id] = round(time.monotonic() - tic, 1)
            if step.seconds >= 20:  # a second's step says nothing of the machine's speed
                self.spent += self.took[step.id]
                self.planned += step.seconds
            if step.ready:
                self.ready.append(step.ready)
            self.i = min(self.running, default=min(i + 1, len(self.todo) - 1))

    def fraction(self, f: float) -> None:
        with self.lock:
            i = getattr(self.local, "i", self.i)
            if i in self.running:
                self.running[i][1] = max(0.0, min(1.0, f))
            self.write()

    def detail(self, text: str) -> None:
        with self.lock:
            self.text = text
            self.print(f"    {text}")
            self.write()

    def eta(self) -> float:
        """The schedule's length with what is left of each step (expected seconds scaled by
        how fast the finished steps went against theirs; a running step's also by its own
        progress)."""
        speed = self.spent / self.planned if self.planned else 1.0
        now, left = time.monotonic(), []
        for i, s in enumerate(self.todo):
            if i in self.finished:
                left.append(0.0)
            elif i in self.running:
                tic, frac = self.running[i]
                elapsed = now - tic
                left.append(max(s.seconds * (1 - frac) * speed,
                                (elapsed / frac - elapsed) if frac > 0.05 else 0.0, 0.1))
            else:
                left.append(s.seconds * speed)
        return makespan(self.todo, left, self.slots)

    def write(self, force: bool = False, state: str = "building", message: str = "") -> None:
        with self.lock:
            if not force and time.monotonic() - self.last_write < 0.5:
                return
            self.last_write = time.monotonic()
            running = sorted(self.running) or [min(self.i, len(self.todo) - 1)]
            step = self.todo[running[0]]
            io.write_json(self.ws.path / PROGRESS_FILE, {
                "state": state, "pid": os.getpid(), "step": running[0] + 1,
                "steps": len(self.todo), "id": step.id,
                "title": " + ".join(self.todo[i].title for i in running),
                "fraction": round(self.running.get(running[0], [0, 0.0])[1], 3),
                "detail": self.text, "elapsed_s": round(time.monotonic() - self.tic, 1),
                "eta_s": 0 if state != "building" else round(self.eta()),
                "ready": list(self.ready), "took_s": dict(self.took), "message": message,
                "updated": now_iso()})


def read_progress(ws: Workspace) -> dict | None:
    """The build's progress as last written, with `state` "interrupted" when the process that
    wrote it is gone; None when the workspace holds no build record."""
    from clara.runs import pid_alive

    path = ws.path / PROGRESS_FILE
    if not path.is_file():
        return None
    try:
        doc = io.read_json(path)
    except (UserError, ValueError, OSError):
        return None
    if doc.get("state") == "building" and not pid_alive(doc.get("pid")):
        doc["state"] = "interrupted"
    return doc


def progress_line(doc: dict) -> str:
    """One line for the app: `building the demo [4/9] ETA 1:50 · fine-tune ... 40% · ready: …`"""
    state = doc.get("state")
    if state == "done":
        return f"demo ready ({doc.get('elapsed_s', 0):.0f} s): see report.md and Eval"
    if state in ("failed", "interrupted"):
        return (f"demo build {state} at step {doc.get('step')}/{doc.get('steps')}: "
                f"{doc.get('message') or 'run clara demo to resume'}")
    eta = int(doc.get("eta_s") or 0)
    ready = ", ".join(doc.get("ready") or []) or "nothing yet"
    # the ETA first: with two steps side by side the titles may run past a narrow terminal
    return (f"building the demo [{doc.get('step')}/{doc.get('steps')}] "
            f"ETA {eta // 60}:{eta % 60:02d} · {doc.get('title')} "
            f"{100 * (doc.get('fraction') or 0):.0f}% · ready: {ready}")


# -- entry points -------------------------------------------------------------------------------
def demo_is_built(ws: Workspace) -> bool:
    return ws.exists and (ws.path / DONE_MARK).is_file()


def demo_workspace(root: str | Path) -> Workspace:
    """The demo workspace, created (empty) if it does not exist yet."""
    ws = Workspace(Path(root), DEMO_NAME)
    if not ws.exists:
        ws.create(description="The demo: a sample handbook, QA generated from it, the tiny "
                              "reader fine-tuned on it, CLaRa on its compressed chunks, and "
                              "their evaluation.")
    return ws


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
    ws = demo_workspace(root)
    todo = steps(cfg)
    report = Reporter(ws, todo, progress, slots=cfg.parallel)
    # every step's process computes on one core: two run side by side on two cores, and
    # OpenBLAS's own threads beside them only spin (SFT, 100 steps: 30.6 CPU-s, 23.3 without)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        run_steps(ws, cfg, todo, report)
    except BaseException as e:
        report.write(force=True, state="failed" if not isinstance(e, KeyboardInterrupt)
                     else "interrupted", message=str(e) or type(e).__name__)
        raise
    if cfg.evaluate:  # the evaluations ran side by side: the last word on the report
        io.write_text(ws.path / "report.md", report_markdown(ws))
    took = time.monotonic() - report.tic
    io.write_text(ws.path / DONE_MARK, f"built in {took:.0f} s\n")
    report.i = len(todo) - 1
    report.write(force=True, state="done")
    progress(f"demo workspace ready ({took:.0f} s)")
    return ws


def run_steps(ws: Workspace, cfg: DemoConfig, todo: list[Step], report: Reporter) -> None:
    """Run the steps, each in a thread of its own as soon as the steps it needs are done, at
    most cfg.parallel at once. The steps' work runs in processes of their own (trainings,
    evaluations), so the threads mostly wait. A failed step lets the running ones end, starts
    no other, and is raised."""
    index = {s.id: i for i, s in enumerate(todo)}
    done: set[str] = set()
    ended: list[tuple[int, BaseException | None]] = []
    wake = threading.Condition()
    started: set[int] = set()
    failed: BaseException | None = None

    def work(i: int) -> None:
        error = None
        try:
            report.bind(i)
            todo[i].fn(ws, cfg, report)
        except BaseException as e:  # raised in the caller's thread
            error = e
        with wake:
            ended.append((i, error))
            wake.notify()

    while len(done) < len(todo):
        with wake:
            while ended:
                i, error = ended.pop(0)
                started.discard(i)
                if error is None:
                    report.finish(i)
                    done.add(todo[i].id)
                else:
                    failed = failed or error
            if failed is not None:
                if not started:
                    raise failed
            else:
                for i, s in enumerate(todo):
                    if (len(started) < max(1, cfg.parallel) and s.id not in done
                            and i not in started and all(d in done for d in s.after
                                                         if d in index)):
                        started.add(i)
                        report.start(i)
                        threading.Thread(target=work, args=(i,), daemon=True,
                                         name=f"demo-{s.id}").start()
            if not started and not ended and len(done) < len(todo):
                raise RuntimeError(f"demo steps that can never start: "
                                   f"{[s.id for s in todo if s.id not in done]}")
            if len(done) < len(todo) and not ended:
                wake.wait(timeout=1.0)


def build_running(ws: Workspace) -> bool:
    doc = read_progress(ws)
    return bool(doc and doc.get("state") == "building")


def start_background_build(root: str | Path, cfg: DemoConfig | None = None) -> int | None:
    """Build the demo in a detached process (`python -m clara.demo ROOT`), logging to
    `.demo-build.log`; returns its pid, or None when the demo is built or a build runs."""
    from clara.platform import env_with_blas

    ws = demo_workspace(root)
    if demo_is_built(ws) or build_running(ws):
        return None
    env = env_with_blas()
    env["PYTHONUNBUFFERED"] = "1"
    args = [sys.executable, "-m", "clara.demo", str(Path(root).resolve())]
    if cfg is not None:
        args += ["--config", json.dumps(asdict(cfg))]
    with open(ws.path / LOG_FILE, "ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    # the progress file names the builder at once, so a second `clara` does not start another
    cfg = cfg or DemoConfig()
    report = Reporter(ws, steps(cfg), lambda m: None, slots=cfg.parallel)
    io.write_json(ws.path / PROGRESS_FILE, {"state": "building", "pid": proc.pid, "step": 0,
                                            "steps": len(report.todo), "title": "starting",
                                            "fraction": 0, "eta_s": round(report.eta()),
                                            "ready": [], "updated": now_iso()})
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    """`python -m clara.demo ROOT [--config JSON]`: the background builder."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = None
    if "--config" in argv:
        i = argv.index("--config")
        cfg = DemoConfig.from_json(argv[i + 1])
        del argv[i:i + 2]
    try:
        build_demo(argv[0], progress=lambda m: print(m, flush=True), cfg=cfg)
    except UserError as e:
        print(f"error: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
