"""Several named LoRA adapters over one frozen base projection, with an active-adapter switch.

Each pair (lora_a, lora_b) is made by mlx-lm's `LoRALinear.from_base`, which sizes it for plain
and quantized (QLoRA) bases and gives mlx-lm's init (A uniform, B zero); only the pair is kept,
the base projection is held once. One forward uses exactly one adapter (or none), so the graph of
each sub-forward (compress, encode query, decode) involves only its own adapter's weights.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import mlx.nn as nn
from mlx.utils import tree_unflatten
from mlx_lm.tuner.lora import LoRALinear


_U32 = {k: mx.array(v, dtype=mx.uint32) for k, v in
        (("m1", 0x85EBCA6B), ("m2", 0xC2B2AE35), ("gold", 0x9E3779B9))}


def hashed_keep(key: mx.array, shape, p: mx.array) -> mx.array:
    """Bernoulli(1 - p) keep mask of `shape` from a counter-based hash of (key, element index):
    elementwise integer ops only, so that under mx.compile the mask is made inside the kernel
    that applies it. MLX's own draw (mx.random.bernoulli) is a kernel of its own that writes 32
    random bits per element (threefry), then another that compares them: on the H200 those were
    a fifth of a CLaRa stage-1 step's kernel time (bench/stage1_parts.py). The hash is short on
    purpose: mx.compile fuses chains of at most 11 elementwise ops, and a longer one (two
    MurmurHash finalisers) was cut into kernels that wrote uint32 intermediates of the whole
    shape. Each call's index starts at an offset made from its key, so no two calls share an
    array that mx.compile would keep between them. Tested: the keep rate, no correlation
    between neighbours, rows, or two calls' masks (tests/test_memory.py)."""
    k0, k1 = key[0].astype(mx.uint32), key[1].astype(mx.uint32)
    shape = tuple(shape)
    d = shape[-1] if shape else 1
    rows = mx.arange(int(np.prod(shape[:-1], dtype=np.int64)), dtype=mx.uint32)
    rows = rows.reshape(*shape[:-1], 1) if shape else rows
    # the flat index (from two small ranges, broadcast) plus this call's offset
    w = (rows * d + (k0 ^ (k1 * _U32["gold"]))) + mx.arange(d, dtype=mx.uint32)
    u = w * _U32["m1"]
    h = ((u ^ (u >> 15)) + k1) * _U32["m2"]
    thr = mx.minimum((1 - p.astype(mx.float32)) * 4294967296.0, 4294967295.0).astype(mx.uint32)
    return (h < thr).reshape(shape)


def keep_mask(key: mx.array, shape, p: mx.array) -> mx.array:
    """The dropout keep mask of `shape` drawn from `key`: MLX's threefry draw, or with
    CLARA_DROPOUT_RNG=hash the hashed one (hashed_keep). Threefry stays the default on every
    platform: on the H200 the hash made a 1.1B stage-1 step 4.5 % faster at batch 32 (446 ms
    against 467) but 17 % slower at batch 8 (229 ms against 195), where the host's queuing of
    the step's ops, not the device, bounds the step (bench/clara_throughput.py, session 9)."""
    if os.environ.get("CLARA_DROPOUT_RNG") == "hash":
        return hashed_keep(key, shape, p)
    return mx.random.bernoulli(1 - p, shape, key=key)


@mx.custom_function
def dropped_lora(x: mx.array, key: mx.array, p: mx.array, a: mx.array, b: mx.array):
    """((x * keep / (1 - p)) @ a) @ b with keep ~ Bernoulli(1 - p) drawn from `key` (keep_mask).
    The backward pass draws the same mask again from the key instead of keeping it: nothing per
    element is stored (a mask, or under mx.compile the random bits it fuses in, was a large
    share of a CLaRa step's activations)."""
    keep = keep_mask(key, x.shape, p)
    return (mx.where(keep, x / (1 - p).astype(x.dtype), 0) @ a) @ b


@dropped_lora.vjp
def _dropped_lora_vjp(primals, cotangent, output):
    x, key, p, a, b = primals
    # the key made to depend on the cotangent (by adding 0), so that mx.compile cannot merge
    # this draw with the forward's and keep that one alive until here
    c = cotangent.reshape(-1)[:1]
    key = key + (c == c).astype(mx.uint32) * 0
    keep = keep_mask(key, x.shape, p)
    inv = (1 / (1 - p)).astype(x.dtype)
    xd = mx.where(keep, x, 0) * inv
    gb = cotangent @ b.T
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    da = flat(xd).T @ flat(gb)
    db = flat(xd @ a).T @ flat(cotangent)
    dx = mx.where(keep, (gb @ a.T) * inv, 0)
    return dx, mx.zeros_like(key), mx.zeros_like(p), da, db


# The dropout keys of one forward pass (ClaraModel.hidden_states brackets each pass with
# begin_pass / end_pass): one draw from MLX's global random state for the pass, then the pass
# key plus (0, i) for its i-th adapter call. A draw from the global state is 25 graph ops (a
# bernoulli from a key 5); one per adapter call made dropout 44 % of a CLaRa stage-1 step's
# ops (9229 with it, 5141 without, 4 blocks), and on CUDA the host, which queues every op,
# bounds the step (bench/clara_throughput.py: dropout off was 40 % faster on the H200).
_PASS = {"key": None, "n": 0, "open": False}


def begin_pass() -> None:
    _PASS.update(key=None, n=0, open=True)


def end_pass() -> None:
    _PASS.update(key=None, n=0, open=False)


def _next_key() -> mx.array:
    """A fresh key: inside a pass, the pass key (drawn at its first dropout) plus (0, i);
    outside one, a draw from MLX's global random state (which it advances, as any draw does;
    the engine's compiled step carries that state)."""
    if not _PASS["open"]:
        return mx.random.randint(0, 1 << 31, (2,), dtype=mx.uint32)
    if _PASS["key"] is None:
        _PASS["key"] = mx.random.randint(0, 1 << 31, (2,), dtype=mx.uint32)
    _PASS["n"] += 1
    return _PASS["key"] + mx.array([0, _PASS["n"]], dtype=mx.uint32)


class LoRAPair(nn.Module):
    def __init__(self, lora_a: mx.array, lora_b: mx.array, scale: float, dropout: float):
        super().__init__()
        self.lora_a = lora_a
        self.lora_b = lora_b
        self.scale = scale
        self.dropout = nn.Dropout(p=dropout)

    def delta(self, x: mx.array) -> mx.array:
        # float32 weights, activations in the model's dtype: multiplying a bfloat16 x by float32
        # weights would copy x to float32 and keep that copy for the backward pass (about as
        # much memory again as the whole bfloat16 activations). The cast is differentiable, so
        # gradients and the optimizer still see float32. The scale goes into B (r x out), not
        # onto the [B, L, out] output: that was a pass over every output and its gradient per
        # adapter call (on the H200 3 % of a stage-1 step's kernel time); with a power-of-two
        # scale (the default 2.0) the two are bit for bit the same.
        a, b = self.lora_a.astype(x.dtype), (self.scale * self.lora_b).astype(x.dtype)
        p = 1 - self.dropout._p_1  # nn.Dropout keeps 1 - p
        if self.training and p > 0:
            return dropped_lora(x, _next_key(), mx.array(p, dtype=mx.float32), a, b)
        return (x @ a) @ b


class MultiLoRALinear(nn.Module):
    """A frozen linear (or QuantizedLinear) plus named LoRA pairs; `active` picks one or none."""

    def __init__(self, base: nn.Module, rank: int, scale: float, dropout: float):
        super().__init__()
        self.linear = base
        self.adapters = {}
        self.rank, self.scale, self.dropout_p = rank, scale, dropout
        self.active: str | None = None

    def add(self, name: str) -> None:
        made = LoRALinear.from_base(self.linear, r=self.rank, dropout=self.dropout_p,
                                    scale=self.scale)
        self.adapters[name] = LoRAPair(made.lora_a, made.lora_b, self.scale, self.dropout_p)

    def copy(self, src: str, dst: str) -> None:
        p = self.adapters[src]
        # `+ 0` makes new arrays, so later updates of one adapter never alias the other.
        self.adapters[dst] = LoRAPair(p.lora_a + 0, p.lora_b + 0, self.scale, self.dropout_p)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.linear(x)
        if self.active is None:
            return y
        return y + self.adapters[self.active].delta(x)


class CastLoRALinear(LoRALinear):
    """mlx-lm's LoRALinear whose float32 A and B are cast to the input's dtype in the forward
    (see LoRAPair.delta). Same parameters and names, so adapters load, save and fuse as before."""

    def __call__(self, x):
        y = self.linear(x)
        z = (self.dropout(x) @ self.lora_a.astype(x.dtype)) @ self.lora_b.astype(x.dtype)
        return y + self.scale * z


def cast_lora_layers(model: nn.Module) -> int:
    """Give every plain mlx-lm LoRALinear of `model` the casting forward; returns how many."""
    n = 0
    for _, m in model.named_modules():
        if type(m) is LoRALinear:
            m.__class__ = CastLoRALinear
            n += 1
    return n


def apply_multi_lora(lm: nn.Module, names, rank: int, scale: float, dropout: float,
                     keys, num_layers: int = -1) -> list[MultiLoRALinear]:
    """Replace `keys` projections of the last `num_layers` blocks (-1: all) with multi-LoRA."""
    layers = lm.model.layers
    chosen = layers if num_layers < 0 else layers[len(layers) - num_layers:]
    made = []
    for layer in chosen:
        mods = dict(layer.named_modules())
        updates = []
        for key in keys:
            if key not in mods:
                raise ValueError(f"no projection {key!r} in {type(layer).__name__}")
            base = mods[key]
            if isinstance(base, MultiLoRALinear):
                raise ValueError(f"{key} already has adapters")
            if not isinstance(base, (nn.Linear, nn.QuantizedLinear)):
                raise ValueError(f"{key} is a {type(base).__name__}, not a linear layer")
            m = MultiLoRALinear(base, rank, scale, dropout)
            for n in names:
                m.add(n)
            updates.append((key, m))
            made.append(m)
        layer.update_modules(tree_unflatten(updates))
    return made
