"""The synthetic knowledge benchmark: determinism, held-out entities, formats."""

from __future__ import annotations

import json

from clara import io
from clara.data.synth import PARTS, build_synth, make_world
from clara.data.validate import require_valid
from clara.workspace import Workspace

SMALL = 24  # entities: enough for every sort of question, fast to build


def jsonl_bytes(ws: Workspace, name: str) -> dict[str, bytes]:
    out = {}
    for part in PARTS:
        for f in sorted((ws.datasets_dir / f"{name}-{part}").glob("*.jsonl")):
            out[f"{part}/{f.name}"] = f.read_bytes()
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(cli, root):
    for ws_name in ("a", "b"):
        assert cli("ws", "create", ws_name).exit_code == 0
    for ws_name, seed in (("a", "0"), ("b", "0"), ("b", "1")):
        name = "toy" if seed == "0" else "other"
        r = cli("-w", ws_name, "data", "synth", name, "--seed", seed, "--entities", str(SMALL))
        assert r.exit_code == 0, r.output
    a, b = jsonl_bytes(Workspace(root, "a"), "toy"), jsonl_bytes(Workspace(root, "b"), "toy")
    assert len(a) == 20 and a == b  # 7 parts, train/valid/test except docs (train/test)
    other = jsonl_bytes(Workspace(root, "b"), "other")
    assert other.keys() == a.keys() and all(other[k] != a[k] for k in a)
    # workspace dataset names validate by name
    r = cli("-w", "a", "data", "validate", "toy-stage2")
    assert r.exit_code == 0 and r.output.startswith("ok: ") and "(stage2)" in r.output
    # a second call refuses to overwrite
    r = cli("-w", "a", "data", "synth", "toy", "--entities", str(SMALL))
    assert r.exit_code == 1 and "already exists" in r.output


def test_held_out_entities_appear_only_in_test(workspace):
    build_synth(workspace, "toy", seed=3, entities=SMALL, test_share=0.25)
    ds = workspace.datasets_dir
    meta = io.read_toml(ds / "toy-qa" / "dataset.toml")
    held = set(meta["parameters"]["test_entities"])
    assert len(held) == 6
    docs = {r["id"]: r for s in ("train", "test")
            for r in io.read_jsonl(ds / "toy-docs" / f"{s}.jsonl")}
    held_names = {docs[i]["entity"] for i in held}
    assert {r["id"] for r in io.read_jsonl(ds / "toy-docs" / "test.jsonl")} == held
    for part in PARTS:
        for split in ("train", "valid"):
            f = ds / f"toy-{part}" / f"{split}.jsonl"
            if f.is_file():
                text = f.read_text(encoding="utf-8")
                assert not any(n in text for n in held_names), (part, split)
    test_qa = io.read_jsonl(ds / "toy-qa" / "test.jsonl")
    assert test_qa and all(q["entity"] in held for q in test_qa)
    for part in ("sft", "stage1", "stage2", "stage3", "cpt"):
        text = (ds / f"toy-{part}" / "test.jsonl").read_text(encoding="utf-8")
        assert all(any(n in line for n in held_names) for line in text.splitlines()), part


def test_questions_kinds_and_gold_docs(workspace):
    world = make_world(0, SMALL)
    kinds = {(q["kind"], q["form"]) for q in world.questions}
    assert kinds == {("single", "original"), ("single", "paraphrase"),
                     ("two-hop", "original"), ("two-hop", "paraphrase")}
    by_id = {e.id: e for e in world.entities}
    for q in world.questions:
        assert q["split"] in ("train", "valid", "test")
        assert q["split"] == "valid" if q["form"] == "paraphrase" else q["split"] != "valid"
        docs = [world.doc(by_id[d]) for d in q["gold_docs"]]
        assert len(docs) == (2 if q["kind"] == "two-hop" else 1)
        assert q["answer"] in docs[-1]  # the answer is in the last hop's document
        assert q["keywords"][0] in docs[-1]
    # documents are short: 2 to 4 sentences
    for e in world.entities:
        assert 2 <= world.doc(e).count(". ") + 1 <= 4
        assert world.alt_doc(e) != world.doc(e)


def test_every_part_validates_with_the_stage_formats(workspace):
    paths = build_synth(workspace, "toy", entities=SMALL)
    kinds = ["docs", "qa", "text", "chat", "stage1", "stage2", "stage3"]
    for path, kind in zip(paths, kinds):
        counts = require_valid(path, kind)
        assert counts["train"] > 0 and counts.get("test", 0) > 0
    ds = workspace.datasets_dir
    s2 = io.read_jsonl(ds / "toy-stage2" / "train.jsonl")
    assert all(len(r["docs"]) == 5 for r in s2)
    assert {len(r["pos_index"]) for r in s2} == {1, 2}  # single and two-hop
    for r in s2:
        assert set(r) == {"question", "docs", "answer", "pos_index"}
        assert r["answer"] in r["docs"][r["pos_index"][-1]] or \
            any(r["answer"] in r["docs"][i] for i in r["pos_index"])
    n = {len(r["docs"]) for s in ("train", "valid", "test")
         for r in io.read_jsonl(ds / "toy-stage3" / f"{s}.jsonl")}
    candidates = io.read_toml(ds / "toy-stage3" / "dataset.toml")["parameters"]["candidates"]
    train_docs = len(io.read_jsonl(ds / "toy-docs" / "train.jsonl"))
    assert n == {candidates} and candidates == min(20, train_docs) == 19  # capped by the docs
    s1 = io.read_jsonl(ds / "toy-stage1" / "train.jsonl")
    assert {r["data_type"] for r in s1} == {"qa", "paraphrase"}
    for r in s1:
        assert len(r["docs"]) == 1
        if r["data_type"] == "qa":
            assert len(r["question"]) == len(r["answers"]) >= 3
    sft = io.read_jsonl(ds / "toy-sft" / "train.jsonl")
    assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant"]
    qa = io.read_jsonl(ds / "toy-qa" / "train.jsonl")[0]
    assert {"question", "answer", "split", "entity", "kind", "gold_docs", "keywords"} <= set(qa)
    assert json.loads(json.dumps(qa)) == qa


def test_a_large_world_builds_with_unique_names_and_shared_inventions():
    # 1000 entities: more people than distinct "the <adj> <noun>" inventions (240), which used
    # to fail with "could not make enough distinct names"
    world = make_world(seed=0, entities=1000)
    people = [e for e in world.entities if e.type == "person"]
    assert len(people) > 240
    names = [e.name for e in world.entities]
    assert len(set(names)) == len(names)
    inventions = [e.facts["invention"] for e in people]
    assert len(set(inventions)) < len(inventions)  # shared once the pool runs low
    assert len(set(inventions[:200])) == 200  # but distinct while it lasts (small worlds as before)
