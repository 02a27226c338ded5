"""Fuse a trained adapter into its base, giving a new standalone model folder (mlx-lm's fuse).

Used to turn a run into a model: a LoRA/DoRA adapter is merged into the weights, a full
fine-tune (or the pretraining of a model built from scratch) simply becomes the weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clara import io
from clara.errors import UserError


def fuse_adapter(source: str, adapter_dir: str | Path, dst: str | Path,
                 dequantize: bool = False) -> Path:
    """Write base `source` + adapter `adapter_dir` as one model at `dst` (built aside, renamed)."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, save

    from clara.models.loading import load_model

    dst = Path(dst)
    if dst.exists():
        raise UserError(f"{dst}: already exists")
    loaded = load_model(source, adapter_path=adapter_dir)
    model, config = loaded.model, dict(loaded.config)
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules()
             if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize and config.get("quantization"):
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    tmp = dst.with_name(f".{dst.name}.building")
    if tmp.exists():
        shutil.rmtree(tmp)
    save(tmp, source, model, loaded.tokenizer, config, donate_model=False)
    io.write_json(tmp / "clara_fused.json", {"base": source, "adapter": str(adapter_dir)})
    tmp.rename(dst)
    return dst
