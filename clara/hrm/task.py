"""HRM training as a TrainTask of the engine (run kind "hrm").

Every optimizer step is one ACT segment of a batch (deep supervision): the carry (z_H, z_L,
step counts, halted flags and the puzzles in flight) lives in `HRMTrainer.carry`, part of the
model's state so the compiled step updates it; sequences that halted load the next batch's
puzzles, the others continue theirs. Checkpoints hold the carry too, so a resumed run continues
exactly. The network trains with the engine's AdamW; the puzzle-embedding rows with sign-SGD on
the rows of the batch alone (`apply_gradients`). Validation runs every puzzle for the maximum
number of segments; early stopping and best/ follow validation exact accuracy.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from clara import io
from clara.errors import UserError
from clara.hrm import data as D
from clara.hrm.config import HRMTrainConfig
from clara.hrm.model import HRM, HRMConfig, act_loss, act_step, new_carry, run_episode

WEIGHTS, CONFIG, CARRY = "model.safetensors", "hrm_config.json", "carry.safetensors"


def sign_sgd_rows(table: mx.array, grad: mx.array, ids: mx.array, lr, weight_decay: float):
    """Sign-SGD with decoupled weight decay on the rows named by `ids` only (the reference's
    sparse puzzle-embedding optimizer); every other row is returned unchanged."""
    rows = (mx.zeros((table.shape[0],)).at[ids].add(1.0) > 0)[:, None]
    new = table * (1.0 - lr * weight_decay) - lr * mx.sign(grad)
    return mx.where(rows, new.astype(table.dtype), table)


class HRMTrainer(nn.Module):
    """The network plus the ACT carry of the batch in flight (frozen state, not parameters)."""

    def __init__(self, net: HRM, batch_size: int):
        super().__init__()
        self.net = net
        c = net.config
        dummy = {"inputs": mx.zeros((batch_size, c.seq_len), mx.int32),
                 "labels": mx.zeros((batch_size, c.seq_len), mx.int32),
                 "puzzle_ids": mx.zeros((batch_size,), mx.int32)}
        self.carry = new_carry(net, dummy)
        self.freeze(keys=["carry"], recurse=False)


def save_model(net: HRM, directory: Path, extra: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(net.parameters()))
    with io.atomic_path(directory / WEIGHTS) as tmp:
        mx.save_safetensors(str(tmp) + ".safetensors", weights)
        Path(str(tmp) + ".safetensors").replace(tmp)
    io.write_json(directory / CONFIG, {**net.config.to_dict(), **(extra or {})})


def load_model(directory: str | Path) -> tuple[HRM, dict]:
    """(model, config dict) from a folder written by `save_model` (a run's best/ or step-N/)."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise UserError(f"{directory}: no HRM checkpoint ({CONFIG} + {WEIGHTS})")
    cfg = io.read_json(directory / CONFIG)
    net = HRM(HRMConfig.from_dict(cfg))
    net.load_weights(str(directory / WEIGHTS), strict=True)
    mx.eval(net.parameters())
    return net, cfg


class HRMTask:
    kind = "hrm"
    compile_step = True
    best_metric = ("exact_accuracy", "max")  # early stopping and best/ follow exact accuracy

    def __init__(self, cfg: HRMTrainConfig, data_dir: str | Path):
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.meta = D.validate(self.data_dir)
        train = D.read_split(self.data_dir, "train")
        self.train = {k: mx.array(v) for k, v in D.to_training(train).items()}
        self.n_train = len(train["inputs"])
        if self.n_train < cfg.batch_size:
            raise UserError(f"batch_size: {cfg.batch_size} is more than the {self.n_train} "
                             "training puzzles")
        test = D.read_split(self.data_dir, "test") if (self.data_dir / "test.safetensors").is_file() \
            else {k: v[: min(len(v), 256)] for k, v in train.items()}
        if cfg.val_puzzles:
            test = {k: v[: cfg.val_puzzles] for k, v in test.items()}
        self.valid = {k: mx.array(v) for k, v in D.to_training(test).items()}
        mx.random.seed(cfg.seed)
        self.net = HRM(cfg.model_config(self.meta))
        self.model = HRMTrainer(self.net, cfg.batch_size)
        mx.eval(self.model.parameters())
        self.emb_ratio = cfg.puzzle_emb_lr / cfg.learning_rate

    # -- batches -----------------------------------------------------------------------------
    def num_train_batches(self) -> int:
        return self.n_train // self.cfg.batch_size  # whole batches: the carry keeps its shape

    def train_batches(self, epoch: int, seed: int):
        order = np.random.default_rng([seed, epoch]).permutation(self.n_train)
        B = self.cfg.batch_size
        for i in range(self.num_train_batches()):
            idx = mx.array(order[i * B:(i + 1) * B])
            yield {k: v[idx] for k, v in self.train.items()}

    def valid_batches(self):
        n, B = len(self.valid["inputs"]), self.cfg.batch_size
        for i in range(0, n, B):
            yield {k: v[i:i + B] for k, v in self.valid.items()}

    def batch_tokens(self, batch) -> int:
        return int(batch["inputs"].size)

    # -- loss --------------------------------------------------------------------------------
    def loss(self, model: HRMTrainer, batch):
        net = model.net
        if model.training:
            carry, logits, qh, qc, target = act_step(net, model.carry, batch, training=True)
            model.carry = carry
            halted, steps, labels = carry["halted"], carry["steps"], carry["labels"]
        else:
            logits, qh, qc, _ = run_episode(net, batch)
            halted = mx.ones((logits.shape[0],), mx.bool_)
            steps = mx.full((logits.shape[0],), net.config.halt_max_steps, mx.int32)
            target, labels = None, batch["labels"]
        loss, sums, count = act_loss(logits, labels, qh, qc, target, halted, steps)
        B = logits.shape[0]
        # metrics over the sequences that halted at this step (as the reference logs them)
        denom = mx.maximum(count, 1.0)
        extras = {k: sums[k] / denom for k in ("token_accuracy", "exact_accuracy",
                                                "q_halt_accuracy", "steps")}
        extras.update({k: sums[k] / B for k in ("lm_loss", "q_halt_loss", "q_continue_loss")})
        extras["halted"] = count / B
        return loss / B, mx.array(B), extras

    def apply_gradients(self, optimizer, model: HRMTrainer, grad) -> None:
        """AdamW for the network; sign-SGD for the puzzle-embedding rows of this batch."""
        pg = grad["net"].pop("puzzle_emb", None)
        optimizer.update(model, grad)
        if pg is not None:
            lr = optimizer.state["learning_rate"] * self.emb_ratio
            model.net.puzzle_emb = sign_sgd_rows(model.net.puzzle_emb, pg,
                                                 model.carry["puzzle_ids"], lr,
                                                 self.cfg.puzzle_emb_weight_decay)

    # -- weights -----------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> None:
        save_model(self.net, directory, {"dataset": str(self.data_dir),
                                         "puzzle": self.meta["puzzle"]})
        carry = {k: (v.astype(mx.int32) if v.dtype == mx.bool_ else v)
                 for k, v in self.model.carry.items()}
        with io.atomic_path(directory / CARRY) as tmp:
            mx.save_safetensors(str(tmp) + ".safetensors", carry)
            Path(str(tmp) + ".safetensors").replace(tmp)

    def load_weights(self, directory: Path) -> None:
        self.net.load_weights(str(directory / WEIGHTS), strict=True)
        if (directory / CARRY).is_file():
            carry = mx.load(str(directory / CARRY))
            carry["halted"] = carry["halted"].astype(mx.bool_)
            self.model.carry = carry
        mx.eval(self.model.parameters())

    def describe(self) -> dict:
        n = sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))
        c = self.net.config
        return {"dataset": str(self.data_dir), "puzzle": self.meta["puzzle"],
                "variant": c.variant, "parameters": int(n), "train_puzzles": self.n_train,
                "valid_puzzles": int(len(self.valid["inputs"])), "seq_len": c.seq_len,
                "halt_max_steps": c.halt_max_steps}


def factory(run_config: dict, run_dir: Path) -> HRMTask:
    cfg = HRMTrainConfig(**run_config["config"])
    return HRMTask(cfg, run_config.get("resolved", {}).get("data", cfg.data))


def register_kind() -> None:
    from clara.train.tasks import register

    register("hrm", factory)


register_kind()
