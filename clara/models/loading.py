"""Load a base model (and optionally an adapter) through mlx-lm, with the platform dtype policy.

Everything in `clara` that loads a model goes through `load_model`, so that:
- a missing or broken model folder gives one clear line, not a traceback from deep in mlx-lm;
- floating weights are cast to the platform's fast dtype (float32 on the CPU, bfloat16 on Metal
  and CUDA), unless the caller or `CLARA_DTYPE` says otherwise;
- nothing is ever downloaded by accident when the machine is offline (HF_HUB_OFFLINE fails fast).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from clara import io
from clara.errors import UserError, ModelError, UsageError

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    config: dict
    source: str
    dtype: str = field(metadata={"help": "Dtype of the floating weights after loading."})
    quantization: dict | None = None
    adapter_path: str | None = None
    load_seconds: float = 0.0

    def describe(self) -> dict:
        return {"source": self.source, "dtype": self.dtype, "quantization": self.quantization,
                "adapter": self.adapter_path, "model_type": self.config.get("model_type"),
                "load_seconds": round(self.load_seconds, 3)}


def read_model_config(path: Path) -> dict:
    """A model folder's config.json as a dict; a UserError naming the problem otherwise."""
    cfg_file = path / "config.json"
    if not path.is_dir():
        raise ModelError(f"{path}: model folder does not exist")
    if not cfg_file.is_file():
        raise ModelError(f"{path}: no config.json: not an mlx-lm / Hugging Face model folder")
    try:
        config = io.read_json(cfg_file)
    except UserError as e:  # a broken config.json is a broken model, not bad training data
        raise ModelError(str(e)) from None
    if not isinstance(config, dict):
        raise ModelError(f"{cfg_file}: not a JSON object")
    return config


def check_model_folder(path: Path) -> dict:
    """Read and sanity-check a local model folder's config; raise a UserError naming the problem."""
    cfg_file = path / "config.json"
    config = read_model_config(path)
    if "model_type" not in config:
        raise ModelError(f"{cfg_file}: model_type: missing (mlx-lm needs it to pick the architecture)")
    if not list(path.glob("model*.safetensors")):
        raise ModelError(f"{path}: no model*.safetensors weights")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ModelError(f"{path}: no tokenizer.json or tokenizer.model")
    return config


def _check_adapter(adapter_path: str | Path) -> Path:
    p = Path(adapter_path)
    if not p.is_dir():
        raise ModelError(f"{p}: adapter folder does not exist")
    for name in ("adapter_config.json", "adapters.safetensors"):
        if not (p / name).is_file():
            raise ModelError(f"{p}: no {name}: not an mlx-lm adapter folder")
    return p


def cast_model(model, dtype: str) -> None:
    """Cast floating parameters to `dtype` (quantized weights and integer tensors are kept)."""
    import mlx.core as mx

    target = getattr(mx, dtype)
    model.set_dtype(target, predicate=lambda d: mx.issubdtype(d, mx.floating))


def load_model(source: str, adapter_path: str | Path | None = None, dtype: str | None = None,
               lazy: bool = False) -> LoadedModel:
    """Load `source` (a local mlx-lm folder or a HF id) through mlx-lm, cast, attach the adapter."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.tuner.utils import load_adapters

    from clara.platform import default_dtype

    dtype = dtype or default_dtype()
    if dtype not in DTYPES:
        raise UsageError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        check_model_folder(path)
        source = str(path)
    adapter = _check_adapter(adapter_path) if adapter_path else None
    tic = time.perf_counter()
    try:
        model, tokenizer, config = mlx_lm.load(source, lazy=True, return_config=True)
    except UserError:
        raise
    except Exception as e:  # mlx-lm raises many kinds; show the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{source}: cannot load model: {first}") from None
    quant = config.get("quantization")
    if not quant:
        cast_model(model, dtype)
    if adapter is not None:
        try:
            load_adapters(model, str(adapter))
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{adapter}: cannot load adapter: {first}") from None
        if not quant:
            cast_model(model, dtype)
        model.eval()
    if not lazy:
        mx.eval(model.parameters())
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, source=source,
                       dtype=dtype, quantization=quant,
                       adapter_path=str(adapter) if adapter else None,
                       load_seconds=time.perf_counter() - tic)
