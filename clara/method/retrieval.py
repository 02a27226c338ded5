"""Whether retrieval scores centred vectors (config.retrieval_center = auto), decided from the
data: how alike the stage-1 compressor makes the training documents.

A small base compresses documents of one template (the lighthouses: one sentence pattern, the
names differ) to nearly one direction: mean doc-doc cosine 0.9995. There the plain cosine's
scores differ by about 1e-5 between candidates, its softmax at tau 0.02 is flat, and stage 2's
alignment never acts; centred, stage 2 keeps what tells the documents apart and stage 3 lifts
recall. On distinct documents (the facts benchmark: 0.82) the plain cosine already ranks, and
the centred alignment kept stage 2 from learning to read (bench/clara_stage3_study.py, rounds
six and seven). The threshold sits between the two, near 1: at 0.99 the candidates' scores
spread by about 1e-2, which a softmax at tau 0.02 still tells apart.
"""

from __future__ import annotations

CENTER_THRESHOLD = 0.99  # mean doc-doc cosine from which `auto` centres
CENTER_SAMPLE = 32  # documents compressed to decide (1-3 CPU-s on the benchmarks' bases)


def center_sample(docs: list[str], n: int = CENTER_SAMPLE) -> list[str]:
    """A fixed sample of up to `n` distinct documents, spread evenly over their order in the
    file (no random numbers: the decision and the run's random stream stay the same)."""
    unique = list(dict.fromkeys(docs))
    if len(unique) <= n:
        return unique
    return [unique[i * len(unique) // n] for i in range(n)]


def doc_cosine(model, docs: list[str]) -> float:
    """Mean pairwise cosine of the compressor's flattened vectors of `docs` (as retrieval
    scores them), without dropout; the model's training mode is left as it was."""
    import mlx.core as mx
    import numpy as np

    from clara.method.inference import compress_documents

    was = model.training
    v = np.array(compress_documents(model, docs).astype(mx.float32))
    model.train(was)
    v = v.reshape(len(docs), -1).astype(np.float64)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    n = len(docs)
    s = v @ v.T
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


def decide_center(model, docs: list[str], threshold: float = CENTER_THRESHOLD) -> dict:
    """`auto`'s decision on the training documents `docs`: {"setting": "auto", "value": on or
    off, "doc_cosine", "threshold", "documents"}. Fewer than two documents: off."""
    sample = center_sample(docs)
    if len(sample) < 2:
        return {"setting": "auto", "value": "off", "doc_cosine": None, "threshold": threshold,
                "documents": len(sample)}
    cos = doc_cosine(model, sample)
    return {"setting": "auto", "value": "on" if cos >= threshold else "off",
            "doc_cosine": round(cos, 4), "threshold": threshold, "documents": len(sample)}


def center_line(d: dict | None) -> str:
    """"on (auto: doc-doc cosine 0.9995 >= 0.99)", "off", ... for a decision dict."""
    if not d:
        return ""
    if d.get("setting") != "auto":
        return f"{d['value']} (set)"
    if d.get("inherited"):
        return f"{d['value']} (auto: stage 2's decision, {d['inherited']})"
    if d.get("doc_cosine") is None:
        return f"{d['value']} (auto: fewer than two documents)"
    sign = ">=" if d["value"] == "on" else "<"
    return f"{d['value']} (auto: doc-doc cosine {d['doc_cosine']:.4f} {sign} {d['threshold']})"
