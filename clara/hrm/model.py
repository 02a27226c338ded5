"""The Hierarchical Reasoning Model (Wang et al. 2025, arXiv 2506.21734) on MLX, and its TRM
variant (arXiv 2510.04871).

Two recurrent transformer modules share one token grid: L (fast) updates `z_L = L(z_L, z_H + x)`
L_cycles times, then H (slow) updates `z_H = H(z_H, z_L)`; H_cycles of these make one segment.
Only the last L and H update of a segment carries gradient (the one-step approximation); the
carry (z_H, z_L) is detached between segments. ACT (adaptive computation time) runs up to
`halt_max_steps` segments; a Q head on the first position gives (halt, continue) logits.
TRM uses one network for both levels and backpropagates through the whole last cycle.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from clara.hrm.config import HRMConfig

IGNORE = -100  # label of positions without a target (padding)
__all__ = ["HRM", "HRMConfig", "IGNORE", "act_step", "act_loss", "new_carry", "run_episode",
           "stablemax_cross_entropy", "log_stablemax", "bce_with_logits"]


# ---------------------------------------------------------------------------- losses
def log_stablemax(x: mx.array, axis: int = -1) -> mx.array:
    """log of stablemax: s(x) = x + 1 for x >= 0, 1 / (1 - x) below; normalised over `axis`."""
    # each branch sees only its own side of 0: the unused branch's 1/(1-x) would be inf at
    # x = 1 (common with bfloat16 logits) and its gradient NaN through mx.where
    s = mx.where(x < 0, 1.0 / (1.0 - mx.minimum(x, 0.0) + 1e-30), mx.maximum(x, 0.0) + 1.0)
    return mx.log(s / s.sum(axis=axis, keepdims=True))


def stablemax_cross_entropy(logits: mx.array, labels: mx.array) -> mx.array:
    """Per-token loss (0 where label == IGNORE), computed in float32."""
    logp = log_stablemax(logits.astype(mx.float32))
    valid = labels != IGNORE
    safe = mx.where(valid, labels, 0)
    picked = mx.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return mx.where(valid, -picked, 0.0)


def bce_with_logits(logits: mx.array, targets: mx.array) -> mx.array:
    x = logits.astype(mx.float32)
    return mx.maximum(x, 0) - x * targets + mx.log1p(mx.exp(-mx.abs(x)))


# ---------------------------------------------------------------------------- layers
def rms_norm(x: mx.array, eps: float) -> mx.array:
    """RMSNorm without a learned scale (the reference's post-norm)."""
    xf = x.astype(mx.float32)
    return (xf * mx.rsqrt((xf * xf).mean(-1, keepdims=True) + eps)).astype(x.dtype)


def trunc_normal(shape, std: float) -> mx.array:
    return mx.random.truncated_normal(-2.0, 2.0, shape) * std


class CastedLinear(nn.Module):
    """Linear whose float32 weights are cast to the input's dtype (autocast-like)."""

    def __init__(self, din: int, dout: int, bias: bool = False):
        super().__init__()
        self.weight = trunc_normal((dout, din), 1.0 / math.sqrt(din))
        if bias:
            self.bias = mx.zeros((dout,))

    def __call__(self, x):
        y = x @ self.weight.astype(x.dtype).T
        return y + self.bias.astype(x.dtype) if "bias" in self else y


class Attention(nn.Module):
    """Non-causal multi-head self-attention (every cell sees the whole grid)."""

    def __init__(self, c: HRMConfig):
        super().__init__()
        self.h, self.d = c.num_heads, c.hidden_size // c.num_heads
        self.qkv = CastedLinear(c.hidden_size, 3 * c.hidden_size)
        self.out = CastedLinear(c.hidden_size, c.hidden_size)
        self.rope = nn.RoPE(self.d, traditional=False, base=c.rope_theta) \
            if c.pos_encodings == "rope" else None

    def __call__(self, x):
        B, L, _ = x.shape
        q, k, v = mx.split(self.qkv(x).reshape(B, L, 3, self.h, self.d).transpose(2, 0, 3, 1, 4),
                           3, axis=0)
        q, k, v = q[0], k[0], v[0]
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.d ** -0.5)
        return self.out(o.transpose(0, 2, 1, 3).reshape(B, L, -1))


class SwiGLU(nn.Module):
    def __init__(self, c: HRMConfig):
        super().__init__()
        inter = int(round(c.expansion * c.hidden_size * 2 / 3))
        inter = -(-inter // 16) * 16
        self.gate_up = CastedLinear(c.hidden_size, 2 * inter)
        self.down = CastedLinear(inter, c.hidden_size)

    def __call__(self, x):
        g, u = mx.split(self.gate_up(x), 2, axis=-1)
        return self.down(nn.silu(g) * u)


class Block(nn.Module):
    """Post-norm block: x = norm(x + attn(x)); x = norm(x + mlp(x))."""

    def __init__(self, c: HRMConfig):
        super().__init__()
        self.attn, self.mlp, self.eps = Attention(c), SwiGLU(c), c.norm_eps

    def __call__(self, x):
        x = rms_norm(x + self.attn(x), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied to `hidden + injection`."""

    def __init__(self, c: HRMConfig, n_layers: int):
        super().__init__()
        self.layers = [Block(c) for _ in range(n_layers)]

    def __call__(self, hidden, injection):
        hidden = hidden + injection
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


# ---------------------------------------------------------------------------- the model
class HRM(nn.Module):
    def __init__(self, config: HRMConfig):
        super().__init__()
        c = self.config = config.validate()
        D = c.hidden_size
        self.embed = trunc_normal((c.vocab_size, D), 1.0 / math.sqrt(D))
        self.embed_scale = math.sqrt(D)
        if c.puzzle_emb_len:
            # zero-initialised and trained by sign-SGD (see clara.hrm.task.sign_sgd_rows)
            self.puzzle_emb = mx.zeros((c.num_puzzle_ids, c.puzzle_emb_len * D))
        self.total_len = c.seq_len + c.puzzle_emb_len
        if c.pos_encodings == "learned":
            self.pos_emb = trunc_normal((self.total_len, D), 1.0 / math.sqrt(D))
        self.L_level = ReasoningModule(c, c.L_layers)
        if c.variant == "hrm":
            self.H_level = ReasoningModule(c, c.H_layers)
        self.lm_head = CastedLinear(D, c.vocab_size)
        self.q_head = CastedLinear(D, 2, bias=True)
        self.q_head.weight = mx.zeros_like(self.q_head.weight)
        self.q_head.bias = mx.full((2,), -5.0)  # start by "continue": halting must be learned
        # fixed initial states of the carry (not trained)
        self.H_init = trunc_normal((D,), 1.0)
        self.L_init = trunc_normal((D,), 1.0)
        self.freeze(keys=["H_init", "L_init"], recurse=False)

    @property
    def dtype(self):
        return getattr(mx, self.config.dtype)

    def input_embeddings(self, inputs: mx.array, puzzle_ids: mx.array) -> mx.array:
        c, dt = self.config, self.dtype
        x = self.embed[inputs].astype(dt)
        if c.puzzle_emb_len:
            p = self.puzzle_emb[puzzle_ids].astype(dt).reshape(inputs.shape[0], c.puzzle_emb_len, -1)
            x = mx.concatenate([p, x], axis=1)
        if c.pos_encodings == "learned":
            # scale by 1/sqrt(2) to keep the variance of the sum
            x = 0.707106781 * (x + self.pos_emb.astype(dt))
        return self.embed_scale * x

    def initial_carry(self, batch: int) -> tuple[mx.array, mx.array]:
        shape = (batch, self.total_len, self.config.hidden_size)
        return (mx.broadcast_to(self.H_init.astype(self.dtype), shape),
                mx.broadcast_to(self.L_init.astype(self.dtype), shape))

    def _high(self, z_H, z_L):
        return (self.H_level if self.config.variant == "hrm" else self.L_level)(z_H, z_L)

    def segment(self, z_H, z_L, x):
        """One ACT segment from the carry; returns the new carry (detached), the output logits
        (grid positions only) and the Q logits (halt, continue), all [B, ...]."""
        c = self.config
        if c.variant == "hrm":
            # every update but the last L and H one: no gradient (one-step approximation)
            for h in range(c.H_cycles):
                for l_ in range(c.L_cycles):
                    if not (h == c.H_cycles - 1 and l_ == c.L_cycles - 1):
                        z_L = self.L_level(z_L, z_H + x)
                if h != c.H_cycles - 1:
                    z_H = self._high(z_H, z_L)
            z_H, z_L = mx.stop_gradient(z_H), mx.stop_gradient(z_L)
            z_L = self.L_level(z_L, z_H + x)
            z_H = self._high(z_H, z_L)
        else:
            # TRM: z_H is the answer y, z_L the latent z; gradient through the whole last cycle
            for h in range(c.H_cycles):
                if h == c.H_cycles - 1:
                    z_H, z_L = mx.stop_gradient(z_H), mx.stop_gradient(z_L)
                for _ in range(c.L_cycles):
                    z_L = self.L_level(z_L, z_H + x)
                z_H = self.L_level(z_H, z_L)
        logits = self.lm_head(z_H)[:, c.puzzle_emb_len:]
        q = self.q_head(z_H[:, 0]).astype(mx.float32)
        return (mx.stop_gradient(z_H), mx.stop_gradient(z_L)), logits, q[:, 0], q[:, 1]


# ---------------------------------------------------------------------------- ACT
def new_carry(model: HRM, batch: dict) -> dict:
    """A carry whose every sequence is halted: the next step loads the batch's puzzles."""
    B = batch["inputs"].shape[0]
    z_H, z_L = model.initial_carry(B)
    return {"z_H": z_H, "z_L": z_L, "steps": mx.zeros((B,), mx.int32),
            "halted": mx.ones((B,), mx.bool_), "inputs": mx.zeros_like(batch["inputs"]),
            "labels": mx.full(batch["labels"].shape, IGNORE, mx.int32),
            "puzzle_ids": mx.zeros_like(batch["puzzle_ids"])}


def act_step(model: HRM, carry: dict, batch: dict, training: bool):
    """One ACT segment: reset halted sequences to the batch's puzzles, run a segment, decide who
    halts. Returns (new carry, logits, q_halt, q_continue, target_q_continue or None)."""
    c = model.config
    halted = carry["halted"]
    h3 = halted[:, None, None]
    z_H0, z_L0 = model.initial_carry(halted.shape[0])
    z_H = mx.where(h3, z_H0, carry["z_H"])
    z_L = mx.where(h3, z_L0, carry["z_L"])
    steps = mx.where(halted, 0, carry["steps"])
    data = {k: mx.where(halted[:, None] if batch[k].ndim == 2 else halted, batch[k], carry[k])
            for k in ("inputs", "labels", "puzzle_ids")}
    x = model.input_embeddings(data["inputs"], data["puzzle_ids"])
    (z_H, z_L), logits, q_halt, q_cont = model.segment(z_H, z_L, x)
    steps = steps + 1
    last = steps >= c.halt_max_steps
    halted = last
    target = None
    if training and c.halt_max_steps > 1:
        qh, qc = mx.stop_gradient(q_halt), mx.stop_gradient(q_cont)
        halted = halted | ((qh > qc) if c.variant == "hrm" else (qh > 0))
        # exploration: with some probability, a random minimum number of segments
        explore = mx.random.uniform(shape=qh.shape) < c.halt_exploration_prob
        min_steps = explore * mx.random.randint(2, c.halt_max_steps + 1, qh.shape)
        halted = halted & (steps >= min_steps)
        if c.variant == "hrm":
            # Q-learning target of "continue": the next segment's best value (bootstrapped)
            _, _, nh, nc = model.segment(z_H, z_L, x)
            nh, nc = mx.stop_gradient(nh), mx.stop_gradient(nc)
            target = mx.sigmoid(mx.where(last, nh, mx.maximum(nh, nc)))
    new = {"z_H": z_H, "z_L": z_L, "steps": steps, "halted": halted, **data}
    return new, logits, q_halt, q_cont, target


def act_loss(logits, labels, q_halt, q_cont, target, halted, steps):
    """The reference's ACT loss head: (summed loss, metric sums, count of halted sequences).

    loss = sum_seq mean_tok stablemax_ce + 0.5 (BCE(q_halt, seq correct) + BCE(q_cont, target));
    metrics (token accuracy, exact accuracy, q-halt accuracy, steps) are sums over the
    sequences that halted at this step."""
    mask = labels != IGNORE
    counts = mask.sum(-1)
    divisor = mx.maximum(counts, 1).astype(mx.float32)
    pred = logits.argmax(-1)
    correct = mask & (pred == labels)
    seq_correct = correct.sum(-1) == counts
    valid = halted & (counts > 0)
    lm = (stablemax_cross_entropy(logits, labels).sum(-1) / divisor).sum()
    q_halt_loss = bce_with_logits(q_halt, seq_correct.astype(mx.float32)).sum()
    q_cont_loss = bce_with_logits(q_cont, target).sum() if target is not None else mx.array(0.0)
    loss = lm + 0.5 * (q_halt_loss + q_cont_loss)
    vf = valid.astype(mx.float32)
    sums = {"token_accuracy": (vf * correct.sum(-1) / divisor).sum(),
            "exact_accuracy": (vf * seq_correct).sum(),
            "q_halt_accuracy": (vf * ((q_halt >= 0) == seq_correct)).sum(),
            "steps": (vf * steps).sum(),
            "lm_loss": lm, "q_halt_loss": q_halt_loss, "q_continue_loss": q_cont_loss}
    return loss, sums, vf.sum()


def run_episode(model: HRM, batch: dict, max_steps: int | None = None, keep: bool = False):
    """Evaluation: every puzzle runs the maximum number of segments (no early halting).

    Returns the final (logits, q_halt, q_cont) and, with `keep`, each segment's predictions and
    q_halt/q_cont as lists (for step-by-step display and the ACT-halting metrics)."""
    carry = new_carry(model, batch)
    steps = max_steps or model.config.halt_max_steps
    trace = []
    for _ in range(steps):
        carry, logits, qh, qc, _ = act_step(model, carry, batch, training=False)
        # keep the graph short: the carry of the next segment is already detached
        mx.eval(carry["z_H"], carry["z_L"], logits, qh, qc)
        if keep:
            trace.append((logits.argmax(-1), qh, qc))
        carry["halted"] = mx.zeros_like(carry["halted"])
    return logits, qh, qc, trace
