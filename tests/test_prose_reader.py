"""The prose reading corpus of bench/prose_reader.py (the demo base's pretraining material):
deterministic, grounded (every answer is a span of its context), and made up (nothing of the
handbook's evaluation questions in its vocabulary)."""

from __future__ import annotations

import re
import sys

from clara import io

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import prose_reader  # noqa: E402


def _answer_and_context(row: dict) -> tuple[str, str]:
    msgs = row["messages"]
    return msgs[-1]["content"], msgs[-2]["content"]


def test_no_eval_keyword_list_is_in_the_vocabulary():
    entries = [s for values in prose_reader.VOCABULARY.values() for v in values
               for s in (v if isinstance(v, tuple) else (v,))]
    vocab = {w.lower() for v in entries for w in [v, *re.findall(r"[A-Za-z]+", v)]}
    assert len(prose_reader.VOCABULARY) >= 15 and len(vocab) > 300
    rows = io.read_jsonl(REPO / "data" / "eval_questions.jsonl")
    for r in rows:
        assert not all(k.lower() in vocab for k in r["keywords"]), (r["id"], r["keywords"])
    # nor does a named thing of the handbook come out of the name generator
    text = "\n".join(prose_reader.article(seed)[0] for seed in range(60))
    names = [k for r in rows for k in r["keywords"] if k[:1].isupper()]
    assert len(names) >= 8
    for name in names:
        assert name not in text, name


def test_rows_are_deterministic_and_every_answer_is_a_span_of_its_context():
    a, b = prose_reader.reading_rows(6, seed=3), prose_reader.reading_rows(6, seed=3)
    assert a == b and len(a) >= 60
    assert prose_reader.reading_rows(2, seed=4) != prose_reader.reading_rows(2, seed=3)
    formats = set()
    for row in a:
        answer, context = _answer_and_context(row)
        assert answer and answer in context.rsplit("Question:", 1)[0], (answer, context)
        formats.add(row["messages"][0]["role"])
    assert formats == {"system", "user"}  # both the CLaRa text prompt and the rag prompt
    # the questions come in several wordings of each relation
    questions = {_answer_and_context(r)[1].rsplit("Question:", 1)[1].split()[0] for r in a}
    assert {"When", "Where", "Who", "How", "What"} <= questions


def test_copy_and_closed_book_rows():
    rows = prose_reader.reading_rows(2, seed=3, copy_share=1.0, closed_share=1.0)
    read = prose_reader.reading_rows(2, seed=3)
    copies = [r for r in rows if r["messages"][-2]["content"].endswith("Repeat the background.")]
    closed = [r for r in rows if "Question" not in r["messages"][-2]["content"]
              and r not in copies]
    assert len(copies) == len(closed) == len(read) and len(rows) == 3 * len(read)
    for r in copies:  # the gold chunk, repeated
        answer, context = _answer_and_context(r)
        assert context == f"Background:\n{answer}\n\nRepeat the background."
    # closed-book: the question alone, answered by a span some reading row reads
    spans = {_answer_and_context(r)[0] for r in read}
    assert all(_answer_and_context(r)[0] in spans and len(r["messages"]) == 2 for r in closed)
