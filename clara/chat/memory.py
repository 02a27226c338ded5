"""A memory: the pairs of a QA dataset given to a plain model as context (retrieval-augmented
fine-tuning, RAFT-style). Per question, BM25 ranks the pairs and the top k go into the prompt
(`clara.chat.engine.rag_prompt`); a model fine-tuned on rows made the same way (`memory_rows`,
`clara data build sft --memory-k K`) learns to answer from the pair that holds the answer.

One rendering, here, for training rows, chat (`clara chat --memory DATASET`) and evaluation
(`clara eval --memory DATASET -c memory=RUN`): an entry is the question and its answer, one
space apart ("Who founded it? It was founded by Dr. Maalen."). The answer alone is shorter
(13 against 51 reader tokens at the median on the demo's handbook-qa) but loses what it is
about ("It was founded in 1961.") and what BM25 ranks on: the pair holding the answer is in
the top 2 for 18 of the 21 paraphrased demo questions against 20 with question and answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from clara.workspace import Workspace


def memory_entry(question: str, answer: str) -> str:
    """How a pair reads as one memory entry (and what BM25 ranks it by)."""
    return f"{question.strip()} {answer.strip()}"


def read_memory(ws: Workspace | None, ref: str | Path) -> tuple[list[str], list[str]]:
    """(entries, ids) of a QA dataset or JSONL file: one entry per pair, id `NAME:LINE`."""
    from clara.data.builders import read_qa, resolve_qa

    path = resolve_qa(ws, ref)
    items = read_qa(path)
    name = path.parent.name if path.name == "train.jsonl" else path.stem
    return ([memory_entry(i.question, i.answer) for i in items],
            [f"{name}:{i.line}" for i in items])


def memory_rows(items: Sequence, k: int, pairs: Sequence | None = None,
                system: str | None = None) -> list[dict]:
    """One chat row per item of `items` (QAItem-like: question, answer): its prompt the top k
    entries BM25 ranks for its question among `pairs` (default: `items`), its own pair put in
    last place when BM25 ranks it below k, in BM25's order; its answer the item's."""
    from clara.chat.engine import rag_prompt
    from clara.data.builders import BM25, chat_row

    pairs = list(items if pairs is None else pairs)
    entries = [memory_entry(p.question, p.answer) for p in pairs]
    where = {(p.question, p.answer): i for i, p in enumerate(pairs)}
    bm25 = BM25(entries)
    rows = []
    for item in items:
        top = bm25.ranked(item.question)[:k]
        own = where.get((item.question, item.answer))
        if own is not None and own not in top:
            top = top[:-1] + [own]
        rows.append(chat_row(rag_prompt(item.question, [entries[j] for j in top]), item.answer,
                             system, origin="memory"))
    return rows
