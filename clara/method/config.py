"""The configuration of a CLaRa model: compression geometry, adapters, stage and loss weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from clara.errors import ClaraError
from clara.train.config import EngineConfig

STAGES = ("stage1", "stage2", "stage3")
ADAPTERS = ("compressor", "generator", "query_reasoner")
LORA_KEYS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass
class ClaraConfig:
    base_model: str = field(default="", metadata={
        "help": "The frozen base model: a local mlx-lm folder or a Hugging Face id."})
    stage: str = field(default="stage1", metadata={
        "help": "stage1 = compressor pretraining (SCP), stage2 = instruction tuning, "
                "stage3 = end-to-end retrieval + generation."})
    doc_max_tokens: int = field(default=256, metadata={
        "help": "Document tokens kept per document (longer documents are cut at the right)."})
    compression_rate: int = field(default=32, metadata={
        "help": "Document tokens per memory vector: n_mem = doc_max_tokens // compression_rate "
                "(1 to 256)."})
    top_k: int = field(default=1, metadata={
        "help": "Documents per question in the generator prompt (stage 1: 1; stage 2: 5; "
                "stage 3: how many candidates the query reasoner selects)."})
    max_len: int = field(default=2048, metadata={
        "help": "Longest generator sequence (prompt + answer); answers are cut to fit."})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank of every adapter."})
    lora_scale: float = field(default=2.0, metadata={
        "help": "LoRA scale (alpha / rank; the reference uses 32 / 16 = 2)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_keys: tuple[str, ...] = field(default=LORA_KEYS, metadata={
        "help": "Projections inside each block that get adapters."})
    lora_layers: int = field(default=-1, metadata={
        "help": "Adapt the last N blocks (-1 = all)."})
    mse_weight: float = field(default=0.1, metadata={
        "help": "Weight of the memory/document mean-state MSE in stages 1 and 2 (0 = off)."})
    tau: float = field(default=0.02, metadata={
        "help": "Temperature of the stage-3 differentiable top-k (and the retrieval loss)."})
    retrieval_weight: float = field(default=0.0, metadata={
        "help": "Stage 3 option: weight of the supervised contrastive retrieval loss on "
                "pos_index (0 = the label-free end-to-end CLaRa objective)."})
    train_memory_rows: bool = field(default=True, metadata={
        "help": "Train the input-embedding rows of the memory tokens."})

    @property
    def n_mem(self) -> int:
        return self.doc_max_tokens // self.compression_rate

    def adapters(self) -> tuple[str, ...]:
        """The adapters a model of this stage holds."""
        return ADAPTERS if self.stage == "stage3" else ADAPTERS[:2]

    def trained_adapters(self) -> tuple[str, ...]:
        """The adapters this stage trains (stage 3 freezes the compressor)."""
        return ("query_reasoner", "generator") if self.stage == "stage3" else ADAPTERS[:2]

    def validate(self) -> "ClaraConfig":
        if self.stage not in STAGES:
            raise ClaraError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        if not 1 <= self.compression_rate <= 256:
            raise ClaraError(f"compression_rate: {self.compression_rate} is outside 1..256")
        if self.doc_max_tokens < 1:
            raise ClaraError(f"doc_max_tokens: {self.doc_max_tokens} must be positive")
        if self.n_mem < 1:
            raise ClaraError(f"doc_max_tokens {self.doc_max_tokens} // compression_rate "
                             f"{self.compression_rate} gives no memory token")
        if self.top_k < 1:
            raise ClaraError(f"top_k: {self.top_k} must be at least 1")
        if self.lora_rank < 1:
            raise ClaraError(f"lora_rank: {self.lora_rank} must be at least 1")
        bad = [k for k in self.lora_keys if k not in LORA_KEYS]
        if bad:
            raise ClaraError(f"lora_keys: unknown projection(s) {', '.join(bad)}")
        if self.tau <= 0:
            raise ClaraError(f"tau: {self.tau} must be positive")
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


# A CLaRa stage run's settings live here, beside ClaraConfig and away from MLX, so that the CLI
# builds its options (and `clara --version` starts) without importing a model.
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
    retrieval_weight: float = field(default=0.0, metadata={
        "help": "Stage 3: weight of the supervised retrieval loss on pos_index (0 = off)."})
    train_memory_rows: bool = field(default=True, metadata={
        "help": "Train the memory tokens' embedding rows."})

    def method_config(self, stage: str) -> ClaraConfig:
        top_k = self.top_k or (1 if stage == "stage1" else 5)
        return ClaraConfig(base_model=self.model, stage=stage, doc_max_tokens=self.doc_max_tokens,
                           compression_rate=self.compression_rate, top_k=top_k,
                           max_len=self.max_len, lora_rank=self.lora_rank,
                           lora_scale=self.lora_scale, lora_dropout=self.lora_dropout,
                           lora_layers=self.lora_layers, mse_weight=self.mse_weight,
                           tau=self.tau, retrieval_weight=self.retrieval_weight,
                           train_memory_rows=self.train_memory_rows).validate()

    # Fields that do not change the geometry, passed on when starting from a checkpoint.
    def overrides(self, stage: str) -> dict:
        c = self.method_config(stage)
        return {"top_k": c.top_k, "max_len": c.max_len, "lora_dropout": c.lora_dropout,
                "mse_weight": c.mse_weight, "tau": c.tau, "retrieval_weight": c.retrieval_weight,
                "train_memory_rows": c.train_memory_rows, "lora_scale": c.lora_scale}
