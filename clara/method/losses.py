"""Losses of the CLaRa stages: masked next-token CE, the memory/document MSE, the supervised
contrastive retrieval loss, and the retrieval metrics."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from clara.method.config import CE_CHUNK_ELEMENTS

IGNORE = -100


def masked_ce(logits: mx.array, labels: mx.array, shifted: bool = False):
    """Causal LM CE: logits at 0..L-2 against labels at 1..L-1, ignoring IGNORE labels
    (`shifted`: `logits` are already those of positions 0..L-2, [B, L-1, V]).

    Returns (mean over supervised tokens, number of supervised tokens), as HF's ignore_index.
    """
    logits = (logits if shifted else logits[:, :-1]).astype(mx.float32)
    targets = labels[:, 1:]
    mask = targets != IGNORE
    ce = nn.losses.cross_entropy(logits, mx.where(mask, targets, 0), reduction="none")
    n = mask.sum()
    return (ce * mask).sum() / mx.maximum(n, 1), n


def chunked_ce(hidden: mx.array, labels: mx.array, head, params, vocab: int,
               chunk_elements: int | None = None):
    """masked_ce(head(params, hidden), labels) without the whole [B, L, V] logits: the
    positions go through the head in chunks of about `chunk_elements` logits, each under
    mx.checkpoint, so the backward pass recomputes a chunk's logits instead of keeping them
    (their float32 copy, softmax and gradient were a CLaRa step's largest arrays). Same loss
    and gradients up to float rounding (the sum runs chunk by chunk). `params` are the head's
    trainable arrays, passed in so that their gradients flow through the checkpoint."""
    H = hidden.shape[-1]
    h = hidden[:, :-1].reshape(-1, H)
    t = labels[:, 1:].reshape(-1)
    size = max(1, (chunk_elements or CE_CHUNK_ELEMENTS) // vocab)

    def piece(tc):
        keep = tc != IGNORE
        safe = mx.where(keep, tc, 0)

        def ce(p, hc):  # the targets are constants of the checkpoint (no gradient to indices)
            logits = head(p, hc).astype(mx.float32)
            return (nn.losses.cross_entropy(logits, safe, reduction="none") * keep).sum()

        return mx.checkpoint(ce)

    total = mx.array(0.0)
    for s in range(0, h.shape[0], size):
        total = total + piece(t[s:s + size])(params, h[s:s + size])
    n = (t != IGNORE).sum()
    return total / mx.maximum(n, 1), n


def answer_match(logits: mx.array, labels: mx.array, eos_ids) -> mx.array:
    """The share of rows that greedy decoding answers exactly, from one teacher-forced pass:
    every supervised token up to the first end-of-sequence token (included; the template's
    tokens after it are never generated) is the argmax given the gold prefix. As the benches
    decode, the first answer token may not be end-of-sequence (an answer is never empty)."""
    logits = logits[:, :-1]
    targets = labels[:, 1:]
    sup = targets != IGNORE
    eos = mx.array(sorted(eos_ids))
    is_eos = (targets[..., None] == eos).any(axis=-1) & sup
    seen = mx.cumsum(is_eos.astype(mx.int32), axis=-1)
    keep = sup & ((seen == 0) | (is_eos & (seen == 1)))
    first = sup & (mx.cumsum(sup.astype(mx.int32), axis=-1) == 1)
    banned = (mx.arange(logits.shape[-1])[:, None] == eos[None]).any(axis=-1)
    pred = mx.argmax(mx.where(first[..., None] & banned, -mx.inf, logits), axis=-1)
    rows = sup.any(axis=-1)
    ok = mx.all((pred == targets) | ~keep, axis=-1) & rows
    return ok.astype(mx.float32).sum() / mx.maximum(rows.sum(), 1)


def memory_mse(hidden: mx.array, mask: mx.array, mem_mask: mx.array) -> mx.array:
    """§2.1: per row, the mean state of the memory positions against the mean state of the other
    real positions (<ENC>, BOS, doc, EOS); squared difference averaged over rows and dims."""
    h = hidden.astype(mx.float32)
    mem = mem_mask.astype(mx.float32)[..., None]
    txt = (mask.astype(mx.bool_) & ~mem_mask.astype(mx.bool_)).astype(mx.float32)[..., None]
    m = (h * mem).sum(axis=1) / mx.maximum(mem.sum(axis=1), 1.0)
    t = (h * txt).sum(axis=1) / mx.maximum(txt.sum(axis=1), 1.0)
    return mx.mean((t - m) ** 2)


def contrastive_retrieval_loss(scores: mx.array, positives: mx.array, tau: float = 0.02):
    """§2.4 multi-positive InfoNCE over candidates: -log(sum_pos e^{s/tau} / sum_all e^{s/tau}),
    averaged over the rows that have at least one positive (0 when none has)."""
    logits = scores.astype(mx.float32) / tau
    pos = positives.astype(mx.bool_)
    all_lse = mx.logsumexp(logits, axis=-1)
    pos_lse = mx.logsumexp(mx.where(pos, logits, -1e30), axis=-1)
    has = pos.any(axis=-1).astype(mx.float32)
    return ((all_lse - pos_lse) * has).sum() / mx.maximum(has.sum(), 1.0)


def retrieval_metrics(scores: mx.array, positives: mx.array, ks=(1, 3, 5)) -> dict[str, mx.array]:
    """recall@k = |top-k ∩ gold| / |gold| (0 for rows without gold), precision@k = |top-k ∩ gold|
    / k, averaged over rows, for each k not above the number of candidates."""
    order = mx.argsort(-scores, axis=-1)
    hits = mx.take_along_axis(positives.astype(mx.float32), order, axis=-1)
    n_pos = positives.astype(mx.float32).sum(axis=-1)
    out = {}
    for k in ks:
        if k > scores.shape[-1]:
            continue
        h = hits[:, :k].sum(axis=-1)
        out[f"recall@{k}"] = mx.mean(mx.where(n_pos > 0, h / mx.maximum(n_pos, 1.0), 0.0))
        out[f"precision@{k}"] = mx.mean(h / k)
    return out
