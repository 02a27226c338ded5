"""Tiny adapters and CLaRa checkpoints for the chat and evaluation tests (real MLX, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten


def make_lora_adapter(out: Path, base: Path, seed: int, rank: int = 4, scale: float = 20.0,
                      record_base: bool = True) -> Path:
    """An mlx-lm adapter folder made with mlx-lm's own LoRA layers, lora_b random so that it
    changes the outputs (a freshly initialised adapter would be the identity)."""
    import mlx_lm
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(str(base))
    model.freeze()
    params = {"rank": rank, "scale": scale, "dropout": 0.0}
    mx.random.seed(seed)
    linear_to_lora_layers(model, -1, params)
    weights = {k: (mx.random.normal(v.shape) * 0.05 if k.endswith("lora_b") else v)
               for k, v in tree_flatten(model.trainable_parameters())}
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    cfg = {"fine_tune_type": "lora", "num_layers": -1, "lora_parameters": params}
    if record_base:
        cfg["model"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def make_clara_checkpoint(out: Path, base: Path, stage: str = "stage2", top_k: int = 2,
                          seed: int = 0) -> Path:
    """A saved CLaRa checkpoint of a tiny base (untrained adapters: enough to answer)."""
    from clara.method import checkpoint
    from clara.method.config import ClaraConfig
    from clara.method.model import ClaraModel

    mx.random.seed(seed)
    cfg = ClaraConfig(base_model=str(base), stage=stage, doc_max_tokens=16, compression_rate=4,
                      top_k=top_k, max_len=256, lora_rank=4, lora_dropout=0.0)
    model = ClaraModel.from_base(cfg)
    # make the generator non-trivial, so answers depend on the checkpoint's weights
    for layer in model._loras:
        for p in layer.adapters.values():
            p.lora_b = mx.random.normal(p.lora_b.shape) * 0.02
    checkpoint.save(model, out)
    return out
