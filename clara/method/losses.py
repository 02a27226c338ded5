"""Losses of the CLaRa stages: masked next-token CE, the memory/document MSE, the supervised
contrastive retrieval loss, and the retrieval metrics."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

IGNORE = -100


def masked_ce(logits: mx.array, labels: mx.array):
    """Causal LM CE: logits at 0..L-2 against labels at 1..L-1, ignoring IGNORE labels.

    Returns (mean over supervised tokens, number of supervised tokens), as HF's ignore_index.
    """
    logits = logits[:, :-1].astype(mx.float32)
    targets = labels[:, 1:]
    mask = targets != IGNORE
    ce = nn.losses.cross_entropy(logits, mx.where(mask, targets, 0), reduction="none")
    n = mask.sum()
    return (ce * mask).sum() / mx.maximum(n, 1), n


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
