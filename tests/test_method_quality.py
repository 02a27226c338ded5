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

import pytest

from clara import io
from clara.method import checkpoint, inference, synthetic

from conftest import DATA

READER = DATA / "models" / "reader"
# 2200 facts: with 1000 the generator learns the training answers (2.4 epochs) and stays near
# chance on unseen facts (EM 0.21)
FACTS = synthetic.facts(2400, seed=1)
TRAIN, TEST = FACTS[:2200], FACTS[2200:]


def write(ws, name: str, train: list[dict], valid: list[dict]) -> None:
    io.write_jsonl(ws.datasets_dir / name / "train.jsonl", train)
    io.write_jsonl(ws.datasets_dir / name / "valid.jsonl", valid)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One pipeline run (stages 1-3, about 2 minutes on two cores). Stage 3 is short and gentle
    here: its retrieval cannot improve on these facts (the compressor, trained on "who"
    questions, keeps little but the name, which the question lacks), so the claim is stage 2's;
    stage 3's lift is measured on the richer benchmark (test_method_retrieval_quality.py)."""
    from click.testing import CliRunner

    from clara.cli import cli
    from clara.workspace import Workspace

    root = tmp_path_factory.mktemp("quality")
    ws = Workspace(root, "q").create()
    write(ws, "facts-stage1", synthetic.stage1_rows(TRAIN, paraphrase_every=4),
          synthetic.stage1_rows(TEST[:16]))
    write(ws, "facts-stage2", synthetic.stage2_rows(TRAIN, 1), synthetic.stage2_rows(TEST[:16], 1))
    write(ws, "facts-stage3", synthetic.stage3_rows(TRAIN, 4, seed=1),
          synthetic.stage3_rows(TEST[:16], 4, seed=1))
    r = CliRunner().invoke(cli, [
        "--root", str(root), "-w", "q", "train", "pipeline", "-m", str(READER),
        "--stage1", "facts-stage1", "--stage2", "facts-stage2", "--stage3", "facts-stage3",
        "--name", "p", "--stage1-iters", "300", "--stage2-iters", "300", "--stage3-iters", "20",
        "--doc-max-tokens", "32", "--compression-rate", "4", "--lora-rank", "32",
        "--lora-dropout", "0", "--mse-weight", "0", "--batch-size", "8", "--max-len", "256",
        "--top-k", "1", "--learning-rate", "1e-3", "--stage3-lr", "2e-4", "--warmup-steps", "20",
        "--val-every", "0", "--val-batches", "2", "--save-every", "1000", "--seed", "0"],
        catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return {s: ws.runs_dir / f"p-stage{s}" / "adapters" / "last" for s in (1, 2, 3)}


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
