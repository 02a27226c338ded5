"""Rows for the added tokens, kept in float beside the (possibly quantized) base tables.

The base embedding and an untied head stay untouched, so quantized bases work and their weights
stay bit-identical. Lookup and the output projection splice the new rows in by id. Only the
memory rows (`memory`) are ever trainable; the <AE>/<ENC>/<SEP> rows (`special`) stay frozen.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def dense_weight(layer: nn.Module, rows: slice = slice(None)) -> mx.array:
    """The float weight (of `rows`) of an Embedding / Linear, dequantizing a quantized one."""
    if isinstance(layer, (nn.QuantizedEmbedding, nn.QuantizedLinear)):
        biases = getattr(layer, "biases", None)
        return mx.dequantize(layer.weight[rows], layer.scales[rows],
                             None if biases is None else biases[rows],
                             group_size=layer.group_size, bits=layer.bits,
                             mode=getattr(layer, "mode", "affine"))
    return layer.weight[rows]


MEAN_CHUNK_ROWS = 4096


def mean_row(layer: nn.Module) -> mx.array:
    """The float32 mean of a table's rows, dequantized and upcast a few thousand rows at a time
    and evaluated now. Left lazy on the whole table, it joined the first training step's graph
    with a dequantized and a float32 copy of the embedding and of the head: 7.4 GB of
    transients at Llama-3-8B's vocabulary in 4 bits (measured), most of that step's peak."""
    n, total = _rows(layer), 0.0
    for s in range(0, n, MEAN_CHUNK_ROWS):
        part = dense_weight(layer, slice(s, s + MEAN_CHUNK_ROWS))
        total = total + part.astype(mx.float32).sum(axis=0)
        mx.eval(total)
    return total / n


def _rows(layer: nn.Module) -> int:
    return int(layer.weight.shape[0])


def _splice(base_logits: mx.array, new_logits: mx.array, first: int) -> mx.array:
    """Logits over max(V, first + n) ids, with the new tokens' columns at first .. first+n-1."""
    V, n = base_logits.shape[-1], new_logits.shape[-1]
    new_logits = new_logits.astype(base_logits.dtype)
    if first > V:
        raise ValueError(f"added token ids start at {first} beyond the head's {V} rows")
    parts = [base_logits[..., :first], new_logits]
    if first + n < V:
        parts.append(base_logits[..., first + n:])
    return mx.concatenate(parts, axis=-1)


class MemoryEmbedding(nn.Module):
    """An input embedding whose ids first .. first + n_mem + 2 come from float rows."""

    def __init__(self, base: nn.Module, first: int, n_mem: int, n_special: int = 3,
                 init: mx.array | None = None):
        super().__init__()
        self.base = base
        row = (mean_row(base) if init is None else init).astype(mx.float32)
        self.memory = mx.broadcast_to(row, (n_mem, row.shape[0])) + 0.0
        self.special = mx.broadcast_to(row, (n_special, row.shape[0])) + 0.0
        mx.eval(self.memory, self.special)
        self.first = first
        self.base_rows = _rows(base)

    @property
    def n_new(self) -> int:
        return self.memory.shape[0] + self.special.shape[0]

    def new_rows(self) -> mx.array:
        return mx.concatenate([self.memory, self.special], axis=0)

    def __call__(self, ids: mx.array) -> mx.array:
        out = self.base(mx.minimum(ids, self.base_rows - 1))
        rel = ids - self.first
        is_new = (rel >= 0) & (rel < self.n_new)
        # cast the few rows, not the gathered [B, L, H] copy
        new = self.new_rows().astype(out.dtype)[mx.clip(rel, 0, self.n_new - 1)]
        return mx.where(is_new[..., None], new, out)

    def as_linear(self, x: mx.array) -> mx.array:
        """Tied output head over the extended vocabulary."""
        return _splice(self.base.as_linear(x), x @ self.new_rows().T.astype(x.dtype), self.first)


class MemoryHead(nn.Module):
    """An untied output head extended by frozen mean-initialised rows for the added tokens."""

    def __init__(self, base: nn.Module, first: int, n_new: int):
        super().__init__()
        self.base = base
        row = mean_row(base)
        self.rows = mx.broadcast_to(row, (n_new, row.shape[0])) + 0.0
        mx.eval(self.rows)
        self.first = first

    def __call__(self, x: mx.array) -> mx.array:
        return _splice(self.base(x), x @ self.rows.T.astype(x.dtype), self.first)


def install(lm: nn.Module, first: int, n_mem: int) -> MemoryEmbedding:
    """Wrap `lm`'s input embedding (and untied head) so the CLaRa tokens have rows."""
    inner = lm.model
    if isinstance(inner.embed_tokens, MemoryEmbedding):
        return inner.embed_tokens
    emb = MemoryEmbedding(inner.embed_tokens, first, n_mem)
    inner.embed_tokens = emb
    if "lm_head" in lm:
        lm.lm_head = MemoryHead(lm.lm_head, first, emb.n_new)
    return emb
