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


def dropout_rng() -> str:
    """The dropout masks' generator (CLARA_DROPOUT_RNG): "threefry" (MLX's draw), "hash"
    (hashed_keep in MLX ops) or "kernel" (hashed_keep's very mask made and applied by one CUDA
    kernel, forward and backward: kernel_dropped_lora; off CUDA the same mask in MLX ops).
    Default: "kernel" on CUDA, "threefry" elsewhere (so CPU and Metal results are as before).
    On the H200 the kernel, with attention padded in the call (model.attention_pad), made a
    1.1B stage-1 step 24 % faster at batch 8 and 30 % at batch 32, the kernel alone 2 % and
    17 % (bench/clara_throughput.py, session 10); the hash in MLX ops had been 17 % slower at
    batch 8, where the host queuing the step's ops bounds it (41 graph ops a call, the kernel 1)."""
    rng = os.environ.get("CLARA_DROPOUT_RNG")
    if rng:
        return rng
    from clara.platform import backend

    return "kernel" if backend() == "cuda" else "threefry"


def keep_mask(key: mx.array, shape, p: mx.array) -> mx.array:
    """The dropout keep mask of `shape` drawn from `key` by dropout_rng()'s generator."""
    rng = dropout_rng()
    if rng in ("hash", "kernel"):
        return hashed_keep(key, shape, p)
    return mx.random.bernoulli(1 - p, shape, key=key)


# hashed_keep's mask in CUDA: T is x's dtype, the rounding of each value that of the MLX ops in
# dropped_lora (x / bf16(1 - p) forward; x * bf16(1 / (1 - p)) backward), so that the two paths
# agree bit for bit given the same key. Each thread strides over the flat array (coalesced).
_CUDA_HEADER = """
__device__ __forceinline__ unsigned int clara_keep_hash(unsigned int i, unsigned int k0,
                                                        unsigned int k1) {
  unsigned int u = (i + (k0 ^ (k1 * 0x9E3779B9u))) * 0x85EBCA6Bu;
  return ((u ^ (u >> 15)) + k1) * 0xC2B2AE35u;
}
"""
# both kernels: the element count, the key and the keep threshold
_CUDA_PRE = """
  unsigned int n = 1;
  for (int d = 0; d < x_ndim; ++d) n *= (unsigned int)x_shape[d];
  const unsigned int k0 = key[0], k1 = key[1];
  const float q = 1.0f - p[0];
  const unsigned int thr = (unsigned int)fminf(q * 4294967296.0f, 4294967295.0f);
"""
_CUDA_FWD = _CUDA_PRE + """\
  const float s = (float)((T)q);
  const unsigned int stride = gridDim.x * blockDim.x;
  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    y[i] = clara_keep_hash(i, k0, k1) < thr ? (T)((float)x[i] / s) : (T)0.0f;
  }
"""
_CUDA_BWD = _CUDA_PRE + """\
  const float inv = (float)((T)(1.0f / q));
  const unsigned int stride = gridDim.x * blockDim.x;
  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const bool keep = clara_keep_hash(i, k0, k1) < thr;
    xd[i] = keep ? (T)((float)x[i] * inv) : (T)0.0f;
    dx[i] = keep ? (T)((float)g[i] * inv) : (T)0.0f;
  }
"""
# The same two kernels for 2-byte dtypes, 8 elements a thread through 16-byte loads and stores
# (float32 keeps the scalar ones). The scalar ones moved 1.3-1.7 TB/s on the H200, 17 % of a
# stage-1 step's kernel time (ncu, session 11); these made the step 18 % faster at batch 32.
# The same mask and rounding per element; the scalar loop for a tail or unaligned buffers.
_CUDA_VEC = """
  const unsigned int stride = gridDim.x * blockDim.x;
  const unsigned int tid = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned int nv = ALIGNED ? n / 8 : 0;
"""
_CUDA_FWD8 = _CUDA_PRE + _CUDA_VEC.replace("ALIGNED", """(((unsigned long long)x
      | (unsigned long long)y) & 15) == 0""") + """
  const float s = (float)((T)q);
  for (unsigned int v = tid; v < nv; v += stride) {
    uint4 in = reinterpret_cast<const uint4*>(x)[v], out;
    const T* e = reinterpret_cast<const T*>(&in);
    T* o = reinterpret_cast<T*>(&out);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      o[j] = clara_keep_hash(v * 8 + j, k0, k1) < thr ? (T)((float)e[j] / s) : (T)0.0f;
    reinterpret_cast<uint4*>(y)[v] = out;
  }
  for (unsigned int i = nv * 8 + tid; i < n; i += stride)
    y[i] = clara_keep_hash(i, k0, k1) < thr ? (T)((float)x[i] / s) : (T)0.0f;
"""
_CUDA_BWD8 = _CUDA_PRE + _CUDA_VEC.replace("ALIGNED", """(((unsigned long long)x
      | (unsigned long long)g | (unsigned long long)xd
      | (unsigned long long)dx) & 15) == 0""") + """
  const float inv = (float)((T)(1.0f / q));
  for (unsigned int v = tid; v < nv; v += stride) {
    uint4 xi = reinterpret_cast<const uint4*>(x)[v], gi = reinterpret_cast<const uint4*>(g)[v];
    uint4 xo, go;
    const T* xe = reinterpret_cast<const T*>(&xi);
    const T* ge = reinterpret_cast<const T*>(&gi);
    T* xr = reinterpret_cast<T*>(&xo);
    T* gr = reinterpret_cast<T*>(&go);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const bool keep = clara_keep_hash(v * 8 + j, k0, k1) < thr;
      xr[j] = keep ? (T)((float)xe[j] * inv) : (T)0.0f;
      gr[j] = keep ? (T)((float)ge[j] * inv) : (T)0.0f;
    }
    reinterpret_cast<uint4*>(xd)[v] = xo;
    reinterpret_cast<uint4*>(dx)[v] = go;
  }
  for (unsigned int i = nv * 8 + tid; i < n; i += stride) {
    const bool keep = clara_keep_hash(i, k0, k1) < thr;
    xd[i] = keep ? (T)((float)x[i] * inv) : (T)0.0f;
    dx[i] = keep ? (T)((float)g[i] * inv) : (T)0.0f;
  }
"""
_KERNELS: dict = {}


def _vector_kernels(dtype) -> bool:
    """The 8-wide dropout kernels for 2-byte dtypes (8 to a 16-byte load: bfloat16, float16),
    the scalar ones otherwise or with CLARA_DROPOUT_VEC=0."""
    return os.environ.get("CLARA_DROPOUT_VEC", "1") != "0" and dtype.size == 2


def _cuda_kernels(vec: bool):
    if vec not in _KERNELS:
        fwd, bwd, tag = (_CUDA_FWD8, _CUDA_BWD8, "8") if vec else (_CUDA_FWD, _CUDA_BWD, "")
        _KERNELS[vec] = {
            "fwd": mx.fast.cuda_kernel("clara_dropout_fwd" + tag, ["x", "key", "p"], ["y"], fwd,
                                       header=_CUDA_HEADER),
            "bwd": mx.fast.cuda_kernel("clara_dropout_bwd" + tag, ["x", "g", "key", "p"],
                                       ["xd", "dx"], bwd, header=_CUDA_HEADER)}
    return _KERNELS[vec]


def _launch(name: str, inputs: list, like: mx.array, outputs: int):
    n = like.size
    if n >= 1 << 32:
        raise ValueError(f"dropout kernel: {n} elements, at most 2**32 - 1")
    vec = _vector_kernels(like.dtype)
    threads = min(-(-n // (8 if vec else 4)), 1 << 30)  # elements a thread
    return _cuda_kernels(vec)[name](
        inputs=inputs, template=[("T", like.dtype)], grid=(threads, 1, 1),
        threadgroup=(256, 1, 1), output_shapes=[like.shape] * outputs,
        output_dtypes=[like.dtype] * outputs)


def cuda_dropout(x: mx.array, key: mx.array, p: mx.array) -> mx.array:
    """x * keep / (1 - p) with hashed_keep's mask, one kernel (CUDA only)."""
    return _launch("fwd", [x, key, p], x, 1)[0]


def cuda_dropout_pair(x: mx.array, g: mx.array, key: mx.array, p: mx.array):
    """(x * keep, g * keep) / (1 - p) with hashed_keep's mask, one kernel (CUDA only)."""
    return tuple(_launch("bwd", [x, g, key, p], x, 2))


def use_cuda_kernel() -> bool:
    from clara.platform import backend

    return dropout_rng() == "kernel" and backend() == "cuda"


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


@mx.custom_function
def kernel_dropped_lora(x: mx.array, key: mx.array, p: mx.array, a: mx.array, b: mx.array):
    """dropped_lora on CUDA (dropout_rng() "kernel", the default there): the mask is made in
    the kernel that applies it (cuda_dropout), one elementwise pass over x and no random bits,
    mask or select kernels; the backward pass makes it again in one pass over x and the input
    gradient (cuda_dropout_pair). Same values as dropped_lora with the hash."""
    return (cuda_dropout(x, key, p) @ a) @ b


@kernel_dropped_lora.vjp
def _kernel_dropped_lora_vjp(primals, cotangent, output):
    x, key, p, a, b = primals
    gb = cotangent @ b.T
    xd, dx = cuda_dropout_pair(x, gb @ a.T, key, p)
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    da = flat(xd).T @ flat(gb)
    db = flat(xd @ a).T @ flat(cotangent)
    return dx, mx.zeros_like(key), mx.zeros_like(p), da, db


def lora_fold() -> bool:
    """Whether an adapted plain linear runs as one folded_lora (CLARA_LORA_FOLD=1/0): the LoRA
    output added inside the base matmul (mx.addmm, the gemm's epilogue) in the forward and the
    adapter's input gradient added inside the base's input-gradient matmul in the backward,
    instead of two elementwise passes over the [B, L, out] and [B, L, in] arrays per call.
    Not bit for bit the unfolded sum in bfloat16 (one rounding to the model's dtype instead of
    two; the same in float32 up to the sum's order: tests/test_memory.py). Default: on CUDA,
    where it made a 1.1B stage-1 step faster at batch 8, 32 and 64 (bench/clara_throughput.py,
    session 11); off elsewhere, so CPU and Metal results are as before."""
    v = os.environ.get("CLARA_LORA_FOLD")
    if v:
        return v == "1"
    from clara.platform import backend

    return backend() == "cuda"


def _dropped(x, key, p, kernel: bool):
    if kernel:
        return cuda_dropout(x, key, p)
    return mx.where(keep_mask(key, x.shape, p), x / (1 - p).astype(x.dtype), 0)


def _fold_fwd(x, w, key, p, a, b, kernel: bool):
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    xa = _dropped(x2, key, p, kernel) @ a
    # xa ([tokens, rank], small) is an output too, so the backward need not make it again
    return mx.addmm(xa @ b, x2, w.T).reshape(*lead, w.shape[0]), xa


def _fold_vjp(primals, cotangents, outputs, kernel: bool):
    x, w, key, p, a, b = primals
    cotangent, xa = cotangents[0], outputs[1]
    x2, g2 = x.reshape(-1, x.shape[-1]), cotangent.reshape(-1, cotangent.shape[-1])
    gb = g2 @ b.T
    if kernel:
        xd, dxl = cuda_dropout_pair(x2, gb @ a.T, key, p)
    else:
        # the key made to depend on the cotangent, as in _dropped_lora_vjp
        c = g2[:1, :1].reshape(-1)
        key = key + (c == c).astype(mx.uint32) * 0
        keep = keep_mask(key, x2.shape, p)
        inv = (1 / (1 - p)).astype(x.dtype)
        xd = mx.where(keep, x2, 0) * inv
        dxl = mx.where(keep, (gb @ a.T) * inv, 0)
    dx = mx.addmm(dxl, g2, w).reshape(x.shape)
    da = xd.T @ gb
    db = xa.T @ g2
    return dx, mx.zeros_like(w), mx.zeros_like(key), mx.zeros_like(p), da, db


def _make_folded(kernel: bool):
    """The folded adapter as one custom function, its mask from MLX ops or the CUDA kernel."""
    @mx.custom_function
    def folded(x, w, key, p, a, b):
        return _fold_fwd(x, w, key, p, a, b, kernel)

    @folded.vjp
    def _vjp(primals, cotangents, outputs):
        return _fold_vjp(primals, cotangents, outputs, kernel)

    return folded


_folded, _kernel_folded = _make_folded(False), _make_folded(True)


def folded_lora(x, w, key, p, a, b):
    """x @ w.T + dropped_lora(x, key, p, a, b), the adapter's output added in the base matmul's
    epilogue (mx.addmm) and, in the backward, the adapter's input gradient in the base's
    input-gradient matmul; the frozen w gets no gradient (its zeros are never evaluated)."""
    return _folded(x, w, key, p, a, b)[0]


def kernel_folded_lora(x, w, key, p, a, b):
    """folded_lora with the CUDA dropout kernel's mask (kernel_dropped_lora's)."""
    return _kernel_folded(x, w, key, p, a, b)[0]


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
            f = kernel_dropped_lora if use_cuda_kernel() else dropped_lora
            return f(x, _next_key(), mx.array(p, dtype=mx.float32), a, b)
        return (x @ a) @ b

    def folded(self, x: mx.array, w: mx.array) -> mx.array:
        """x @ w.T + delta(x) in training with dropout, as one folded_lora (lora_fold)."""
        a, b = self.lora_a.astype(x.dtype), (self.scale * self.lora_b).astype(x.dtype)
        p = mx.array(1 - self.dropout._p_1, dtype=mx.float32)
        f = kernel_folded_lora if use_cuda_kernel() else folded_lora
        return f(x, w, _next_key(), p, a, b)


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
        if self.active is None:
            return self.linear(x)
        pair = self.adapters[self.active]
        if (lora_fold() and pair.training and pair.dropout._p_1 < 1
                and type(self.linear) is nn.Linear and "bias" not in self.linear):
            return pair.folded(x, self.linear.weight)
        return self.linear(x) + pair.delta(x)


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
