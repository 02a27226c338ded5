"""The CLaRa claim at test size: a tiny model trained through `clara train pipeline` answers
questions about facts it never saw from their compressed form alone, far above chance.

The facts are made-up sentences ("Dovan painted a salt mine in 1817."): who did it is drawn
independently of what and when, so no model answers "Who painted a salt mine in 1817?" about an
unseen fact better than chance without reading its document; closed-book is chance at best. The
control that proves the answers come from the compressed document: given the compressed
document of a fact by someone else, the model answers with that document's person.

The base is `data/models/reader`, a tiny Llama pretrained from scratch to answer questions from
documents in raw text (another world's: these facts are new to it; its README says how). CLaRa
trains LoRA adapters on a frozen base, so the base must already read: from a random base the same
pipeline stays at chance, and teaching a base to read takes about 12 minutes on two cores,
beyond this suite.
"""

from __future__ import annotations

import random
from collections import Counter

import mlx.core as mx
import pytest

from clara import io
from clara.evaluation.metrics import recall_at_k
from clara.method import checkpoint, inference, synthetic
from clara.refs import resolve

from conftest import DATA

pytestmark = pytest.mark.slow

READER = DATA / "models" / "reader"
# 2200 facts: with 1000 the generator learns the training answers (2.4 epochs) and stays near
# chance on unseen facts (EM 0.21)
FACTS = synthetic.facts(2400, seed=1)
TRAIN, TEST = FACTS[:2200], FACTS[2200:2320]
# stage 3 sees 40 x 8 questions over 20 candidates drawn from 320 facts: each candidate document
# comes back about 20 times, and its frozen compressor's vectors are computed once
# (ClaraStageTask._candidate_vectors)
STAGE3_TRAIN = TRAIN[:320]
CANDIDATES = 20


def write(ws, name: str, train: list[dict], valid: list[dict]) -> None:
    io.write_jsonl(ws.datasets_dir / name / "train.jsonl", train)
    io.write_jsonl(ws.datasets_dir / name / "valid.jsonl", valid)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One pipeline run (stages 1-3, 130, 200 and 40 steps: about 2.3 CPU-minutes), stage 3 with
    the pipeline's defaults for it (bench/clara_stage3_study.py says why these) over 20
    candidates, where stage 2 leaves it room to lift (0.68 of 20 against 0.91 of 4; 40 steps
    lift it as far as 60, 0.78); stage 1 at
    130 steps still leaves stage 2 reading (EM 0.91; at 120 it read too little, EM 0.55). Stage
    2 needs its 200 steps for the alignment: at 170 it read (EM 0.91) but the query reasoner
    started at 0.56 of 4 (round five of the study)."""
    from click.testing import CliRunner

    from clara.cli import cli
    from clara.workspace import Workspace

    root = tmp_path_factory.mktemp("quality")
    ws = Workspace(root, "q").create()
    write(ws, "facts-stage1", synthetic.stage1_rows(TRAIN, paraphrase_every=4),
          synthetic.stage1_rows(TEST[:16]))
    write(ws, "facts-stage2", synthetic.stage2_rows(TRAIN, 1), synthetic.stage2_rows(TEST[:16], 1))
    write(ws, "facts-stage3", synthetic.stage3_rows(STAGE3_TRAIN, CANDIDATES, seed=1),
          synthetic.stage3_rows(TEST[:24], CANDIDATES, seed=1))
    r = CliRunner().invoke(cli, [
        "--root", str(root), "-w", "q", "train", "pipeline", "-m", str(READER),
        "--stage1", "facts-stage1", "--stage2", "facts-stage2", "--stage3", "facts-stage3",
        "--name", "p", "--stage1-iters", "130", "--stage2-iters", "200", "--stage3-iters", "40",
        "--doc-max-tokens", "32", "--compression-rate", "4", "--lora-rank", "32",
        "--lora-dropout", "0", "--mse-weight", "0", "--batch-size", "8", "--max-len", "256",
        "--top-k", "1", "--learning-rate", "1e-3", "--warmup-steps", "20",
        "--val-every", "0", "--val-batches", "2", "--save-every", "1000", "--seed", "0"],
        catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "quality on stage 3's validation rows: stage 2 -> stage 3" in r.output
    # retrieval_center auto: the facts differ (0.81 at round four's 300 stage-1 steps): plain
    assert "retrieval_center: off (auto: doc-doc cosine 0." in r.output
    out = {s: ws.runs_dir / f"p-stage{s}" / "adapters" / "last" for s in (1, 2, 3)}
    out["handed over"] = resolve(ws, "p").path  # what the pipeline hands over: stage 3's best
    return out


def test_answers_unseen_facts_from_their_compressed_form(trained):
    model = checkpoint.load(trained[2], inference=True)
    chance = max(Counter(f["who"] for f in TRAIN).values()) / len(TRAIN)
    rows = synthetic.stage2_rows(TEST, 1)
    vectors = inference.compress_documents(model, [f["doc"] for f in TEST])

    def answer(question: str, doc: int) -> str:
        return inference.answer_from_compressed(model, question, vectors[doc:doc + 1],
                                                max_tokens=6).strip()

    em = sum(answer(r["question"], i) == f["who"]
             for i, (r, f) in enumerate(zip(rows, TEST))) / len(TEST)
    # the control: each question over the compressed document of a fact by someone else
    rng = random.Random(0)
    other = [rng.choice([j for j, g in enumerate(TEST) if g["who"] != f["who"]]) for f in TEST]
    swapped = [answer(r["question"], j) for r, j in zip(rows, other)]
    still_gold = sum(a == f["who"] for a, f in zip(swapped, TEST)) / len(TEST)
    follows_doc = sum(a == TEST[j]["who"] for a, j in zip(swapped, other)) / len(TEST)
    print(f"CLaRa stage 2 EM {em:.2f} (chance {chance:.2f}); over another fact's document: "
          f"gold {still_gold:.2f}, that document's person {follows_doc:.2f}")
    assert em >= max(0.5, chance + 0.3)
    assert still_gold <= chance + 0.1  # without its own document the question is unanswerable
    assert follows_doc >= 0.5  # and the answer follows the compressed document given


def test_stage3_lifts_the_retrieval_and_keeps_the_answers(trained):
    """Stage 3 from stage 2 with the pipeline's defaults lifts the query reasoner's recall@1 of
    20 on unseen facts, keeps it over 4, and lowers neither the answers from the gold document
    nor those from its own pick (the reference's stage 3 took EM from the gold document from
    100 to 10 here, bench/clara_stage3_study.py). Asked only "who", stage 2 alone lets the name
    dominate the compressed vectors and the query reasoner starts at chance (0.21 of 4); its
    question/document alignment (stage2_align 0.02) keeps what questions name in them. Stage 3
    then ranks each gold document against every candidate of its batch (stage3_negatives
    batch): 0.68 -> 0.78 of 20 here (0.68 -> 0.74 with each row's own candidates, rows),
    73 -> 80 on 200 unseen facts in the study's eighth round."""
    rows = {n: synthetic.stage3_rows(TEST, n, seed=2) for n in (CANDIDATES, 4)}
    start = checkpoint.load(trained[2], stage="stage3")
    start.eval()
    end = checkpoint.load(trained[3], inference=True)
    # stage 3 trains the query reasoner alone: the compressor (and the memory rows) and the
    # generator it hands over are stage 2's, bit for bit, so an answer depends only on the
    # question and the document it is given, whichever model gives it
    assert inference.compressor_digest(end) == inference.compressor_digest(start)
    same = checkpoint.adapter_digests(end), checkpoint.adapter_digests(start)
    assert same[0]["generator"] == same[1]["generator"]
    docs = [f["doc"] for f in TEST]  # every candidate is one of these
    vectors = inference.compress_documents(end, docs)
    answers: dict[tuple[str, str], bool] = {}

    def right(r, doc: str) -> bool:
        if (r["question"], doc) not in answers:
            i = docs.index(doc)
            answers[r["question"], doc] = inference.answer_from_compressed(
                end, r["question"], vectors[i:i + 1], max_tokens=6).strip() == r["answer"]
        return answers[r["question"], doc]

    def ranking(model) -> dict[str, dict[int, float]]:
        """Each question's score of every test document, by the query reasoner. The facts
        score plain (auto: off), so a document's score does not depend on the other
        candidates: one retrieval per question ranks any candidate set."""
        assert model.config.retrieval_center == "off"
        out = {}
        for r in rows[4]:
            idx, sc = inference.retrieve(model, r["question"], vectors, len(docs))
            out[r["question"]] = dict(zip(idx, sc))
        return out

    def scores(rank, n):
        hits, em_own, em_gold = [], [], []
        for r in rows[n]:
            s = rank[r["question"]]
            pick = max(range(n), key=lambda j: s[docs.index(r["docs"][j])])
            hits.append(recall_at_k([pick], r["pos_index"], 1))
            em_own.append(right(r, r["docs"][pick]))
            em_gold.append(right(r, r["docs"][r["pos_index"][0]]))
        k = len(rows[n])
        return sum(hits) / k, sum(em_own) / k, sum(em_gold) / k

    rank0, rank1 = ranking(start), ranking(end)
    (r0, own0, gold0), (r1, own1, gold1) = scores(rank0, CANDIDATES), scores(rank1, CANDIDATES)
    (q0, _, _), (q1, _, _) = scores(rank0, 4), scores(rank1, 4)
    print(f"stage 2 -> stage 3 on unseen facts: recall@1 of {CANDIDATES} {r0:.2f} -> {r1:.2f}, "
          f"of 4 {q0:.2f} -> {q1:.2f}; EM from its own top-1 of {CANDIDATES} {own0:.2f} -> "
          f"{own1:.2f}; EM from the gold document {gold0:.2f} -> {gold1:.2f}")
    # 120 questions: the sd of recall near 0.7 is about 0.04
    assert gold1 == gold0 >= 0.5  # the generator keeps what stage 2 taught it
    assert r0 >= 0.05 + 0.45  # stage 2 left the query reasoner documents it can rank
    assert r1 >= r0 + 0.05  # stage 3 lifts it (0.68 -> 0.78 measured)
    assert q1 >= q0 - 0.02 and q1 >= 0.25 + 0.6  # and keeps it over 4 (0.91 -> 0.93)
    assert own1 >= own0  # its own pick answers at least as often
    # what the pipeline hands over (best/ by validation EM + recall: its start or its last)
    handed = checkpoint.load(trained["handed over"], inference=True)
    if checkpoint.adapter_digests(handed) not in (same[0], same[1]):  # neither: score it
        assert scores(ranking(handed), CANDIDATES)[0] >= r0
