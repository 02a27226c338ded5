"""The configuration of a CLaRa model and of a CLaRa training run, declared once.

`ClaraSettings` holds the method's settings a user picks (compression geometry, adapters, loss
weights); a model's `ClaraConfig` adds the base and the stage, a run's `ClaraTrainConfig` adds
the engine's settings (clara/train/config.py), the data and the starting checkpoint. Fields
marked `geometry` in their metadata fix the shape of a checkpoint: a run continued from one
takes them from it, and asking for other values is an error.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields

from clara.errors import UsageError
from clara.train.config import EngineConfig

STAGES = ("stage1", "stage2", "stage3")
CE_CHUNK_ELEMENTS = 1 << 26  # logits per chunk of losses.chunked_ce: 256 MB in float32
# CLARA_PAD_MULTIPLE=X: rows padded to multiples of X instead of padded_length's widths
PAD_MULTIPLE = int(os.environ.get("CLARA_PAD_MULTIPLE", "0"))


def padded_length(n: int) -> int:
    """The width a batch of rows up to `n` tokens is padded to: a multiple of 16 up to 128,
    then 4 widths per doubling (multiples of 32 to 256, of 64 to 512, ...), at most 25 % of
    padding. Every new width is a new trace and compilation of the step (seconds on CUDA: on
    the H200, 1.1B stage 1 at batch 8 went from 18.7k to 29.4k tokens/s over 12 steps when its
    decoder rows, whose prompts differ by the paraphrase instruction, stopped making two widths,
    bench/clara_throughput.py); 16 below 128 keeps the small rows of tests and tiny models as
    they were. CLARA_PAD_MULTIPLE=X pads to multiples of X instead (the bench's +padX)."""
    if PAD_MULTIPLE:
        return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE
    step = 16 if n <= 128 else 1 << max(4, (n - 1).bit_length() - 3)
    return -(-n // step) * step


ADAPTERS = ("compressor", "generator", "query_reasoner")
CENTER_CHOICES = ("auto", "on", "off")  # retrieval_center
NEGATIVE_CHOICES = ("rows", "batch", "pool")  # stage3_negatives
LORA_KEYS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _geometry(help_: str) -> dict:
    return {"help": help_, "geometry": True}


@dataclass
class ClaraSettings:
    """The method's settings, shared by a model's config and a training run's."""

    doc_max_tokens: int = field(default=256, metadata=_geometry(
        "Document tokens kept per document (longer documents are cut at the right)."))
    compression_rate: int = field(default=32, metadata=_geometry(
        "Document tokens per memory vector: n_mem = doc_max_tokens // compression_rate "
        "(1 to 256)."))
    top_k: int = field(default=1, metadata={
        "help": "Documents per question in the generator prompt (stage 1: 1; stage 2: 5; "
                "stage 3: how many candidates the query reasoner selects)."})
    max_len: int = field(default=2048, metadata={
        "help": "Longest generator sequence (prompt + answer); answers are cut to fit."})
    lora_rank: int = field(default=16, metadata=_geometry("LoRA rank of every adapter."))
    lora_scale: float = field(default=2.0, metadata={
        "help": "LoRA scale (alpha / rank; the reference uses 32 / 16 = 2)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_layers: int = field(default=-1, metadata=_geometry(
        "Adapt the last N blocks (-1 = all)."))
    mse_weight: float = field(default=0.1, metadata={
        "help": "Weight of the memory/document mean-state MSE in stages 1 and 2 (0 = off)."})
    tau: float = field(default=0.02, metadata={
        "help": "Temperature of the stage-3 differentiable top-k (and the retrieval loss)."})
    retrieval_center: str = field(default="auto", metadata={
        "help": "Score retrieval by the cosine of vectors centred on the candidates' mean (the "
                "query's and the documents', in stage 2's alignment, stage 3 and retrieval "
                "alike), not the paper's plain cosine: on, off, or auto (at the start of stage "
                "2, on when the stage-1 compressor's training documents are all alike, mean "
                "doc-doc cosine >= 0.99; stage 3 keeps stage 2's decision). A small base "
                "compresses documents of one template to nearly one direction (cosine 0.9995 "
                "between lighthouses), where the plain cosine's scores are flat and stage 2's "
                "alignment never acts; on distinct documents (0.82, the facts benchmark) the "
                "centred alignment kept stage 2 from learning to read "
                "(bench/clara_stage3_study.py, rounds six and seven)."})
    retrieval_weight: float = field(default=1.0, metadata={
        "help": "Stage 3: weight of the supervised contrastive retrieval loss on pos_index, "
                "added to CE for rows that have one (0 = the reference's label-free "
                "end-to-end objective)."})
    stage3_negatives: str = field(default="batch", metadata={
        "help": "Stage 3: the documents the supervised retrieval loss ranks each question's gold "
                "document against: rows (its row's candidates alone, as before), batch (every "
                "candidate of the batch), or pool (every training document, up to 8192, from "
                "the frozen compressor's cached vectors). A candidate whose text is a row's gold "
                "document counts as that row's positive wherever it is. On unseen facts, 200 "
                "steps over 20 candidates lifted recall@1 73 -> 80 with batch against 73 -> 73.5 "
                "with rows; pool lifted the facts as much and lowered the lighthouses' "
                "recall@5 (bench/clara_stage3_study.py, round eight)."})
    train_memory_rows: bool = field(default=True, metadata={
        "help": "Train the input-embedding rows of the memory tokens."})
    chunked_ce: bool = field(default=False, metadata={
        "help": "Compute the generator's cross-entropy in chunks of positions whose logits are "
                "recomputed in the backward pass: the whole [batch, length, vocabulary] logits "
                "never exist at once (less memory at large vocabularies and batches, a few % "
                "more compute; the same loss up to float rounding)."})
    stage2_generator: str = field(default="fresh", metadata={
        "help": "Stage 2's generator: fresh (the reference: stage 1's is discarded) or stage1 "
                "(continue stage 1's, which already reads the compressed vectors: a small "
                "model's fresh generator may learn the answers' prior and never read them, "
                "bench/clara_stage3_study.py)."})
    stage2_train: str = field(default="compressor,generator", metadata={
        "help": "What stage 2 trains, comma-separated from compressor, generator (the "
                "reference trains both; with the compressor frozen, stage 1's vectors, and what "
                "a retriever reads in them, are kept; the memory rows freeze with it)."})
    stage3_train: str = field(default="query_reasoner", metadata={
        "help": "What stage 3 trains, comma-separated from query_reasoner, generator, memory "
                "(the reference trains all three; the generator then learns, on the documents "
                "a still-poor retriever picks, to ignore them: see bench/clara_stage3_study.py)."})
    stage2_align: float = field(default=0.02, metadata={
        "help": "Stage 2: weight of an in-batch retrieval loss (InfoNCE at tau) between the "
                "compressor's vectors of each question and of its row's documents (0 = the "
                "reference's stage 2). Stage 2 otherwise keeps in a document's vectors only what "
                "its questions ask for, and the query reasoner (a copy of the compressor) no "
                "longer finds the document by what the question names; too large a weight keeps "
                "the generator from learning to read (0.03 on the tiny facts base: "
                "bench/clara_stage3_study.py)."})

    @property
    def n_mem(self) -> int:
        return self.doc_max_tokens // self.compression_rate

    def _stage3_parts(self) -> set[str]:
        return {p.strip() for p in self.stage3_train.split(",") if p.strip()}

    def _stage2_parts(self) -> set[str]:
        return {p.strip() for p in self.stage2_train.split(",") if p.strip()}

    def check_settings(self) -> None:
        """The method's own ranges (every number finite); raises a one-line UserError."""
        for f in fields(ClaraSettings):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise UsageError(f"{f.name}: {v} is not a finite number")
        if not 1 <= self.compression_rate <= 256:
            raise UsageError(f"compression_rate: {self.compression_rate} is outside 1..256")
        if self.doc_max_tokens < 1:
            raise UsageError(f"doc_max_tokens: {self.doc_max_tokens} must be positive")
        if self.n_mem < 1:
            raise UsageError(f"doc_max_tokens {self.doc_max_tokens} // compression_rate "
                             f"{self.compression_rate} gives no memory token")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError(f"top_k: {self.top_k} must be at least 1")
        if self.max_len < 2:
            raise UsageError(f"max_len: {self.max_len} must be at least 2")
        if self.lora_rank < 1:
            raise UsageError(f"lora_rank: {self.lora_rank} must be at least 1")
        if self.lora_layers == 0 or self.lora_layers < -1:
            raise UsageError(f"lora_layers: {self.lora_layers} must be -1 (all) or at least 1")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UsageError(f"lora_dropout: {self.lora_dropout} must be in [0, 1)")
        if self.tau <= 0:
            raise UsageError(f"tau: {self.tau} must be positive")
        if isinstance(self.retrieval_center, bool):  # configs written when it was a switch
            self.retrieval_center = "on" if self.retrieval_center else "off"
        if self.retrieval_center not in CENTER_CHOICES:
            raise UsageError(f"retrieval_center: {self.retrieval_center!r} is not "
                             f"{', '.join(CENTER_CHOICES[:-1])} or {CENTER_CHOICES[-1]}")
        if self.stage3_negatives not in NEGATIVE_CHOICES:
            raise UsageError(f"stage3_negatives: {self.stage3_negatives!r} is not "
                             f"{', '.join(NEGATIVE_CHOICES[:-1])} or {NEGATIVE_CHOICES[-1]}")
        if self.stage2_generator not in ("fresh", "stage1"):
            raise UsageError(f"stage2_generator: {self.stage2_generator!r} is not fresh or "
                             "stage1")
        parts = self._stage2_parts()
        if not parts or parts - {"compressor", "generator"}:
            raise UsageError(f"stage2_train: {self.stage2_train!r} is not a comma-separated "
                             "list of compressor, generator")
        parts = self._stage3_parts()
        if not parts or parts - {"query_reasoner", "generator", "memory"}:
            raise UsageError(f"stage3_train: {self.stage3_train!r} is not a comma-separated "
                             "list of query_reasoner, generator, memory")
        for name in ("mse_weight", "retrieval_weight", "stage2_align"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name}: {getattr(self, name)} must be >= 0")


def settings_of(obj) -> dict:
    """The ClaraSettings fields of a config (a model's or a run's) as a dict."""
    return {f.name: getattr(obj, f.name) for f in fields(ClaraSettings)}


@dataclass
class ClaraConfig(ClaraSettings):
    base_model: str = field(default="", metadata={
        "help": "The frozen base model: a local mlx-lm folder or a Hugging Face id."})
    stage: str = field(default="stage1", metadata={
        "help": "stage1 = compressor pretraining (SCP), stage2 = instruction tuning, "
                "stage3 = end-to-end retrieval + generation."})
    lora_keys: tuple[str, ...] = field(default=LORA_KEYS, metadata=_geometry(
        "Projections inside each block that get adapters."))

    def adapters(self) -> tuple[str, ...]:
        """The adapters a model of this stage holds."""
        return ADAPTERS if self.stage == "stage3" else ADAPTERS[:2]

    def trained_adapters(self) -> tuple[str, ...]:
        """The adapters this stage trains (stage 3 freezes the compressor, and by default the
        generator: `stage3_train`)."""
        if self.stage == "stage3":
            return tuple(a for a in ("query_reasoner", "generator") if a in self._stage3_parts())
        if self.stage == "stage2":
            return tuple(a for a in ADAPTERS[:2] if a in self._stage2_parts())
        return ADAPTERS[:2]

    def trains_memory_rows(self) -> bool:
        """The memory rows feed the compressor too: in stage 3 they train only when asked."""
        if self.stage == "stage3":
            return self.train_memory_rows and "memory" in self._stage3_parts()
        if self.stage == "stage2":
            return self.train_memory_rows and "compressor" in self._stage2_parts()
        return self.train_memory_rows


    def validate(self) -> "ClaraConfig":
        if self.stage not in STAGES:
            raise UsageError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        self.check_settings()
        bad = [k for k in self.lora_keys if k not in LORA_KEYS]
        if bad:
            raise UsageError(f"lora_keys: unknown projection(s) {', '.join(bad)}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_keys"] = list(self.lora_keys)
        d["n_mem"] = self.n_mem
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClaraConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "lora_keys" in kw:
            kw["lora_keys"] = tuple(kw["lora_keys"])
        return cls(**kw).validate()


def geometry_fields() -> tuple[str, ...]:
    """The fields a checkpoint fixes (marked `geometry`)."""
    return tuple(f.name for f in fields(ClaraConfig) if f.metadata.get("geometry"))


def check_geometry(saved: dict, asked: dict, where) -> None:
    """Refuse asked geometry values that differ from a checkpoint's saved config."""
    for name in geometry_fields():
        if name in asked and name in saved and _same(asked[name]) != _same(saved[name]):
            raise UsageError(f"{name}: {_same(asked[name])} asked, but the checkpoint {where} "
                             f"has {_same(saved[name])}; a run continued from it keeps its "
                             "geometry")


def _same(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def default_top_k(stage: str) -> int:
    return 1 if stage == "stage1" else 5


@dataclass
class _StageRun:
    """What a stage run adds to the engine's and the method's settings."""

    model: str = field(default="", metadata={"help": "Base model: local mlx-lm folder or HF id."})
    data: str = field(default="", metadata={
        "help": "Folder with train.jsonl (and valid.jsonl) in the stage's row format."})
    init_from: str | None = field(default=None, metadata={
        "help": "Checkpoint of an earlier stage to start from (stage 2 keeps its compressor and "
                "starts a fresh generator; stage 3 copies the compressor into the query "
                "reasoner)."})
    batch_size: int = field(default=2, metadata={"help": "Questions per micro-batch."})


@dataclass
class ClaraTrainConfig(ClaraSettings, _StageRun, EngineConfig):
    """A CLaRa stage run: the engine's settings, the run's, then the method's (fields in that
    order)."""

    top_k: int | None = field(default=None, metadata={
        "help": "Documents per question (default: 1 in stage 1; in stage 2 the documents of "
                "its rows; 5 in stage 3)."})

    def validate(self) -> None:
        EngineConfig.validate(self)
        self.check_settings()
        if self.batch_size < 1:
            raise UsageError(f"batch_size: {self.batch_size} must be at least 1")

    def method_config(self, stage: str) -> ClaraConfig:
        values = settings_of(self)
        values["top_k"] = self.top_k or default_top_k(stage)
        return ClaraConfig(base_model=self.model, stage=stage, **values).validate()

    def overrides(self, stage: str) -> dict:
        """Every method setting of this run, for a model continued from a checkpoint (whose
        geometry must then be the same)."""
        return settings_of(self.method_config(stage))
