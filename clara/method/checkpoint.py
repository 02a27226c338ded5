"""CLaRa checkpoints: the adapters and the added embedding rows as safetensors, plus a JSON config.

A checkpoint folder holds
  clara_config.json       ClaraConfig (doc_max_tokens, compression_rate, n_mem, top_k, stage,
                          base model, LoRA settings), the tokenizer additions {token: id}, the
                          adapter names and the hidden size;
  adapters.safetensors    every adapter's lora_a / lora_b, keyed by module path (the adapter name
                          is part of the path: ...q_proj.adapters.<name>.lora_a);
  embeddings.safetensors  the float rows of the added tokens (memory, special) and, for an
                          untied head, their output rows.
The frozen base is not copied: `base_model` names it.

Loading for a stage follows the reference's rules (clara-method §1.7): the same stage loads
everything (resume, inference); stage 1 ignores a query reasoner; stage 2 keeps the compressor
and starts a FRESH generator; stage 3 loads compressor and generator and, when the checkpoint has
no query reasoner, creates it as a copy of the compressor.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from clara import io
from clara.errors import UserError
from clara.method.config import ClaraConfig, check_geometry
from clara.method.model import ClaraModel

CONFIG_FILE = "clara_config.json"
ADAPTERS_FILE = "adapters.safetensors"
EMBEDDINGS_FILE = "embeddings.safetensors"
FORMAT = 1


def _save_safetensors(path: Path, arrays: dict[str, mx.array]) -> None:
    with io.atomic_path(path) as tmp:
        # mx.save_safetensors appends ".safetensors" to other names: write there, move back.
        target = tmp.with_name(tmp.name + ".safetensors")
        mx.save_safetensors(str(target), arrays)
        target.replace(tmp)


def adapter_weights(model: ClaraModel) -> dict[str, mx.array]:
    return {k: v for k, v in tree_flatten(model.parameters())
            if ".adapters." in k and k.rsplit(".", 1)[-1] in ("lora_a", "lora_b")}


def adapter_digests(model: ClaraModel) -> dict[str, str]:
    """sha256 (16 hex) of each adapter's exact weight bytes, keys sorted: equal digests mean
    bit-identical adapters."""
    import hashlib

    import numpy as np

    out = {}
    weights = adapter_weights(model)
    for name in model.adapter_names():
        h = hashlib.sha256()
        for k in sorted(k for k in weights if f".adapters.{name}." in k):
            h.update(k.replace(f".adapters.{name}.", ".adapters.*.").encode())
            h.update(np.array(weights[k].astype(mx.float32)).tobytes())
        out[name] = h.hexdigest()[:16]
    return out


def embedding_weights(model: ClaraModel) -> dict[str, mx.array]:
    out = {"memory": model.embedding.memory, "special": model.embedding.special}
    if "lm_head" in model.lm and hasattr(model.lm.lm_head, "rows"):
        out["head_rows"] = model.lm.lm_head.rows
    return out


def save(model: ClaraModel, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _save_safetensors(directory / ADAPTERS_FILE, adapter_weights(model))
    _save_safetensors(directory / EMBEDDINGS_FILE, embedding_weights(model))
    io.write_json(directory / CONFIG_FILE, {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "tokenizer_additions": model.special.added(),
        "adapters": model.adapter_names(),
        "hidden_size": model.hidden_size,
    })
    return directory


def read_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise UserError(f"{directory}: no {CONFIG_FILE}: not a CLaRa checkpoint")
    meta = io.read_json(file)
    if meta.get("format") != FORMAT:
        raise UserError(f"{file}: format {meta.get('format')!r} is not {FORMAT}")
    for name in (ADAPTERS_FILE, EMBEDDINGS_FILE):
        if not (directory / name).is_file():
            raise UserError(f"{directory}: no {name}")
    return meta


def _adapter_of(key: str) -> str:
    return key.split(".adapters.", 1)[1].split(".", 1)[0]


def load_into(model: ClaraModel, directory: str | Path, adapters=None,
              rename: dict[str, str] | None = None) -> None:
    """Copy a checkpoint's weights into `model`: the embedding rows and the named adapters
    (default: all stored); `rename` maps stored adapter names to the model's."""
    directory = Path(directory)
    meta = read_meta(directory)
    if meta["tokenizer_additions"] != model.special.added():
        raise UserError(f"{directory}: its tokenizer additions differ from this model's "
                         "(another base model or n_mem?)")
    if meta["hidden_size"] != model.hidden_size:
        raise UserError(f"{directory}: hidden size {meta['hidden_size']} but the base model "
                         f"has {model.hidden_size}")
    own = dict(tree_flatten(model.parameters()))
    stored = mx.load(str(directory / ADAPTERS_FILE))
    rename = rename or {}
    weights = []
    for key, w in stored.items():
        name = _adapter_of(key)
        if adapters is not None and name not in adapters:
            continue
        target = key.replace(f".adapters.{name}.", f".adapters.{rename.get(name, name)}.")
        if target not in own:
            raise UserError(f"{directory / ADAPTERS_FILE}: {key}: no such adapter weight in this "
                             "model (lora_keys or lora_layers differ?)")
        if w.shape != own[target].shape:
            raise UserError(f"{directory / ADAPTERS_FILE}: {key}: shape {tuple(w.shape)}, model "
                             f"has {tuple(own[target].shape)} (lora_rank differs?)")
        weights.append((target, w))
    emb = mx.load(str(directory / EMBEDDINGS_FILE))
    prefix = {"memory": "lm.model.embed_tokens.memory", "special": "lm.model.embed_tokens.special",
              "head_rows": "lm.lm_head.rows"}
    for key, w in emb.items():
        target = prefix.get(key)
        if target not in own or own[target].shape != w.shape:
            raise UserError(f"{directory / EMBEDDINGS_FILE}: {key}: does not fit this model")
        weights.append((target, w))
    model.load_weights(weights, strict=False)
    mx.eval(model.parameters())


def load(directory: str | Path, stage: str | None = None, inference: bool = False,
         lm=None, tokenizer=None, overrides: dict | None = None, seed: int = 0) -> ClaraModel:
    """A ClaraModel from a checkpoint, for training `stage` (default: the checkpoint's own stage)
    or, with inference=True, with every stored adapter loaded and nothing trainable.

    `lm`/`tokenizer` give an already loaded, untouched base (else `base_model` is loaded);
    `overrides` replace config fields that do not change the geometry (top_k, max_len, ...).
    """
    directory = Path(directory)
    meta = read_meta(directory)
    saved = ClaraConfig.from_dict(meta["config"])
    values = {**meta["config"], **(overrides or {})}
    check_geometry(meta["config"], overrides or {}, directory)
    target = saved.stage if (inference or stage is None) else stage
    values["stage"] = target
    cfg = ClaraConfig.from_dict(values)
    stored = meta["adapters"]
    mx.random.seed(seed)  # fresh adapters (stage 2 generator) draw random numbers
    model = ClaraModel.from_base(cfg, lm, tokenizer)
    if inference:
        for name in stored:
            if name not in model.adapter_names():
                model.add_adapter(name)
        load_into(model, directory)
        model.set_trainable(adapters=(), memory=False)
        model.eval()
        return model
    if target == saved.stage:
        load_into(model, directory, adapters=model.adapter_names())
    elif target == "stage1":
        load_into(model, directory, adapters=("compressor", "generator"))
    elif target == "stage2":
        # the generator starts fresh (the reference), unless asked to continue stage 1's
        load_into(model, directory, adapters=("compressor",) if cfg.stage2_generator == "fresh"
                  else ("compressor", "generator"))
    else:  # stage 3
        load_into(model, directory, adapters=("compressor", "generator"))
        if "query_reasoner" in stored:
            load_into(model, directory, adapters=("query_reasoner",))
        else:
            load_into(model, directory, adapters=("compressor",),
                      rename={"compressor": "query_reasoner"})
    model.set_trainable()
    return model
