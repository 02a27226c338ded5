"""HRM settings: the model's (`HRMConfig`) and a run's (`HRMTrainConfig`, the engine's plus the
model's), and `hrm_run`, which turns a request into a run folder. No MLX import here: the CLI
builds its flags from these dataclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from clara.errors import UserError
from clara.train.config import EngineConfig


@dataclass
class HRMArchitecture:
    """The model's shape and recurrence: what a run chooses (its flags and form fields) and what
    its checkpoint keeps, declared once for both."""

    hidden_size: int = field(default=128, metadata={"help": "Width of both modules."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads."})
    expansion: float = field(default=4.0, metadata={"help": "SwiGLU width over hidden (x 2/3)."})
    H_layers: int = field(default=2, metadata={"help": "Blocks of the high-level module."})
    L_layers: int = field(default=2, metadata={"help": "Blocks of the low-level module."})
    H_cycles: int = field(default=2, metadata={"help": "H updates per segment."})
    L_cycles: int = field(default=2, metadata={"help": "L updates per H update."})
    pos_encodings: str = field(default="learned", metadata={
        "help": "learned or rope (the reference's; learned trains faster on small grids)."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base."})
    norm_eps: float = field(default=1e-5, metadata={"help": "RMSNorm epsilon."})
    halt_max_steps: int = field(default=8, metadata={"help": "Most ACT segments per puzzle."})
    halt_exploration_prob: float = field(default=0.1, metadata={
        "help": "Chance that a training sequence gets a random minimum number of segments."})
    variant: str = field(default="hrm", metadata={
        "help": "hrm (two modules, one-step gradient) or trm (one network, gradient through "
                "the whole last cycle, halting on q_halt > 0)."})
    dtype: str = field(default="float32", metadata={
        "help": "Compute dtype (float32 or bfloat16); weights stay float32."})

    def architecture(self) -> dict:
        return {f: getattr(self, f) for f in HRMArchitecture.__dataclass_fields__}

    def check_architecture(self) -> None:
        checks = [
            (self.hidden_size % max(self.num_heads, 1) == 0 and self.num_heads >= 1,
             "num_heads", "must divide hidden_size"),
            ((self.hidden_size // self.num_heads) % 2 == 0, "hidden_size",
             "hidden_size / num_heads must be even (RoPE)"),
            (self.H_layers >= 1 and self.L_layers >= 1, "H_layers", "layers must be >= 1"),
            (self.H_cycles >= 1 and self.L_cycles >= 1, "H_cycles", "cycles must be >= 1"),
            (self.halt_max_steps >= 1, "halt_max_steps", "must be at least 1"),
            (0 <= self.halt_exploration_prob <= 1, "halt_exploration_prob", "must be in [0, 1]"),
            (self.pos_encodings in ("rope", "learned"), "pos_encodings", "must be rope or learned"),
            (self.variant in ("hrm", "trm"), "variant", "must be hrm or trm"),
            (self.dtype in ("float32", "bfloat16", "float16"), "dtype",
             "must be float32, bfloat16 or float16"),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise UserError(f"{name}: {problem}")


@dataclass
class HRMConfig(HRMArchitecture):
    """A model: its architecture plus what its puzzle dataset fixes."""

    vocab_size: int = field(default=11, metadata={"help": "Tokens (pad 0 included)."})
    seq_len: int = field(default=81, metadata={"help": "Tokens per puzzle (grid cells)."})
    num_puzzle_ids: int = field(default=1, metadata={"help": "Rows of the puzzle-embedding table."})
    puzzle_emb_len: int = field(default=0, metadata={
        "help": "Puzzle-embedding positions prepended to the sequence (0: none)."})

    def validate(self) -> "HRMConfig":
        checks = [
            (self.vocab_size >= 2, "vocab_size", "must be at least 2"),
            (self.seq_len >= 1, "seq_len", "must be at least 1"),
            (self.puzzle_emb_len >= 0 and self.num_puzzle_ids >= 1, "puzzle_emb_len",
             "must be >= 0 (and num_puzzle_ids >= 1)"),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise UserError(f"{name}: {problem}")
        self.check_architecture()
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "HRMConfig":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HRMTrainConfig(HRMArchitecture, EngineConfig):
    """An HRM (or TRM) run on a puzzle dataset: the engine's settings plus the model's."""

    data: str = field(default="", metadata={"help": "Puzzle dataset: workspace name or folder."})
    batch_size: int = field(default=64, metadata={"help": "Puzzles in flight per step."})
    puzzle_emb_lr: float = field(default=1e-2, metadata={
        "help": "Sign-SGD learning rate of the puzzle embeddings (same warmup/cosine shape)."})
    puzzle_emb_weight_decay: float = field(default=0.1, metadata={
        "help": "Weight decay of the puzzle-embedding rows in the batch."})
    # None here, unlike the model's: the dataset decides unless the run does
    puzzle_emb_len: int | None = field(default=None, metadata={
        "help": "Puzzle-embedding positions (default: 1 when the dataset has several puzzle "
                "ids, else 0)."})
    val_puzzles: int = field(default=256, metadata={
        "help": "Test puzzles used for validation (0: all)."})

    def validate(self) -> None:
        super().validate()  # the engine's
        checks = [(bool(self.data), "data", "is required"),
                  (self.batch_size >= 1, "batch_size", "must be at least 1"),
                  (self.puzzle_emb_lr > 0, "puzzle_emb_lr", "must be positive"),
                  (self.val_puzzles >= 0, "val_puzzles", "must be >= 0")]
        for ok, name, problem in checks:
            if not ok:
                raise UserError(f"{name}: {problem}")
        self.check_architecture()

    def model_config(self, meta: dict) -> HRMConfig:
        emb = self.puzzle_emb_len
        if emb is None:
            emb = 1 if meta["num_puzzle_ids"] > 1 else 0
        return HRMConfig(**self.architecture(), vocab_size=meta["vocab_size"],
                         seq_len=meta["seq_len"], num_puzzle_ids=meta["num_puzzle_ids"],
                         puzzle_emb_len=emb).validate()


def hrm_run(ws, overrides: dict, config_file: str | Path | None = None, name: str | None = None):
    """Create (not start) an HRM run; the dataset is checked first, so a bad one makes no run."""
    from clara.data.datasets import resolve
    from clara.hrm import data as D
    from clara.runs import create_run
    from clara.train.config import merge_config

    cfg = merge_config(HRMTrainConfig, config_file, overrides)
    folder = resolve(ws, cfg.data).resolve()
    meta = D.validate(folder)
    cfg.model_config(meta)  # geometry errors now, not in the worker
    rows = meta.get("rows", {}).get("train", 0)
    if rows and rows < cfg.batch_size:
        raise UserError(f"batch_size: {cfg.batch_size} is more than the {rows} training puzzles")
    return create_run(ws, "hrm", asdict(cfg), resolved={"data": str(folder)}, name=name)
