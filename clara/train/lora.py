"""The LoRA task: LoRA, DoRA or full fine-tuning of an mlx-lm model, on text (cpt) or chat (sft).

mlx-lm does the model work: `linear_to_lora_layers` wraps the linears (QuantizedLinear too, so a
quantized base gives QLoRA), its dataset classes tokenize rows through the chat template and give
the prompt offset for masking. Batches have mlx-lm's shape, `(tokens (B, T), lengths (B, 2) =
(offset, length))`, so the engine, mlx-lm's trainer and the benchmark all see the same data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from clara import io
from clara.data.formats import parse_lora_row
from clara.errors import UserError, DataError
from clara.train.config import TrainConfig
from clara.train.tasks import register

log = logging.getLogger("clara.train")

PAD_MULTIPLE = 32  # as mlx-lm: few distinct shapes, so the compiled step is rarely re-traced


def tokenize_file(path: Path, tokenizer, mode: str, mask_prompt: bool) -> list[tuple[list[int], int]]:
    """(token ids, prompt offset) for every row of a JSONL file, through mlx-lm's datasets."""
    from mlx_lm.tuner.datasets import ChatDataset, CompletionsDataset, TextDataset

    makers = {
        "text": lambda: TextDataset([], tokenizer),
        "chat": lambda: ChatDataset([], tokenizer, mask_prompt=mask_prompt),
        "completions": lambda: CompletionsDataset([], tokenizer, "prompt", "completion",
                                                  mask_prompt),
    }
    datasets: dict = {}
    out = []
    for line, row in io.iter_jsonl(path):
        fmt = parse_lora_row(row, mode, path, line)
        ds = datasets.get(fmt) or datasets.setdefault(fmt, makers[fmt]())
        try:
            tokens, offset = ds.process(row)
        except Exception as e:  # a template error names no row; add where it came from
            raise DataError(path, line, None, f"cannot tokenize: {e}") from None
        tokens = list(tokens)
        if len(tokens) < 2:
            raise DataError(path, line, None, "fewer than two tokens: nothing to learn")
        if offset >= len(tokens):
            raise DataError(path, line, None, "the prompt covers the whole row: no completion tokens")
        out.append((tokens, int(offset)))
    return out


def make_batches(samples: list[tuple[list[int], int]], batch_size: int, max_len: int) -> list:
    """Length-sorted fixed batches (as mlx-lm): (tokens int32 (B, T), lengths int32 (B, 2))."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i][0]))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        lengths = [min(len(samples[i][0]), max_len) for i in idx]
        width = min(1 + PAD_MULTIPLE * ((max(lengths) + PAD_MULTIPLE - 1) // PAD_MULTIPLE), max_len)
        tokens = np.zeros((len(idx), width), np.int32)
        for row, (i, n) in enumerate(zip(idx, lengths)):
            tokens[row, :n] = samples[i][0][:n]
        lens = np.array([[min(samples[i][1], n - 1), n] for i, n in zip(idx, lengths)], np.int32)
        batches.append((tokens, lens))
    return batches


def lm_loss_sum(model, tokens, lengths):
    """Summed next-token cross-entropy over completion tokens, and their count.

    Target j is token j+1; it counts when offset <= j+1 < length (mlx-lm's default_loss also
    counts one padding target per row, `<= length`; we do not).
    """
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = (steps >= lengths[:, 0:1]) & (steps < lengths[:, 1:])
    ce = nn.losses.cross_entropy(logits, targets) * mask
    return ce.astype(mx.float32).sum(), mask.sum()


def lm_loss(model, tokens, lengths):
    """Mean next-token cross-entropy over completion tokens, and their count."""
    total, ntoks = lm_loss_sum(model, tokens, lengths)
    return total / ntoks, ntoks


def loss_targets(lengths: np.ndarray) -> int:
    """The targets lm_loss counts in a batch, from its (offset, length) rows alone."""
    return int(np.maximum(lengths[:, 1] - np.maximum(lengths[:, 0], 1), 0).sum())


def adapter_config(cfg: TrainConfig, model_source: str) -> dict:
    """mlx-lm's adapter_config.json (what `load_adapters` and `mlx_lm.generate` read)."""
    out = {"model": model_source, "fine_tune_type": cfg.fine_tune_type,
           "num_layers": cfg.num_layers, "mode": cfg.mode, "mask_prompt": cfg.mask_prompt,
           "max_seq_length": cfg.max_seq_length, "seed": cfg.seed}
    if cfg.fine_tune_type != "full":
        lp = {"rank": cfg.lora_rank, "scale": cfg.lora_scale, "dropout": cfg.lora_dropout}
        if cfg.lora_keys:
            lp["keys"] = list(cfg.lora_keys)
        out["lora_parameters"] = lp
    return out


class LoraTask:
    """A TrainTask over an mlx-lm model and a folder of train.jsonl / valid.jsonl."""

    kind = "lora"

    def __init__(self, cfg: TrainConfig, model_source: str, data_dir: str | Path):
        from clara.models.loading import load_model

        self.cfg = cfg
        self.model_source = model_source
        data_dir = Path(data_dir)
        train_file, valid_file = data_dir / "train.jsonl", data_dir / "valid.jsonl"
        if not train_file.is_file():
            raise UserError(f"{data_dir}: no train.jsonl")
        loaded = load_model(model_source, dtype=cfg.dtype)
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        mask = cfg.mask_prompt and cfg.mode == "sft"
        train = tokenize_file(train_file, self.tokenizer, cfg.mode, mask)
        valid = tokenize_file(valid_file, self.tokenizer, cfg.mode, mask) if valid_file.is_file() else []
        if not train:
            raise UserError(f"{train_file}: no rows")
        longest = max(len(t) for t, _ in train + valid)
        if longest > cfg.max_seq_length:
            log.warning("some rows have %d tokens: truncated to max_seq_length=%d",
                        longest, cfg.max_seq_length)
        self._train = make_batches(train, cfg.batch_size, cfg.max_seq_length)
        self._valid = make_batches(valid, cfg.batch_size, cfg.max_seq_length)
        self.n_train_rows, self.n_valid_rows = len(train), len(valid)
        self._setup_trainable()
        if cfg.from_adapter:
            self.load_weights(Path(cfg.from_adapter))

    def _setup_trainable(self) -> None:
        from mlx_lm.tuner.utils import linear_to_lora_layers

        cfg, model = self.cfg, self.model
        n_layers = len(model.layers)
        if cfg.num_layers > n_layers:
            raise UserError(f"num_layers: {cfg.num_layers} but the model has {n_layers} layers")
        model.freeze()
        mx.random.seed(cfg.seed)  # LoRA init draws random numbers: fix them by the run's seed
        if cfg.fine_tune_type == "full":
            if self.loaded.quantization:
                raise UserError("fine_tune_type: full needs a non-quantized base (use lora or dora)")
            if cfg.num_layers < 0:
                # every weight, embeddings and head included: this is also how a model built
                # from scratch (clara model init-tiny) is pretrained
                model.unfreeze()
            else:
                for layer in model.layers[-cfg.num_layers:] if cfg.num_layers else []:
                    layer.unfreeze()
        else:
            lp = adapter_config(cfg, self.model_source)["lora_parameters"]
            try:
                linear_to_lora_layers(model, cfg.num_layers, lp,
                                      use_dora=cfg.fine_tune_type == "dora")
            except (ValueError, KeyError) as e:
                raise UserError(f"lora: {e}") from None
            from clara.method.adapters import cast_lora_layers

            cast_lora_layers(model)  # no float32 copies of bfloat16 activations
        if not tree_flatten(model.trainable_parameters()):
            raise UserError("nothing to train: check lora_keys and num_layers")

    # -- TrainTask ----------------------------------------------------------------------------
    def num_train_batches(self) -> int:
        return len(self._train)

    def train_batches(self, epoch: int, seed: int):
        order = np.random.default_rng([seed, epoch]).permutation(len(self._train))
        for i in order:
            tokens, lengths = self._train[i]
            yield mx.array(tokens), mx.array(lengths)

    def train_shards(self, epoch: int, seed: int, rank: int, size: int):
        """Rank `rank`'s rows of every batch of train_batches (same order), with its loss
        counts and the whole batch's (every rank reads the whole batch: no collective needed
        for them); a rank left without rows gets one row with nothing to learn (share 0)."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self._train))
        for i in order:
            tokens, lengths = self._train[i]
            totals = {"tokens": loss_targets(lengths)}
            rows = np.array_split(np.arange(len(tokens)), size)[rank]
            real = len(rows) > 0
            tokens, lengths = (tokens[rows], lengths[rows]) if real else \
                (tokens[:1], np.zeros((1, 2), np.int32))
            yield (mx.array(tokens), mx.array(lengths)), {"tokens": loss_targets(lengths)}, \
                real, totals

    def shared_loss(self, model, batch, counts, totals):
        """This shard's part of the global batch's mean loss: its summed CE over all tokens."""
        total, ntoks = lm_loss_sum(model, *batch)
        return total / mx.maximum(totals["tokens"], 1), ntoks, {}

    def valid_batches(self):
        for tokens, lengths in self._valid:
            yield mx.array(tokens), mx.array(lengths)

    def loss(self, model, batch):
        loss, ntoks = lm_loss(model, *batch)
        return loss, ntoks, {}

    def batch_tokens(self, batch) -> int:
        return int(np.asarray(batch[1])[:, 1].sum())

    def save_weights(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = dict(tree_flatten(self.model.trainable_parameters()))
        with io.atomic_path(directory / "adapters.safetensors") as tmp:
            mx.save_safetensors(str(tmp.with_suffix(".safetensors")), weights)
            tmp.with_suffix(".safetensors").replace(tmp)
        io.write_json(directory / "adapter_config.json", adapter_config(self.cfg, self.model_source))

    def load_weights(self, directory: Path) -> None:
        directory = Path(directory)
        file = directory / "adapters.safetensors"
        if not file.is_file():
            raise UserError(f"{directory}: no adapters.safetensors")
        weights = mx.load(str(file))
        own = dict(tree_flatten(self.model.trainable_parameters()))
        for name, w in weights.items():
            if name not in own:
                raise UserError(f"{file}: {name}: not a trainable parameter of this run "
                                 "(fine_tune_type, num_layers or lora_keys differ)")
            if w.shape != own[name].shape:
                raise UserError(f"{file}: {name}: shape {tuple(w.shape)} but this run has "
                                 f"{tuple(own[name].shape)} (lora_rank differs?)")
        self.model.load_weights(list(weights.items()), strict=False)

    def describe(self) -> dict:
        trainable = sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))
        total = sum(v.size for _, v in tree_flatten(self.model.parameters()))
        return {"model": self.model_source, "dtype": self.loaded.dtype,
                "quantization": self.loaded.quantization, "trainable_parameters": int(trainable),
                "total_parameters": int(total), "train_rows": self.n_train_rows,
                "valid_rows": self.n_valid_rows, "train_batches": len(self._train),
                "valid_batches": len(self._valid)}


def lora_factory(run_config: dict, run_dir: Path) -> LoraTask:
    cfg = TrainConfig(**run_config["config"])
    cfg.validate()  # the check the CLI and the app ran, again on what run.toml holds
    resolved = run_config.get("resolved", {})
    return LoraTask(cfg, resolved.get("model", cfg.model), resolved.get("data", cfg.data))


register("lora", lora_factory)
