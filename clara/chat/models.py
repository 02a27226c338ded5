"""What chat and evaluation talk to: a base model, optionally with an adapter, kept in a cache.

Adapter references (`resolve_adapter`):
    RUN               a run of the workspace (id, unique prefix or `last`): its best checkpoint,
                      else its last one
    RUN:best | RUN:last | RUN:step-N | RUN:N      a given checkpoint of that run
    PATH              an mlx-lm adapter folder (adapter_config.json + adapters.safetensors), a
                      CLaRa checkpoint folder (clara_config.json), or a run folder
A LoRA run gives an mlx-lm adapter; a CLaRa run (kind clara-stage*) gives a CLaRa checkpoint.

`ModelCache` keeps bases loaded, keyed by (source, dtype). Switching mlx-lm adapters on a cached
base unwraps the LoRA layers and restores the base's own weight arrays, then applies the next
adapter: the base is never read from disk again. A CLaRa checkpoint changes its base (added
tokens, memory rows, its own adapters), so it gets its own entry.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from clara.errors import ClaraError
from clara.workspace import Workspace

ADAPTER_FILES = ("adapter_config.json", "adapters.safetensors")
CLARA_CONFIG = "clara_config.json"
# Config keys that must agree between an adapter's base and the base it is put on.
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class AdapterRef:
    kind: str = field(metadata={"help": "'lora' (an mlx-lm adapter) or 'clara' (a CLaRa "
                                        "checkpoint)."})
    path: Path = field(metadata={"help": "The adapter or checkpoint folder."})
    base: str | None = field(default=None, metadata={"help": "The base it was trained on."})
    label: str = field(default="", metadata={"help": "How to name it in logs and tables."})

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "base": self.base,
                "label": self.label}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ClaraError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def adapter_at(path: Path, label: str | None = None, base: str | None = None) -> AdapterRef:
    """An AdapterRef for a folder that must be an mlx-lm adapter or a CLaRa checkpoint."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ClaraError(f"{path}: adapter folder does not exist")
    label = label or str(path)
    if (path / CLARA_CONFIG).is_file():
        meta = _read_json(path / CLARA_CONFIG)
        return AdapterRef("clara", path.resolve(),
                          base or (meta.get("config") or {}).get("base_model") or None, label)
    missing = [n for n in ADAPTER_FILES if not (path / n).is_file()]
    if missing:
        raise ClaraError(f"{path}: no {missing[0]}: not an mlx-lm adapter folder nor a CLaRa "
                         "checkpoint")
    cfg = _read_json(path / "adapter_config.json")
    return AdapterRef("lora", path.resolve(), base or cfg.get("model") or None, label)


def _checkpoint_of(run, which: str | None) -> Path:
    from clara.train.checkpoint import repair, step_name

    adapters = run.adapters
    repair(adapters)
    available = sorted(p.name for p in adapters.iterdir()
                       if not p.name.startswith(".")) if adapters.is_dir() else []
    if which is None:
        for name in ("best", "last"):
            if (adapters / name).is_dir():
                return adapters / name
        raise ClaraError(f"run {run.id} has no checkpoint yet (status: "
                         f"{run.raw_status().get('status')})")
    if which.isdigit():
        which = step_name(int(which))
    elif which.startswith("step-") and which[5:].isdigit():
        which = step_name(int(which[5:]))
    path = adapters / which
    if not path.is_dir():
        raise ClaraError(f"run {run.id} has no checkpoint {which!r} (it has: "
                         f"{', '.join(available) or 'none'})")
    return path


def resolve_adapter(ws: Workspace | None, ref: str) -> AdapterRef:
    """An adapter reference (see the module docstring) as an AdapterRef."""
    from clara.runs import Run, find_run

    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "run.toml").is_file():
            return _from_run(Run(path), None, ref)
        return adapter_at(path, ref)
    run_ref, _, which = ref.partition(":")
    if ws is None or "/" in run_ref or path.exists():
        raise ClaraError(f"{ref}: adapter folder does not exist (nor a run of that name)")
    return _from_run(find_run(ws, run_ref), which or None, ref)


def _from_run(run, which: str | None, label: str) -> AdapterRef:
    doc = run.config()
    base = (doc.get("resolved") or {}).get("model") or (doc.get("config") or {}).get("model")
    folder = _checkpoint_of(run, which)
    name = f"{run.id}:{which or folder.name}"
    return adapter_at(folder, name if label == run.id or ":" in label else label, base)


def check_compatible(adapter: AdapterRef, base_source: str, base_config: dict) -> None:
    """Refuse an adapter trained on a base of another shape, naming both."""
    if not adapter.base or Path(adapter.base) == Path(base_source):
        return
    cfg_file = Path(adapter.base).expanduser() / "config.json"
    if not cfg_file.is_file():
        return  # the training base is not here to compare; the weight shapes will tell
    trained = _read_json(cfg_file)
    diffs = [f"{k} {trained.get(k)} vs {base_config.get(k)}" for k in SHAPE_KEYS
             if trained.get(k) != base_config.get(k)]
    if diffs:
        raise ClaraError(f"{adapter.label}: trained on {adapter.base}, which does not match the "
                         f"base {base_source} ({'; '.join(diffs)})")


# -- adapter swapping on a loaded base --------------------------------------------------------
def _lora_classes() -> tuple:
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    return (LoRALinear, LoRASwitchLinear, DoRALinear), (LoRAEmbedding, DoRAEmbedding)


def strip_adapters(model) -> int:
    """Put back the wrapped modules of every LoRA/DoRA layer; return how many were unwrapped.
    (mlx-lm's remove_lora_layers only knows LoRALinear, not DoRA, switch or embedding ones.)"""
    from mlx.utils import tree_unflatten

    linears, embeddings = _lora_classes()
    found = []
    for name, module in model.named_modules():
        if isinstance(module, linears):
            found.append((name, module.linear))
        elif isinstance(module, embeddings):
            found.append((name, module.embedding))
    if found:
        model.update_modules(tree_unflatten(found))
    return len(found)


@dataclass
class CachedBase:
    loaded: object  # clara.models.loading.LoadedModel of the bare base
    base_weights: dict  # name -> the base's own arrays (references, not copies)
    adapter: AdapterRef | None = None
    swaps: int = 0

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer


@dataclass
class ClaraEntry:
    model: object  # clara.method.model.ClaraModel
    source: str
    adapter: AdapterRef
    load_seconds: float = 0.0

    @property
    def tokenizer(self):
        return self.model.tokenizer


class ModelCache:
    """Loaded bases keyed by (source, dtype), least recently used dropped past `max_entries`."""

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self.loads = 0  # bases read from disk: the test of reuse

    def __len__(self) -> int:
        return len(self._entries)

    def _put(self, key, entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            import mlx.core as mx

            mx.clear_cache()

    def base(self, source: str, dtype: str | None = None) -> CachedBase:
        from mlx.utils import tree_flatten

        from clara.models.loading import load_model
        from clara.platform import default_dtype

        key = (source, dtype or default_dtype())
        entry = self._entries.get(key)
        if entry is None:
            loaded = load_model(source, dtype=key[1])
            self.loads += 1
            entry = CachedBase(loaded, dict(tree_flatten(loaded.model.parameters())))
            self._put(key, entry)
        self._entries.move_to_end(key)
        return entry

    def get(self, source: str, adapter: AdapterRef | None = None, dtype: str | None = None):
        """A CachedBase with `adapter` (an mlx-lm one, or none) in place, or a ClaraEntry."""
        if adapter is not None and adapter.kind == "clara":
            return self._clara(source, adapter, dtype)
        entry = self.base(source, dtype)
        self.activate(entry, adapter)
        return entry

    def activate(self, entry: CachedBase, adapter: AdapterRef | None) -> None:
        """Swap `entry`'s adapter for `adapter` (None: the bare base), without reloading."""
        import mlx.core as mx
        from mlx_lm.tuner.utils import load_adapters

        current = entry.adapter.path if entry.adapter else None
        wanted = adapter.path if adapter else None
        if current == wanted:
            return
        model = entry.model
        if entry.adapter is not None:
            self._restore(entry)
        if adapter is not None:
            check_compatible(adapter, entry.loaded.source, entry.loaded.config)
            try:
                load_adapters(model, str(adapter.path))
            except Exception as e:
                self._restore(entry)
                lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
                detail = "; ".join(lines[:3]) or type(e).__name__
                raise ClaraError(f"{adapter.label}: does not fit base {entry.loaded.source}: "
                                 f"{detail}") from None
            self._cast_new(entry)
            model.eval()
            mx.eval(model.parameters())
        entry.adapter = adapter
        entry.swaps += 1

    @staticmethod
    def _restore(entry: CachedBase) -> None:
        """Back to the bare base: unwrap LoRA layers, put back any replaced weight (full)."""
        model = entry.model
        strip_adapters(model)
        from mlx.utils import tree_flatten

        now = dict(tree_flatten(model.parameters()))
        changed = [(k, v) for k, v in entry.base_weights.items() if now.get(k) is not v]
        if changed:
            model.load_weights(changed, strict=False)
        entry.adapter = None

    @staticmethod
    def _cast_new(entry: CachedBase) -> None:
        """Adapter weights in the base's dtype; the base's own arrays are left as they are."""
        import mlx.core as mx
        from mlx.utils import tree_flatten

        if entry.loaded.quantization:
            return
        target = getattr(mx, entry.loaded.dtype)
        cast = [(k, v.astype(target)) for k, v in tree_flatten(entry.model.parameters())
                if mx.issubdtype(v.dtype, mx.floating) and v.dtype != target]
        if cast:
            entry.model.load_weights(cast, strict=False)

    def _clara(self, source: str, adapter: AdapterRef, dtype: str | None) -> ClaraEntry:
        from clara.method import checkpoint
        from clara.models.loading import load_model
        from clara.platform import default_dtype

        key = (source, dtype or default_dtype(), "clara", str(adapter.path))
        entry = self._entries.get(key)
        if entry is None:
            tic = time.perf_counter()
            loaded = load_model(source, dtype=key[1])
            self.loads += 1
            check_compatible(adapter, source, loaded.config)
            try:
                model = checkpoint.load(adapter.path, inference=True, lm=loaded.model,
                                        tokenizer=loaded.tokenizer)
            except ClaraError as e:
                raise ClaraError(f"{adapter.label}: does not fit base {source}: {e}") from None
            entry = ClaraEntry(model, source, adapter, time.perf_counter() - tic)
            self._put(key, entry)
        self._entries.move_to_end(key)
        return entry


_DEFAULT_CACHE: ModelCache | None = None


def default_cache() -> ModelCache:
    """One cache per process, shared by chat, evaluation and the app."""
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = ModelCache()
    return _DEFAULT_CACHE
