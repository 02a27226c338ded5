"""Quantize a model folder through mlx-lm's conversion (`mlx_lm.convert`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from clara.errors import UserError
from clara.models.loading import check_model_folder


def quantize_folder(src: str | Path, dst: str | Path, bits: int = 4,
                    group_size: int = 64) -> Path:
    """Write a `bits`-bit affine-quantized copy of `src` to `dst` (built aside, then renamed)."""
    from mlx_lm import convert

    src, dst = Path(src), Path(dst)
    config = check_model_folder(src)
    if config.get("quantization"):
        raise UserError(f"{src}: already quantized ({config['quantization'].get('bits')}-bit)")
    if bits not in (2, 3, 4, 5, 6, 8):
        raise UserError(f"bits: {bits} is not one of 2, 3, 4, 5, 6, 8")
    hidden = config.get("hidden_size")
    if hidden and hidden % group_size:
        raise UserError(f"group_size: {group_size} does not divide hidden_size {hidden}")
    if dst.exists():
        raise UserError(f"{dst}: already exists")
    tmp = dst.with_name(f".{dst.name}.building")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        convert(str(src), mlx_path=str(tmp), quantize=True, q_bits=bits, q_group_size=group_size)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{src}: quantization failed: {e}") from None
    for extra in ("clara_tiny.json",):  # our own notes about the model travel with it
        if (src / extra).is_file():
            shutil.copy2(src / extra, tmp / extra)
    tmp.rename(dst)
    return dst
