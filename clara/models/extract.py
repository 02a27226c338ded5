"""Extract the text backbone of a vision / omni checkpoint into an mlx-lm model folder.

Input: a local Hugging Face folder (config.json, *.safetensors, tokenizer files). Accepted:
- `hyperclovax_vision_v2` and the older `vlm` / `hyperclovax_vlm` configs of HyperCLOVA X SEED
  (Think-32B, Omni-8B, Vision-Instruct), whose `text_config` (or `language_config`) is a
  `hyperclovax` (or `llama`) model;
- any `*ForConditionalGeneration` whose text part (`text_config`, `language_config`, `llm_config`)
  has a model type mlx-lm (with clara's additions) supports;
- a plain text checkpoint, which is copied as it is.

Weight-name layouts recognised (first matching prefix wins; everything else is dropped and
counted by prefix):

| source prefix                    | becomes    | found in                                       |
|----------------------------------|------------|------------------------------------------------|
| `model.language_model.model.`    | `model.`   | HyperCLOVA X SEED hub checkpoints (vlm, v2)    |
| `model.language_model.lm_head.`  | `lm_head.` |                                                |
| `language_model.model.`          | `model.`   | llava-style (transformers < 4.52), SEED Vision |
| `language_model.lm_head.`        | `lm_head.` |                                                |
| `model.language_model.`          | `model.`   | transformers >= 4.52 / 5 composite models      |
| `language_model.`                | `model.`   | bare language-model prefix                     |
| `lm_head.`                       | `lm_head.` | transformers >= 4.52 / 5 composite models      |

Memory stays bounded by one shard: shards are read lazily (`mx.load` on a safetensors file reads
a tensor only when it is used) and every input shard becomes at most one output shard.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clara import io
from clara.errors import UserError
from clara.models.loading import read_model_config

TEXT_CONFIG_KEYS = ("text_config", "language_config", "llm_config")

# Composite model types whose text part may omit its own model_type.
DEFAULT_TEXT_TYPE = {"hyperclovax_vision_v2": "hyperclovax", "vlm": "hyperclovax",
                     "hyperclovax_vlm": "llama"}

LAYOUTS: tuple[tuple[str, str], ...] = (
    ("model.language_model.model.", "model."),
    ("model.language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.language_model.", "model."),
    ("language_model.", "model."),
    ("lm_head.", "lm_head."),
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "generation_config.json")

# muP keys that only the hyperclovax architecture applies (attention_multiplier aside, which
# Granite-derived configs always write).
MUP_KEYS = ("embedding_multiplier", "residual_multiplier", "logits_scaling")

# Top-level config keys a text config inherits when it lacks them.
INHERITED_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype")


@dataclass
class ExtractReport:
    source: str = field(metadata={"help": "The checkpoint folder read."})
    dest: str = field(metadata={"help": "The mlx-lm model folder written."})
    source_type: str = field(metadata={"help": "model_type of the source config."})
    text_type: str = field(metadata={"help": "model_type of the extracted text model."})
    kept: int = field(default=0, metadata={"help": "Tensors kept."})
    kept_bytes: int = field(default=0, metadata={"help": "Bytes of the tensors kept."})
    dropped: dict = field(default_factory=dict, metadata={"help": "Dropped tensors by prefix."})
    dropped_files: list = field(default_factory=list, metadata={"help": "Files not carried over."})
    shards_in: int = field(default=0, metadata={"help": "Safetensors files read."})
    shards_out: int = field(default=0, metadata={"help": "Safetensors files written."})
    tie_word_embeddings: bool = field(default=False, metadata={"help": "Head tied to embeddings."})
    notes: list = field(default_factory=list, metadata={"help": "Adjustments made to the config."})
    thinking: dict | None = field(default=None, metadata={"help": "Reasoning-block tokens."})

    def to_dict(self) -> dict:
        return asdict(self)


def is_supported_text_type(model_type: str) -> bool:
    """True when `mlx_lm.load` has an architecture for `model_type` (clara's included)."""
    import clara.models  # noqa: F401  (registers clara's model types)
    from mlx_lm.utils import _get_classes  # the lookup mlx_lm.load itself uses

    try:
        _get_classes({"model_type": model_type})
    except ValueError:
        return False
    return True


def text_part(config: dict, cfg_file: Path) -> tuple[dict, str | None]:
    """(text config, key it came from or None for a plain text checkpoint). Raises UserError
    naming the type when there is no supported text model in it."""
    source_type = config.get("model_type")
    for key in TEXT_CONFIG_KEYS:
        sub = config.get(key)
        if isinstance(sub, dict):
            text = dict(sub)
            text_type = text.get("model_type") or DEFAULT_TEXT_TYPE.get(source_type)
            if not text_type:
                raise UserError(f"{cfg_file}: {key}.model_type: missing")
            if not is_supported_text_type(text_type):
                raise UserError(f"{cfg_file}: {key}.model_type: {text_type!r} (text part of "
                                 f"{source_type!r}) is not a model type mlx-lm supports")
            text["model_type"] = text_type
            return text, key
    if not source_type:
        raise UserError(f"{cfg_file}: model_type: missing")
    if not is_supported_text_type(source_type):
        raise UserError(f"{cfg_file}: model_type: {source_type!r} is not supported: it is not a "
                         f"text model type mlx-lm knows and has no {'/'.join(TEXT_CONFIG_KEYS)}")
    return dict(config), None


def map_key(key: str) -> str | None:
    """The mlx-lm name of a composite checkpoint's language-model tensor, or None to drop it."""
    for prefix, new in LAYOUTS:
        if key.startswith(prefix):
            return new + key[len(prefix):]
    return None


def drop_group(key: str) -> str:
    """The prefix a dropped tensor is counted under (`model.vision_model`, `mm_projector`...)."""
    parts = key.split(".")
    depth = 2 if parts[0] == "model" and len(parts) > 2 else 1
    return ".".join(parts[:depth])


def weight_files(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{index}: weight_map: missing or invalid") from None
        files = [src / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{index}: weight_map: names missing shard files: {', '.join(missing)}")
        return files
    files = sorted(src.glob("*.safetensors"))
    if not files:
        extra = " (PyTorch .bin weights are not supported: save them as safetensors)" \
            if list(src.glob("*.bin")) else ""
        raise UserError(f"{src}: no *.safetensors weights{extra}")
    return files


def shard_name(i: int, n: int) -> str:
    return "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    # Header only: no tensor data is read here.
    with safe_open(str(path), framework="numpy") as f:
        return list(f.keys())


def copy_tokenizer(src: Path, dest: Path) -> list[str]:
    """Copy the tokenizer (and its chat template) over; returns the files copied."""
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
            copied.append(name)
    if not {"tokenizer.json", "tokenizer.model"} & set(copied):
        raise UserError(f"{src}: no tokenizer.json or tokenizer.model: the text model needs one")
    # Vision checkpoints often keep the chat template with the processor (chat_template.json),
    # where AutoTokenizer does not look: give it to the tokenizer.
    tok_cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8")) \
        if "tokenizer_config.json" in copied else {}
    processor_template = src / "chat_template.json"
    if ("chat_template.jinja" not in copied and not tok_cfg.get("chat_template")
            and processor_template.is_file()):
        template = json.loads(processor_template.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str) and template:
            io.write_text(dest / "chat_template.jinja", template)
            copied += ["chat_template.json", "chat_template.jinja"]
    return copied


def thinking_tokens(model_dir: str | Path) -> dict | None:
    """The reasoning block of a model folder's tokenizer (see `clara.models.thinking`)."""
    from mlx_lm.utils import load_tokenizer

    from clara.models.thinking import reasoning_markers

    markers = reasoning_markers(load_tokenizer(Path(model_dir)))
    return markers.to_dict() if markers else None


def extract_text(src: str | Path, dest: str | Path) -> ExtractReport:
    """Write the text model of checkpoint `src` to the new folder `dest` (mlx-lm format).

    The folder is built under a hidden name and renamed at the end: a failure leaves nothing.
    """
    import mlx.core as mx

    src, dest = Path(src).expanduser(), Path(dest)
    if dest.exists():
        raise UserError(f"{dest}: already exists")
    config = read_model_config(src)
    cfg_file = src / "config.json"
    text, text_key = text_part(config, cfg_file)
    q = text.get("quantization_config") or (config.get("quantization_config") if text_key else None)
    if q:
        method = q.get("quant_method", "?") if isinstance(q, dict) else "?"
        raise UserError(f"{cfg_file}: quantization_config: {method!r}-quantized checkpoints are "
                         "not supported: extract from the full-precision one, then quantize")
    report = ExtractReport(source=str(src), dest=str(dest),
                           source_type=str(config.get("model_type")), text_type=text["model_type"])

    files = weight_files(src)
    report.shards_in = len(files)
    # Plan: which tensors of which shard go where (headers only).
    plan: list[tuple[Path, dict[str, str]]] = []
    dropped: Counter = Counter()
    targets: dict[str, str] = {}
    for path in files:
        mapping = {}
        for key in _safetensors_keys(path):
            new = key if text_key is None else map_key(key)
            if new is None:
                dropped[drop_group(key)] += 1
                continue
            if new in targets:
                raise UserError(f"{path}: {key}: maps to {new}, as {targets[new]} already does")
            targets[new] = key
            mapping[key] = new
        if mapping:
            plan.append((path, mapping))
    if "model.embed_tokens.weight" not in targets:
        seen = sorted({drop_group(k) for k in dropped} | {drop_group(k) for k in targets})
        raise UserError(f"{src}: no language-model weights under a known prefix "
                         f"(expected e.g. model.language_model.model.embed_tokens.weight); "
                         f"prefixes found: {', '.join(seen) or 'none'}")
    report.dropped = dict(sorted(dropped.items()))

    tmp = dest.with_name(f".{dest.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        weight_map: dict[str, str] = {}
        embed_rows = None
        n = len(plan)
        for i, (path, mapping) in enumerate(plan, start=1):
            weights = mx.load(str(path))  # lazy: only the tensors used below are read
            out = {new: weights[old] for old, new in mapping.items()}
            if "model.embed_tokens.weight" in out:
                embed_rows = out["model.embed_tokens.weight"].shape[0]
            name = shard_name(i, n)
            mx.save_safetensors(str(tmp / name), out, metadata={"format": "mlx"})
            report.kept += len(out)
            report.kept_bytes += sum(v.nbytes for v in out.values())
            weight_map.update({k: name for k in out})
            del weights, out
            mx.clear_cache()
        report.shards_out = n
        io.write_json(tmp / "model.safetensors.index.json",
                      {"metadata": {"total_size": report.kept_bytes},
                       "weight_map": dict(sorted(weight_map.items()))}, indent=4)

        if text_key is not None:
            for k in INHERITED_KEYS:
                if k not in text and k in config:
                    text[k] = config[k]
            if text["model_type"] == "hyperclovax" and not text.get("architectures"):
                text["architectures"] = ["HyperCLOVAXForCausalLM"]
        # The weights decide: a separate head is kept and used; without one the head is tied.
        tied = "lm_head.weight" not in weight_map
        if text.get("tie_word_embeddings") is not None and bool(text["tie_word_embeddings"]) != tied:
            report.notes.append(f"tie_word_embeddings {text['tie_word_embeddings']} -> {tied} "
                                "(lm_head.weight is " + ("absent)" if tied else "present)"))
        text["tie_word_embeddings"] = tied
        report.tie_word_embeddings = tied
        if embed_rows is not None and text.get("vocab_size") != embed_rows:
            report.notes.append(f"vocab_size {text.get('vocab_size')} -> {embed_rows} "
                                "(rows of the embedding)")
            text["vocab_size"] = embed_rows
        mup = sorted(k for k in MUP_KEYS if text.get(k) not in (None, 1, 1.0))
        if mup and text["model_type"] != "hyperclovax":
            report.notes.append(f"warning: {', '.join(mup)} set, but mlx-lm's "
                                f"{text['model_type']!r} ignores them (if this is a HyperCLOVA X "
                                "model, set model_type to 'hyperclovax')")
        io.write_json(tmp / "config.json", text, indent=4)

        copied = copy_tokenizer(src, tmp)
        skip = {"config.json", "model.safetensors.index.json", *copied}
        report.dropped_files = sorted(
            p.name for p in src.iterdir()
            if p.is_file() and p.name not in skip and not p.name.endswith(".safetensors")
            and not p.name.startswith("."))
        report.thinking = thinking_tokens(tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
