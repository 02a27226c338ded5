"""Answer and retrieval metrics, with the normalisation of CLaRa's evaluation (SQuAD-style).

normalize: "True"/"False" -> yes/no, lowercase, strip punctuation, drop the articles a/an/the,
collapse whitespace. EM compares normalised strings; F1 is token-level; cover-EM ("acc") holds
when every normalised gold token appears among the prediction's tokens.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_SPECIAL = {"yes", "no", "noanswer"}


def normalize(text: str) -> str:
    text = {"True": "yes", "False": "no"}.get(text.strip(), text)
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize(prediction) == normalize(gold))


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction), normalize(gold)
    if (pred in _SPECIAL or ref in _SPECIAL) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def cover_em(prediction: str, gold: str) -> float:
    """1.0 when every normalised gold token occurs among the prediction's tokens."""
    ref = normalize(gold).split()
    pred = set(normalize(prediction).split())
    return float(bool(ref) and all(t in pred for t in ref))


def keyword_match(prediction: str, keywords: Sequence[str]) -> float | None:
    """Share of keywords found in the prediction (case-insensitive substring); None if none."""
    if not keywords:
        return None
    low = prediction.lower()
    return sum(k.lower() in low for k in keywords) / len(keywords)


def recall_at_k(ranked: Sequence[int], gold: Iterable[int], k: int) -> float:
    """|top-k ∩ gold| / |gold|; 0 for a row without gold positions (as CLaRa counts it)."""
    gold = set(gold)
    if not gold:
        return 0.0
    return len(set(ranked[:k]) & gold) / len(gold)


def precision_at_k(ranked: Sequence[int], gold: Iterable[int], k: int) -> float:
    return len(set(ranked[:k]) & set(gold)) / k


def answer_scores(prediction: str, gold: str, keywords: Sequence[str] = ()) -> dict:
    """All answer metrics of one prediction against one reference."""
    out = {"em": exact_match(prediction, gold), "f1": f1(prediction, gold),
           "cover_em": cover_em(prediction, gold)}
    km = keyword_match(prediction, keywords)
    if km is not None:
        out["keyword"] = km
    return out
