"""The three CLaRa training stages as TrainTasks (clara/train/task.py), registered as run kinds
"clara-stage1", "clara-stage2" and "clara-stage3".

Rows are clara-method §3's JSONL formats. Stage 1: {"data_type": "qa", "question": [..],
"answers": [..], "docs": [doc]} or {"data_type": "paraphrase", "answers": [text], "docs": [doc]};
stage 2: {"question", "docs" (exactly top_k), "answer" | "answers" | "golden_answers"};
stage 3: {"question", "docs" (N candidates, N >= top_k), answer as stage 2, "pos_index"
(optional, metrics and the optional retrieval loss only)}.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from clara import io
from clara.errors import ClaraError, DataError
from clara.method import checkpoint, prompts
from clara.method.config import ClaraConfig
from clara.method.model import ClaraModel
from clara.method.tokens import contains_added_token
from clara.train.config import EngineConfig


@dataclass
class ClaraTrainConfig(EngineConfig):
    """A CLaRa stage run: the engine's settings plus the method's."""

    model: str = field(default="", metadata={"help": "Base model: local mlx-lm folder or HF id."})
    data: str = field(default="", metadata={
        "help": "Folder with train.jsonl (and valid.jsonl) in the stage's row format."})
    init_from: str | None = field(default=None, metadata={
        "help": "Checkpoint of an earlier stage to start from (stage 2 keeps its compressor and "
                "starts a fresh generator; stage 3 copies the compressor into the query "
                "reasoner)."})
    batch_size: int = field(default=2, metadata={"help": "Questions per micro-batch."})
    doc_max_tokens: int = field(default=256, metadata={"help": ClaraConfig.__dataclass_fields__[
        "doc_max_tokens"].metadata["help"]})
    compression_rate: int = field(default=32, metadata={"help": ClaraConfig.__dataclass_fields__[
        "compression_rate"].metadata["help"]})
    top_k: int | None = field(default=None, metadata={
        "help": "Documents per question (default: 1 in stage 1, 5 in stages 2 and 3)."})
    max_len: int = field(default=2048, metadata={"help": "Longest generator sequence."})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank of every adapter."})
    lora_scale: float = field(default=2.0, metadata={"help": "LoRA scale (alpha / rank)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_layers: int = field(default=-1, metadata={"help": "Adapt the last N blocks (-1 = all)."})
    mse_weight: float = field(default=0.1, metadata={
        "help": "Weight of the memory MSE (stages 1 and 2)."})
    tau: float = field(default=0.02, metadata={"help": "Stage-3 top-k temperature."})
    retrieval_weight: float = field(default=1.0, metadata={
        "help": "Stage 3: weight of the supervised retrieval loss on rows' pos_index (0 = off: "
                "the reference's label-free objective, which from a compressor that keeps "
                "little of what questions ask barely moves recall)."})
    train_memory_rows: bool = field(default=True, metadata={
        "help": "Train the memory tokens' embedding rows."})
    stage3_train: str = field(default="query_reasoner", metadata={
        "help": ClaraConfig.__dataclass_fields__["stage3_train"].metadata["help"]})

    def method_config(self, stage: str) -> ClaraConfig:
        top_k = self.top_k or (1 if stage == "stage1" else 5)
        return ClaraConfig(base_model=self.model, stage=stage, doc_max_tokens=self.doc_max_tokens,
                           compression_rate=self.compression_rate, top_k=top_k,
                           max_len=self.max_len, lora_rank=self.lora_rank,
                           lora_scale=self.lora_scale, lora_dropout=self.lora_dropout,
                           lora_layers=self.lora_layers, mse_weight=self.mse_weight,
                           tau=self.tau, retrieval_weight=self.retrieval_weight,
                           train_memory_rows=self.train_memory_rows,
                           stage3_train=self.stage3_train).validate()

    # Fields that do not change the geometry, passed on when starting from a checkpoint.
    def overrides(self, stage: str) -> dict:
        c = self.method_config(stage)
        return {"top_k": c.top_k, "max_len": c.max_len, "lora_dropout": c.lora_dropout,
                "mse_weight": c.mse_weight, "tau": c.tau, "retrieval_weight": c.retrieval_weight,
                "train_memory_rows": c.train_memory_rows, "lora_scale": c.lora_scale,
                "stage3_train": c.stage3_train}


# ---------------------------------------------------------------------------- rows
def _str_list(row, key, path, line, nonempty=True) -> list[str]:
    v = row.get(key)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise DataError(path, line, key, "must be a list of strings")
    if nonempty and not v:
        raise DataError(path, line, key, "must not be empty")
    return v


def _docs(row, path, line) -> list[str]:
    for key in ("docs", "context", "content"):  # the reference's order of preference
        if isinstance(row.get(key), list):
            return _str_list(row, key, path, line)
    raise DataError(path, line, "docs", "missing (a list of document strings)")


def _answer(row, path, line) -> str:
    if isinstance(row.get("answer"), str):
        return row["answer"]
    for key in ("answers", "golden_answers"):
        if isinstance(row.get(key), list) and row[key] and isinstance(row[key][0], str):
            return row[key][0]
    raise DataError(path, line, "answer",
                    "missing (a string 'answer', or a list 'answers' / 'golden_answers')")


def parse_row(row, stage: str, top_k: int, n_mem: int, path, line: int) -> dict:
    """One sample of a stage from a §3 row, or a DataError naming file, line and field."""
    if not isinstance(row, dict):
        raise DataError(path, line, None, "each line must be a JSON object")
    docs = _docs(row, path, line)
    if stage in ("stage1", "stage2") and len(docs) != top_k:
        raise DataError(path, line, "docs", f"has {len(docs)} documents; {stage} needs exactly "
                                            f"top_k = {top_k}")
    if stage == "stage1":
        kind = row.get("data_type", "qa")
        if kind == "paraphrase":
            sample = {"kind": "paraphrase", "docs": docs,
                      "answer": _str_list(row, "answers", path, line)[0]}
        elif kind == "qa":
            qs = _str_list(row, "question", path, line)
            ans = _str_list(row, "answers", path, line)
            if len(qs) != len(ans):
                raise DataError(path, line, "answers",
                                f"{len(ans)} answers for {len(qs)} questions")
            sample = {"kind": "qa", "docs": docs, "questions": qs, "answers": ans}
        else:
            raise DataError(path, line, "data_type", f"{kind!r} is not qa or paraphrase")
    else:
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(path, line, "question", "must be a non-empty string")
        sample = {"kind": "rag", "docs": docs, "question": q, "answer": _answer(row, path, line)}
        if stage == "stage3":
            if len(docs) < top_k:
                raise DataError(path, line, "docs", f"{len(docs)} candidates, fewer than top_k "
                                                    f"= {top_k}")
            pos = row.get("pos_index", [])
            if not isinstance(pos, list) or not all(isinstance(i, int) and 0 <= i < len(docs)
                                                    for i in pos):
                raise DataError(path, line, "pos_index",
                                f"must be a list of document indices 0..{len(docs) - 1}")
            sample["pos"] = pos
    texts = [sample.get("question", "")] + sample.get("questions", []) + \
        [sample.get("answer", "")] + sample.get("answers", [])
    for t in texts:
        bad = contains_added_token(t, n_mem)
        if bad:
            raise DataError(path, line, None, f"contains the reserved token {bad}")
    return sample


def read_rows(path: Path, stage: str, top_k: int, n_mem: int) -> list[dict]:
    return [parse_row(row, stage, top_k, n_mem, path, line)
            for line, row in io.iter_jsonl(path)]


# ---------------------------------------------------------------------------- task
class ClaraStageTask:
    """A TrainTask for one CLaRa stage over `model` and parsed samples."""

    compile_step = True

    def __init__(self, model: ClaraModel, train: list[dict], valid: list[dict] | None = None,
                 batch_size: int = 2):
        self.model = model
        self.stage = model.config.stage
        self.kind = f"clara-{self.stage}"
        if not train:
            raise ClaraError("no training rows")
        self.batch_size = batch_size
        self._train, self._valid = train, valid or []
        self._train_groups = self._plan(self._train)
        self._cache: dict = {}
        # stage 3 validates its start (stage 2's generator, the query reasoner as the compressor):
        # a stage 3 that helps nothing hands over that start as its best checkpoint
        self.validate_at_start = self.stage == "stage3" and bool(self._valid)

    @classmethod
    def from_files(cls, model: ClaraModel, data_dir: str | Path, batch_size: int = 2):
        data_dir = Path(data_dir)
        train_file, valid_file = data_dir / "train.jsonl", data_dir / "valid.jsonl"
        if not train_file.is_file():
            raise ClaraError(f"{data_dir}: no train.jsonl")
        c = model.config
        train = read_rows(train_file, c.stage, c.top_k, c.n_mem)
        valid = read_rows(valid_file, c.stage, c.top_k, c.n_mem) if valid_file.is_file() else []
        return cls(model, train, valid, batch_size)

    def _plan(self, samples: list[dict]) -> dict[int, list[int]]:
        """Sample indices grouped by candidate count (a stage-3 batch needs one N)."""
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(len(s["docs"]), []).append(i)
        return groups

    def _chunks(self, groups: dict[int, list[int]], rng) -> list[list[int]]:
        out = []
        for n in sorted(groups):
            idx = list(groups[n]) if rng is None else list(rng.permutation(groups[n]))
            out += [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if rng is not None:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    # -- batches ---------------------------------------------------------------------------
    def _decoder_example(self, s: dict, rng: random.Random):
        m, n_mem = self.model, self.model.config.n_mem
        if s["kind"] == "qa":
            parts = prompts.scp_qa(n_mem, s["questions"], s["answers"])
        elif s["kind"] == "paraphrase":
            parts = prompts.scp_paraphrase(n_mem, s["answer"], rng)
        else:
            parts = prompts.rag_qa(n_mem, m.config.top_k, s["question"], s["answer"])
        if parts not in self._cache:
            self._cache[parts] = m.decoder_example(*parts)
        return self._cache[parts]

    def make_batch(self, samples: list[dict], rng: random.Random) -> dict[str, mx.array]:
        m, k = self.model, self.model.config.top_k
        dec = m.decoder_batch([self._decoder_example(s, rng) for s in samples], k)
        if self.stage != "stage3":
            docs = [d for s in samples for d in s["docs"]]
            return {**m.encoder_batch(docs), **dec}
        N = len(samples[0]["docs"])
        pos = np.zeros((len(samples), N), dtype=np.bool_)
        for b, s in enumerate(samples):
            pos[b, s["pos"]] = True
        cands = m.encoder_batch([d for s in samples for d in s["docs"]], prefix="cand")
        return {**m.encoder_batch([s["question"] for s in samples], prefix="q"), **cands, **dec,
                "positives": mx.array(pos)}

    def num_train_batches(self) -> int:
        return sum(-(-len(v) // self.batch_size) for v in self._train_groups.values())

    def train_batches(self, epoch: int, seed: int):
        rng = np.random.default_rng([seed, epoch])
        for i, chunk in enumerate(self._chunks(self._train_groups, rng)):
            # the paraphrase instruction of a batch depends on (seed, epoch, batch) alone
            yield self.make_batch([self._train[j] for j in chunk],
                                  random.Random(seed * 1_000_003 + epoch * 10_007 + i))

    def valid_batches(self):
        for i, chunk in enumerate(self._chunks(self._plan(self._valid), None)):
            yield self.make_batch([self._valid[j] for j in chunk], random.Random(i))

    def loss(self, model: ClaraModel, batch):
        return model.stage_loss(batch)

    def selection(self, val_loss: float, extras: dict) -> float:
        """The engine keeps the checkpoint where this is lowest: stage 3 by answers and retrieval
        (exact answers with the documents it picks, plus recall@top_k), the others by loss."""
        if self.stage != "stage3" or "em" not in extras:
            return val_loss
        k = self.model.config.top_k
        recall = extras.get(f"recall@{k}", extras.get("recall@1", 0.0))
        return -(extras["em"] + recall) + 1e-3 * val_loss  # the loss only breaks ties

    def batch_tokens(self, batch) -> int:
        keys = [k for k in batch if k.endswith("_mask")]
        return int(sum(batch[k].sum().item() for k in keys))

    def save_weights(self, directory: Path) -> None:
        checkpoint.save(self.model, directory)

    def load_weights(self, directory: Path) -> None:
        checkpoint.load_into(self.model, directory, adapters=self.model.adapter_names())

    def doc_truncation(self) -> dict:
        """How doc_max_tokens cuts the training documents in the base's own tokens; logs a
        warning when it cuts any."""
        import logging

        from clara.data.chunking import HFTokenizer
        from clara.data.stats import doc_truncation, truncation_warning

        c = self.model.config
        t = doc_truncation(({"docs": s["docs"]} for s in self._train),
                           HFTokenizer(self.model.hf, "the base"), c.doc_max_tokens)
        line = truncation_warning(t, "the base")
        if line:
            logging.getLogger("clara.train").warning("documents cut: %s", line)
            t["warning"] = line
        return t

    def describe(self) -> dict:
        trainable = sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))
        c = self.model.config
        return {"model": c.base_model, "stage": c.stage, "n_mem": c.n_mem, "top_k": c.top_k,
                "adapters": self.model.adapter_names(),
                # fingerprints of the starting weights: a hand-off can be checked from events
                "adapter_digests": checkpoint.adapter_digests(self.model),
                "trained_adapters": list(c.trained_adapters()),
                "trainable_parameters": int(trainable), "train_rows": len(self._train),
                "valid_rows": len(self._valid), "train_batches": self.num_train_batches(),
                "doc_truncation": self.doc_truncation()}


def build_task(cfg: ClaraTrainConfig, stage: str, model_source: str | None = None,
               data_dir: str | Path | None = None) -> ClaraStageTask:
    """The task of a stage run: a fresh model on the base, or one continued from init_from."""
    source = model_source or cfg.model
    mx.random.seed(cfg.seed)
    if cfg.init_from:
        lm = tok = None
        if source:
            from clara.models.loading import load_model

            loaded = load_model(source)
            lm, tok = loaded.model, loaded.tokenizer
        model = checkpoint.load(cfg.init_from, stage=stage, lm=lm, tokenizer=tok,
                                overrides=cfg.overrides(stage), seed=cfg.seed)
    else:
        if not source:
            raise ClaraError("model: is required")
        c = cfg.method_config(stage)
        c.base_model = source
        model = ClaraModel.from_base(c)
    return ClaraStageTask.from_files(model, data_dir or cfg.data, cfg.batch_size)


def _factory(stage: str):
    def factory(run_config: dict, run_dir: Path) -> ClaraStageTask:
        cfg = ClaraTrainConfig(**run_config["config"])
        resolved = run_config.get("resolved", {})
        return build_task(cfg, stage, resolved.get("model", cfg.model),
                          resolved.get("data", cfg.data))
    return factory


def register_kinds() -> None:
    from clara.train.tasks import register

    for stage in ("stage1", "stage2", "stage3"):
        register(f"clara-{stage}", _factory(stage))


register_kinds()
