"""The contract between the training engine and what it trains.

The engine (`clara.train.engine`) owns the loop: optimizer, schedule, gradient accumulation,
compilation, validation, early stopping, checkpoints, resume, metrics and events. A task owns
the model and the data: which parameters train, how batches are made, what the loss is, and how
its trained weights are written and read back. LoRA fine-tuning and each CLaRa stage are tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol

import mlx.core as mx
import mlx.nn as nn

Batch = Any  # whatever a task's batches are; the engine only passes them back to the task


class TrainTask(Protocol):
    kind: str
    """Short name recorded in the run, e.g. "lora-sft", "clara-stage1"."""

    model: nn.Module
    """The module whose `trainable_parameters()` are exactly what this task trains."""

    def train_batches(self, epoch: int, seed: int) -> Iterable[Batch]:
        """One epoch of training batches, in an order fixed by (epoch, seed) alone, so a resumed
        run can skip the batches it already consumed and see the same sequence."""

    def num_train_batches(self) -> int:
        """Batches per epoch."""

    def valid_batches(self) -> Iterable[Batch]:
        """The validation batches (the same every time)."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[mx.array, mx.array, dict[str, mx.array]]:
        """(mean loss to minimise, number of loss tokens, extra named scalars to log, e.g. mse)."""

    def batch_tokens(self, batch: Batch) -> int:
        """Tokens processed by the forward pass of this batch (for tokens/s, padding excluded)."""

    def save_weights(self, directory: Path) -> None:
        """Write the trained weights (and their config) into `directory`."""

    def load_weights(self, directory: Path) -> None:
        """Read weights written by `save_weights` back into `self.model`."""
