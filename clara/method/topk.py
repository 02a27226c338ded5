"""Differentiable top-k selection with the straight-through estimator (clara-method §2.3).

Forward: the exact hard selection (one-hot rows of the top-k indices, in rank order).
Backward: the gradient of sequential softmax slots, slot j being a softmax over the documents
not chosen by slots 0..j-1.
"""

from __future__ import annotations

import mlx.core as mx


def differentiable_topk(scores: mx.array, k: int, tau: float = 0.02):
    """scores [B, N] -> (weights [B, k, N], indices [B, k]).

    `weights @ docs` selects docs in rank order: forward equals the hard one-hot selection
    exactly, backward follows the softmax path.
    """
    B, N = scores.shape
    if not 1 <= k <= N:
        raise ValueError(f"top-k of {k} out of {N} candidates")
    logits = scores / max(tau, 1e-6)
    idx = mx.argsort(-mx.stop_gradient(logits), axis=-1)[:, :k]
    hard = (idx[..., None] == mx.arange(N)).astype(logits.dtype)  # [B, k, N]
    # taken_j = docs chosen by slots before j (exclusive cumulative sum, a constant)
    taken = mx.cumsum(hard, axis=1) - hard
    taken = mx.minimum(taken, 1.0)
    soft = mx.softmax(logits[:, None, :] + mx.log(1.0 - taken + 1e-8), axis=-1)
    # H + (S - sg(S)) rather than H + S - sg(S): the difference is exactly zero in the forward,
    # so the forward weights are bit-identical to the hard one-hot selection.
    return hard + (soft - mx.stop_gradient(soft)), idx


def soft_topk(scores: mx.array, k: int, tau: float = 0.02) -> mx.array:
    """The softmax slots alone (what the straight-through backward differentiates)."""
    B, N = scores.shape
    logits = scores / max(tau, 1e-6)
    idx = mx.argsort(-mx.stop_gradient(logits), axis=-1)[:, :k]
    hard = (idx[..., None] == mx.arange(N)).astype(logits.dtype)
    taken = mx.minimum(mx.cumsum(hard, axis=1) - hard, 1.0)
    return mx.softmax(logits[:, None, :] + mx.log(1.0 - taken + 1e-8), axis=-1)


def cosine_scores(queries: mx.array, docs: mx.array, center: bool | str = False) -> mx.array:
    """queries [B, D], docs [B, N, D] -> cosine similarities [B, N], computed in float32.

    With `center`, the candidates' mean is taken from the documents and the query first
    (config.retrieval_center): the cosine then compares what differs between the candidates,
    not the direction they share (a single candidate is left as it is). `center` may be the
    config's value: "on" centres; "off" and an undecided "auto" do not."""
    center = center is True or center == "on"
    q = queries.astype(mx.float32)
    d = docs.astype(mx.float32)
    if center and d.shape[1] > 1:
        m = mx.mean(d, axis=1, keepdims=True)
        d, q = d - m, q - m[:, 0]
    q = q / mx.maximum(mx.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    d = d / mx.maximum(mx.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    return (d @ q[..., None])[..., 0]


def pool_cosine_scores(queries: mx.array, docs: mx.array, center: bool | str = False) -> mx.array:
    """queries [B, D], docs [M, D] shared by every query -> cosine similarities [B, M]: what
    cosine_scores gives for docs broadcast to [B, M, D], without making that copy."""
    center = center is True or center == "on"
    q = queries.astype(mx.float32)
    d = docs.astype(mx.float32)
    if center and d.shape[0] > 1:
        m = mx.mean(d, axis=0, keepdims=True)
        d, q = d - m, q - m
    q = q / mx.maximum(mx.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    d = d / mx.maximum(mx.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    return q @ d.T
