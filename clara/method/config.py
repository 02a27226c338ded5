"""The configuration of a CLaRa model: compression geometry, adapters, stage and loss weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from clara.errors import ClaraError

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
    retrieval_weight: float = field(default=1.0, metadata={
        "help": "Stage 3: weight of the supervised contrastive retrieval loss on pos_index, "
                "added to CE for rows that have one (0 = the reference's label-free "
                "end-to-end objective)."})
    train_memory_rows: bool = field(default=True, metadata={
        "help": "Train the input-embedding rows of the memory tokens."})
    stage3_train: str = field(default="query_reasoner", metadata={
        "help": "What stage 3 trains, comma-separated from query_reasoner, generator, memory "
                "(the reference trains all three; the generator then learns, on the documents "
                "a still-poor retriever picks, to ignore them: see bench/clara_stage3_study.py)."})

    @property
    def n_mem(self) -> int:
        return self.doc_max_tokens // self.compression_rate

    def adapters(self) -> tuple[str, ...]:
        """The adapters a model of this stage holds."""
        return ADAPTERS if self.stage == "stage3" else ADAPTERS[:2]

    def trained_adapters(self) -> tuple[str, ...]:
        """The adapters this stage trains (stage 3 freezes the compressor, and by default the
        generator: `stage3_train`)."""
        if self.stage == "stage3":
            return tuple(a for a in ("query_reasoner", "generator") if a in self._stage3_parts())
        return ADAPTERS[:2]

    def trains_memory_rows(self) -> bool:
        """The memory rows feed the compressor too: in stage 3 they train only when asked."""
        if self.stage == "stage3":
            return self.train_memory_rows and "memory" in self._stage3_parts()
        return self.train_memory_rows

    def _stage3_parts(self) -> set[str]:
        return {p.strip() for p in self.stage3_train.split(",") if p.strip()}

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
        parts = self._stage3_parts()
        if not parts or parts - {"query_reasoner", "generator", "memory"}:
            raise ClaraError(f"stage3_train: {self.stage3_train!r} is not a comma-separated "
                             "list of query_reasoner, generator, memory")
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
