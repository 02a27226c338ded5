"""Training configurations: dataclasses with help metadata, merged from defaults, a TOML file and
flags (in that order), and written whole to the run's `run.toml`.

`EngineConfig` is what the engine itself reads (optimizer, schedule, lengths, validation, early
stopping, checkpoints, guards); every task's config extends it. `TrainConfig` is the LoRA task's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clara import io
from clara.errors import UserError, UsageError


@dataclass
class EngineConfig:
    seed: int = field(default=0, metadata={"help": "Seed of weight init, dropout and data order."})
    iters: int = field(default=200, metadata={"help": "Optimizer steps (ignored when --epochs is set)."})
    epochs: float | None = field(default=None, metadata={"help": "Train for this many passes over the data instead of --iters."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    min_learning_rate: float = field(default=0.0, metadata={"help": "Learning rate at the end of the cosine decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup steps from 0 to the peak learning rate."})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine (decay to min lr) or constant, after warmup."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    grad_clip: float | None = field(default=1.0, metadata={"help": "Clip the global gradient norm to this (0 or none: off)."})
    grad_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches summed per optimizer step."})
    grad_checkpoint: bool = field(default=False, metadata={"help": "Recompute activations in the backward pass (less memory, slower)."})
    compile: bool = field(default=True, metadata={"help": "Compile the training step with mx.compile."})
    report_every: int = field(default=1, metadata={"help": "Write a train metrics row every N steps."})
    val_every: int = field(default=50, metadata={"help": "Validate every N steps (0: only at the end)."})
    val_batches: int = field(default=-1, metadata={"help": "Validation batches per evaluation (-1: all)."})
    early_stopping_patience: int = field(default=0, metadata={"help": "Stop after this many validations without improvement (0: off)."})
    early_stopping_min_delta: float = field(default=0.0, metadata={"help": "Improvement in validation loss that resets the patience."})
    save_every: int = field(default=100, metadata={"help": "Write a resumable checkpoint every N steps (and always at the end)."})
    keep_checkpoints: int = field(default=2, metadata={"help": "How many step-N checkpoints to keep (best/ and last/ are kept apart)."})
    memory_limit_gb: float | None = field(default=None, metadata={"help": "Hold MLX to 70% of this (it waits for the device rather than allocating ahead: a leaner, slower step), and save and stop when the peak passes it (default: 90% of the device's memory)."})
    nproc: int = field(default=1, metadata={"help": "Processes to train on, data parallel through mlx.launch (per host with --hosts); --batch-size stays the global batch."})
    hosts: str | None = field(default=None, metadata={"help": "Comma-separated hosts to train across (IP addresses for the ring backend; ssh without password)."})
    hostfile: str | None = field(default=None, metadata={"help": "mlx.launch JSON hostfile (ssh names, ips, rdma, backend, envs), e.g. from mlx.distributed_config."})
    backend: str = field(default="auto", metadata={"help": "Distributed backend: ring, jaccl, mpi, nccl or auto (nccl on CUDA, else ring)."})
    dist_port: int | None = field(default=None, metadata={"help": "First TCP port of the ring (one per rank) or the NCCL port (default: a free one here, mlx.launch's across machines)."})
    dist_timeout: float = field(default=600.0, metadata={"help": "Seconds without a finished step before the watchdog ends a distributed run."})

    @classmethod
    def from_dict(cls, values: dict) -> "EngineConfig":
        """Build from a dict that may hold more keys (a task's config): unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def total_steps(self, batches_per_epoch: int) -> int:
        if self.epochs:
            return max(1, math.ceil(self.epochs * batches_per_epoch / self.grad_accumulation_steps))
        return self.iters

    def validate(self) -> None:
        for f in dataclasses.fields(self):  # inf and nan pass every comparison below
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise UsageError(f"{f.name}: {v} is not a finite number")
        checks = [
            (self.iters >= 1 or self.epochs, "iters", "must be at least 1"),
            (self.epochs is None or self.epochs > 0, "epochs", "must be positive"),
            (self.learning_rate > 0, "learning_rate", "must be positive"),
            (self.grad_accumulation_steps >= 1, "grad_accumulation_steps", "must be at least 1"),
            (self.lr_schedule in ("cosine", "constant"), "lr_schedule", "must be cosine or constant"),
            (self.save_every >= 1, "save_every", "must be at least 1"),
            (self.keep_checkpoints >= 1, "keep_checkpoints", "must be at least 1"),
            (self.report_every >= 1, "report_every", "must be at least 1"),
            (self.early_stopping_patience >= 0, "early_stopping_patience", "must be >= 0"),
            (self.nproc >= 1, "nproc", "must be at least 1"),
            (self.backend in ("auto", "ring", "jaccl", "mpi", "nccl"), "backend",
             "must be ring, jaccl, mpi, nccl or auto"),
            (self.dist_timeout > 0, "dist_timeout", "must be positive"),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise UsageError(f"{name}: {problem}")


@dataclass
class TrainConfig(EngineConfig):
    """LoRA / DoRA / full fine-tuning of an mlx-lm model, on text (cpt) or chat (sft) data."""

    model: str = field(default="", metadata={"help": "Base model: workspace model name, local folder or HF id."})
    data: str = field(default="", metadata={"help": "Dataset: workspace dataset name or a folder with train.jsonl/valid.jsonl."})
    mode: str = field(default="sft", metadata={"help": "cpt (plain text, {\"text\"}) or sft (chat/completions, prompt masked)."})
    fine_tune_type: str = field(default="lora", metadata={"help": "lora, dora or full."})
    batch_size: int = field(default=4, metadata={"help": "Sequences per micro-batch."})
    max_seq_length: int = field(default=512, metadata={"help": "Longer sequences are truncated."})
    num_layers: int = field(default=-1, metadata={"help": "Adapt (or unfreeze) the last N blocks (-1: all)."})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_scale: float = field(default=20.0, metadata={"help": "LoRA scale (mlx-lm's, not alpha)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_keys: list[str] | None = field(default=None, metadata={"help": "Module keys to adapt, e.g. self_attn.q_proj (default: every linear)."})
    mask_prompt: bool = field(default=True, metadata={"help": "sft: loss only on the last (assistant) message."})
    from_adapter: str | None = field(default=None, metadata={"help": "Start from this earlier adapter folder (e.g. CPT then SFT)."})
    dtype: str | None = field(default=None, metadata={"help": "float32, bfloat16 or float16 (default: the platform's fast dtype)."})

    def validate(self) -> None:
        super().validate()
        checks = [
            (bool(self.model), "model", "is required"),
            (bool(self.data), "data", "is required"),
            (self.mode in ("cpt", "sft"), "mode", "must be cpt or sft"),
            (self.fine_tune_type in ("lora", "dora", "full"), "fine_tune_type", "must be lora, dora or full"),
            (self.batch_size >= 1, "batch_size", "must be at least 1"),
            (self.max_seq_length >= 2, "max_seq_length", "must be at least 2"),
            (self.lora_rank >= 1, "lora_rank", "must be at least 1"),
            (0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)"),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise UsageError(f"{name}: {problem}")


def merge_config(cls, file: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Defaults, then a TOML file (top level or a [train] table), then non-None overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if file:
        data = io.read_toml(file)
        data = data.get("train", data) if isinstance(data.get("train"), dict) else data
        data = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{file}: {unknown[0]}: unknown setting (known: {', '.join(sorted(names))})")
        values.update(data)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        cfg = cls(**values)
    except TypeError as e:
        raise UserError(f"invalid configuration: {e}") from None
    cfg.validate()
    return cfg
