"""What chat and evaluation talk to: a base model, optionally with an adapter, kept in a cache.

Adapters are named in `clara.refs`'s grammar (RUN[:best|last|step-N] | PIPELINE[:stageN] |
PATH); `resolve_adapter` is `clara.refs.resolve`. A LoRA run gives an mlx-lm adapter; a CLaRa
run (kind clara-stage*) gives a CLaRa checkpoint.

`ModelCache` keeps bases loaded, keyed by (source, dtype). Switching mlx-lm adapters on a cached
base unwraps the LoRA layers and restores the base's own weight arrays, then applies the next
adapter: the base is never read from disk again. A CLaRa checkpoint changes its base (added
tokens, memory rows, its own adapters), so it gets its own entry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from clara.errors import UserError
from clara.refs import Checkpoint, _read_json, checkpoint_at, resolve

# Config keys that must agree between an adapter's base and the base it is put on.
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "intermediate_size", "vocab_size")

# An adapter is a checkpoint in clara.refs' sense; the names below are the chat API's.
AdapterRef = Checkpoint
adapter_at = checkpoint_at
resolve_adapter = resolve


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
        raise UserError(f"{adapter.label}: trained on {adapter.base}, which does not match the "
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
                raise UserError(f"{adapter.label}: does not fit base {entry.loaded.source}: "
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
            except UserError as e:
                raise UserError(f"{adapter.label}: does not fit base {source}: {e}") from None
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
