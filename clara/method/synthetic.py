"""Tiny made-up facts in the three stage formats, for tests and demos (no downloads)."""

from __future__ import annotations

import random

NAMES = ["Alia", "Borun", "Cetra", "Dovan", "Elsin", "Farol", "Gemma", "Hollis"]
THINGS = ["the river mill", "a glass tower", "the northern archive", "a salt mine",
          "the harbour bell", "an orchard of pears"]
VERBS = ["built", "repaired", "guarded", "painted", "discovered", "sold"]


def facts(n: int, seed: int = 0) -> list[dict]:
    """n distinct facts {doc, who, what, verb, year}."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        f = (rng.choice(NAMES), rng.choice(VERBS), rng.choice(THINGS), str(rng.randint(1790, 1829)))
        if f in seen:
            continue
        seen.add(f)
        who, verb, what, year = f
        out.append({"doc": f"{who} {verb} {what} in {year}.", "who": who, "verb": verb,
                    "what": what, "year": year})
    return out


def stage1_rows(fs: list[dict], paraphrase_every: int = 0) -> list[dict]:
    rows = []
    for i, f in enumerate(fs):
        if paraphrase_every and i % paraphrase_every == paraphrase_every - 1:
            rows.append({"data_type": "paraphrase", "docs": [f["doc"]],
                         "answers": [f"In {f['year']}, {f['who']} {f['verb']} {f['what']}."]})
        else:
            rows.append({"data_type": "qa", "docs": [f["doc"]],
                         "question": [f"Who {f['verb']} {f['what']}?", "When?"],
                         "answers": [f["who"], f["year"]]})
    return rows


# what a question may ask of a fact: each names the other fields, so a compressor trained on all
# of them keeps every field (asked only "who", stage 2's compressor drops what the question names
# and a query reasoner has nothing to rank by: bench/clara_stage3_study.py)
QUESTIONS = ("who", "when", "what")


def question(f: dict, kind: str = "who") -> tuple[str, str]:
    """(question, answer) of one kind about a fact."""
    if kind == "who":
        return f"Who {f['verb']} {f['what']} in {f['year']}?", f["who"]
    if kind == "when":
        return f"When did {f['who']} {f['verb']} {f['what']}?", f["year"]
    if kind == "what":
        return f"What did {f['who']} {f['verb']} in {f['year']}?", f["what"]
    raise ValueError(f"question kind {kind!r} is not one of {', '.join(QUESTIONS)}")


def stage2_rows(fs: list[dict], k: int, seed: int = 0, kinds: tuple[str, ...] = ("who",)
                ) -> list[dict]:
    """One row per fact and question kind: its document among k - 1 others' at a random slot."""
    rng = random.Random(seed)
    rows = []
    for i, f in enumerate(fs):
        others = [g["doc"] for j, g in enumerate(fs) if j != i]
        docs = rng.sample(others, k - 1)
        gold = rng.randrange(k)
        docs.insert(gold, f["doc"])
        for kind in kinds:
            q, a = question(f, kind)
            rows.append({"question": q, "docs": docs, "answer": a, "pos_index": [gold]})
    return rows


def stage3_rows(fs: list[dict], n_candidates: int, seed: int = 0,
                kinds: tuple[str, ...] = ("who",)) -> list[dict]:
    return stage2_rows(fs, n_candidates, seed, kinds)
