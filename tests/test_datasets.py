"""Dataset builders: chunks, cpt, sft, CLaRa stages 1-3, atomic folders, list and show."""

from __future__ import annotations

import json

import pytest

from clara import io
from clara.data.builders import (BM25, CptConfig, Document, build_cpt, chunk_documents,
                                 simple_paraphrase)
from clara.data.chunking import RegexTokenizer, chunk_text, load_tokenizer
from clara.data.datasets import split_indices, write_dataset
from clara.data.sources import import_files
from clara.data.validate import require_valid
from clara.errors import UserError, ValidationFailed

TOPICS = [
    ("Varnholt", "glass", "1412", "the river Sel"),
    ("Ostrel", "clocks", "1871", "the Brask canal"),
    ("Maren", "lanterns", "1853", "the north quay"),
    ("Tolvik", "maps", "1790", "the salt marsh"),
    ("Quessa", "bells", "1655", "the old mill race"),
    ("Harrow", "rope", "1701", "the chalk cliffs"),
]


def handbook_text() -> str:
    """Six paragraphs of made-up facts, each about one place."""
    paras = []
    for place, product, year, where in TOPICS:
        paras.append(f"The town of {place} was founded in {year} beside {where}. "
                     f"Its workshops are famous for {product}. Many visitors come in summer "
                     f"because the weather is mild. The harbour master of {place} keeps a "
                     f"large logbook of every ship.")
    return "\n\n".join(paras)


def qa_rows():
    rows = []
    for place, product, year, where in TOPICS:
        rows.append({"question": f"When was {place} founded?", "answer": year,
                     "keywords": [year]})
        rows.append({"question": f"What are the workshops of {place} famous for?",
                     "answer": product})
    return rows


@pytest.fixture
def handbook_ws(workspace, tmp_path):
    f = tmp_path / "handbook.txt"
    f.write_text(handbook_text(), encoding="utf-8")
    import_files(workspace, [f])
    return workspace


def ws_args(*args):
    return ("-w", "test", *args)


# -- chunking --------------------------------------------------------------------------------
def test_chunks_respect_token_bound_and_overlap():
    tok = RegexTokenizer()
    text = handbook_text()
    chunks = chunk_text(text, tok, 40, 8)
    assert len(chunks) > 4
    for c in chunks:
        assert 0 < c.tokens <= 40 and tok.count(c.text) == c.tokens
        assert text[c.start:c.end] == c.text
    for a, b in zip(chunks, chunks[1:]):
        ta = [a.text[s:e] for s, e in tok.spans(a.text)]
        tb = [b.text[s:e] for s, e in tok.spans(b.text)]
        assert ta[-8:] == tb[:8]
    # cuts prefer sentence ends: every chunk but the last ends a sentence
    assert all(c.text.endswith(".") for c in chunks)
    # the whole text is covered, in order
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    with pytest.raises(UserError, match="overlap"):
        chunk_text(text, tok, 10, 10)


def test_chunks_with_a_model_tokenizer(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    chunks = chunk_text(handbook_text(), tok, 30, 4)
    assert len(chunks) > 4
    assert all(tok.count(c.text) <= 30 for c in chunks)


def test_chunks_never_cross_documents():
    docs = [Document("a", "Alpha one. Alpha two. Alpha three. " * 5),
            Document("b", "Beta one. Beta two. " * 5)]
    chunks = chunk_documents(docs, RegexTokenizer(), 12, 2)
    assert {c.source for c in chunks} == {"a", "b"}
    for c in chunks:
        assert c.text in {"a": docs[0].text, "b": docs[1].text}[c.source]
        assert ("Alpha" in c.text) != ("Beta" in c.text)


def test_split_is_seeded():
    assert split_indices(50, 0.2, 0) == split_indices(50, 0.2, 0)
    assert split_indices(50, 0.2, 0)[1] != split_indices(50, 0.2, 1)[1]
    keep, held = split_indices(50, 0.2, 3)
    assert len(held) == 10 and sorted(keep + held) == list(range(50))
    assert split_indices(3, 0.01, 0)[1] != []  # at least one held out


def test_paraphrase_keeps_facts_and_differs():
    text = "In 1853, Maren built a large mill. It was used because the river was small."
    p = simple_paraphrase(text)
    assert p != text and "1853" in p and "Maren" in p
    assert p == simple_paraphrase(text)


def test_bm25_ranks_the_matching_text_first():
    bm = BM25(["the cat sat on the mat", "glass lenses from Varnholt", "a dog in the fog"])
    assert bm.ranked("Who makes glass in Varnholt?")[0] == 1
    assert 1 not in bm.ranked("glass", exclude={1})


def test_bm25_scores_are_okapi_bm25():
    import math
    from collections import Counter

    from clara.data.builders import terms

    texts = ["the cat sat on the mat", "the cat and the cat again", "glass lenses", ""]
    bm = BM25(texts)
    tfs = [Counter(terms(t)) for t in texts]
    avg = sum(sum(tf.values()) for tf in tfs) / len(texts)
    query = "the cat cat lenses"
    for tf, got in zip(tfs, bm.scores(query)):
        n = sum(tf.values())
        want = sum(math.log(1 + (len(texts) - df + 0.5) / (df + 0.5)) * tf[t] * 2.5 /
                   (tf[t] + 1.5 * (0.25 + 0.75 * n / avg))
                   for t in terms(query) if t in tf
                   for df in [sum(t in other for other in tfs)])
        assert got == pytest.approx(want, rel=1e-12)


# -- cpt -------------------------------------------------------------------------------------
def test_build_cpt_from_sources(cli, handbook_ws):
    r = cli(*ws_args("data", "build", "cpt", "hb", "--chunk-tokens", "40", "--overlap", "8",
                     "--valid-share", "0.25"))
    assert r.exit_code == 0, r.output
    folder = handbook_ws.datasets_dir / "hb"
    train, valid = io.read_jsonl(folder / "train.jsonl"), io.read_jsonl(folder / "valid.jsonl")
    assert train and valid
    for row in train + valid:
        assert set(row) == {"text", "source", "chunk", "pages"} and row["pages"] == [1]
        assert RegexTokenizer().count(row["text"]) <= 40
    meta = io.read_toml(folder / "dataset.toml")
    assert meta["kind"] == "cpt" and meta["seed"] == 0
    assert meta["rows"] == {"train": len(train), "valid": len(valid)}
    assert meta["parameters"]["chunk_tokens"] == 40 and meta["parameters"]["overlap"] == 8
    stats = meta["tokens"]["train"]
    assert meta["tokens"]["tokenizer"] == "regex"
    assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["max"] <= 40
    assert require_valid(folder, "text") == meta["rows"]

    # refuses to overwrite; --force replaces
    r = cli(*ws_args("data", "build", "cpt", "hb"))
    assert r.exit_code == 1 and "already exists" in r.output and "--force" in r.output
    r = cli(*ws_args("data", "build", "cpt", "hb", "--force", "--chunk-tokens", "300"))
    assert r.exit_code == 0
    assert io.read_toml(folder / "dataset.toml")["rows"]["train"] < len(train)
    assert [p.name for p in handbook_ws.datasets_dir.iterdir()] == ["hb"]


def test_cpt_with_model_tokenizer_records_it(workspace, tiny_model_dir):
    docs = [Document("d", handbook_text())]
    folder = build_cpt(workspace, "t", CptConfig(tokenizer=str(tiny_model_dir),
                                                 chunk_tokens=50, overlap=5), docs=docs)
    meta = io.read_toml(folder / "dataset.toml")
    assert meta["tokens"]["tokenizer"] == tiny_model_dir.name
    assert 0 < meta["tokens"]["train"]["max"] <= 50


# -- sft -------------------------------------------------------------------------------------
def make_qa(path, n, prefix="q"):
    io.write_jsonl(path, [{"question": f"{prefix} question {i}?", "answer": f"{prefix} {i}"}
                          for i in range(n)])
    return path


def test_sft_golden_general_share_and_seeded_split(cli, workspace, tmp_path):
    qa = make_qa(tmp_path / "qa.jsonl", 40)
    golden = make_qa(tmp_path / "golden.jsonl", 4, "gold")
    general = make_qa(tmp_path / "general.jsonl", 100, "general")

    def build(name, *extra):
        r = cli(*ws_args("data", "build", "sft", name, "--qa", str(qa), "--golden", str(golden),
                         "--general", str(general), "--general-share", "0.2",
                         "--system", "Be brief.", *extra))
        assert r.exit_code == 0, r.output
        folder = workspace.datasets_dir / name
        return (folder, io.read_jsonl(folder / "train.jsonl"),
                io.read_jsonl(folder / "valid.jsonl"))

    folder, train, valid = build("s0")
    for row in train + valid:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert row["messages"][0]["content"] == "Be brief."
    origins = [r["origin"] for r in train]
    assert origins.count("golden") == 4 and all(r["origin"] == "qa" for r in valid)
    assert len(valid) == 4  # 10% of 40
    # 36 qa + 4 golden = 40 domain rows; general is 20% of the final train set
    assert origins.count("general") == 10 and len(train) == 50
    meta = io.read_toml(folder / "dataset.toml")
    assert meta["general"]["rows"] == 10 and meta["general"]["share"] == 0.2
    assert meta["general"]["actual_share"] == 0.2 and meta["golden_rows"] == 4

    _, train_again, valid_again = build("s0b")
    assert valid_again == valid and train_again == train
    _, _, valid_other = build("s1", "--seed", "1")
    assert {json.dumps(r) for r in valid_other} != {json.dumps(r) for r in valid}

    r = cli(*ws_args("data", "build", "sft", "shipped", "--qa", str(qa)))  # data/general_qa
    assert r.exit_code == 0, r.output
    meta = io.read_toml(workspace.datasets_dir / "shipped" / "dataset.toml")
    assert meta["general"]["file"].endswith("general_qa.jsonl") and meta["general"]["rows"] == 9

    r = cli(*ws_args("data", "build", "sft", "plain", "--qa", str(qa), "--no-general"))
    assert r.exit_code == 0
    train = io.read_jsonl(workspace.datasets_dir / "plain" / "train.jsonl")
    assert len(train) == 36 and [m["role"] for m in train[0]["messages"]] == ["user", "assistant"]


def test_sft_golden_rows_never_in_valid_even_with_a_large_share(workspace, tmp_path):
    from clara.data.builders import SftConfig, build_sft

    qa = make_qa(tmp_path / "qa.jsonl", 10)
    golden = make_qa(tmp_path / "golden.jsonl", 10, "gold")
    for seed in range(4):
        folder = build_sft(workspace, f"g{seed}", SftConfig(qa=str(qa), golden=str(golden),
                                                            general=None, valid_share=0.5,
                                                            seed=seed))
        valid = io.read_jsonl(folder / "valid.jsonl")
        train = io.read_jsonl(folder / "train.jsonl")
        assert not any("gold" in m["content"] for r in valid for m in r["messages"])
        assert sum(r["origin"] == "golden" for r in train) == 10


# -- failures leave nothing ------------------------------------------------------------------
def test_bad_qa_file_fails_with_location_and_leaves_no_dataset(cli, handbook_ws, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "answer": "1412"}\n{"question": "Q2?"}\n'
                   '{"question": "Q3?", "answer": 7}\n')
    for args in (("sft", "x", "--qa", str(bad), "--no-general"),
                 ("stage2", "x", "--qa", str(bad))):
        r = cli(*ws_args("data", "build", *args))
        assert r.exit_code == 3  # ExitCode.BAD_DATA
        assert f"{bad}:2: answer: missing" in r.output
        assert f"{bad}:3: answer: expected a string, got number" in r.output
        assert "Traceback" not in r.output
    lost = tmp_path / "lost.jsonl"
    io.write_jsonl(lost, [{"question": "Where is the zeppelin hangar?", "answer": "Nowhere"}])
    r = cli(*ws_args("data", "build", "stage3", "x", "--qa", str(lost)))
    assert r.exit_code == 3 and f"{lost}:1: answer: no chunk contains the answer" in r.output
    assert list(handbook_ws.datasets_dir.iterdir()) == []


def test_invalid_output_rows_are_never_renamed_into_place(workspace):
    with pytest.raises(ValidationFailed) as info:
        write_dataset(workspace, "broken", "stage2",
                      {"train": [{"question": "q", "docs": ["a", "b"], "answer": "x"},
                                 {"question": "q", "docs": ["a"], "answer": "x"}]})
    assert "broken/train.jsonl:2: docs: has 1 documents" in str(info.value)
    assert list(workspace.datasets_dir.iterdir()) == []


# -- CLaRa stages ----------------------------------------------------------------------------
def build_stage(cli, ws, tmp_path, stage, name, *extra):
    qa = tmp_path / "qa.jsonl"
    io.write_jsonl(qa, qa_rows())
    r = cli(*ws_args("data", "build", f"stage{stage}", name, "--qa", str(qa),
                     "--doc-tokens", "48", "--valid-share", "0.25", *extra))
    assert r.exit_code == 0, r.output
    folder = ws.datasets_dir / name
    return folder, io.read_jsonl(folder / "train.jsonl") + io.read_jsonl(folder / "valid.jsonl")


def test_stage1_rows_exact_format(cli, handbook_ws, tmp_path):
    folder, rows = build_stage(cli, handbook_ws, tmp_path, 1, "s1")
    assert require_valid(folder, "stage1")
    qa_rows_ = [r for r in rows if r["data_type"] == "qa"]
    para = [r for r in rows if r["data_type"] == "paraphrase"]
    assert len(para) == 6  # one per chunk: one paragraph each at 48 tokens
    for r in qa_rows_:
        assert set(r) == {"data_type", "question", "answers", "docs"}
        assert len(r["docs"]) == 1 and len(r["question"]) == len(r["answers"]) == 2
        for a in r["answers"]:
            assert a in r["docs"][0]
    for r in para:
        assert set(r) == {"data_type", "answers", "docs"} and len(r["answers"]) == 1
        assert r["answers"][0] != r["docs"][0]
    assert sum(len(r["question"]) for r in qa_rows_) == 12


def test_stage2_and_stage3_rows(cli, handbook_ws, tmp_path):
    folder, rows = build_stage(cli, handbook_ws, tmp_path, 2, "s2", "--k", "4")
    assert require_valid(folder, "stage2") == {"train": 9, "valid": 3}
    for r in rows:
        assert set(r) == {"question", "docs", "answer", "pos_index"}
        assert len(r["docs"]) == 4 and len(set(r["docs"])) == 4 and len(r["pos_index"]) == 1
        gold = r["docs"][r["pos_index"][0]]
        assert r["answer"] in gold
        place = next(t[0] for t in TOPICS if t[0] in r["question"])
        assert f"town of {place}" in gold
        assert all(r["answer"] not in d for i, d in enumerate(r["docs"]) if i != r["pos_index"][0])
    positions = {r["pos_index"][0] for r in rows}
    assert len(positions) > 1  # shuffled, not always first

    folder, rows = build_stage(cli, handbook_ws, tmp_path, 3, "s3", "--candidates", "20")
    assert require_valid(folder, "stage3")
    assert io.read_toml(folder / "dataset.toml")["parameters"]["candidates"] == 6
    for r in rows:
        assert len(r["docs"]) == 6 and r["answer"] in r["docs"][r["pos_index"][0]]
    # the same seed gives the same rows
    folder2, rows2 = build_stage(cli, handbook_ws, tmp_path, 3, "s3b", "--candidates", "20")
    assert rows2 == rows


def test_stage_gold_from_source_and_doc_fields(workspace, tmp_path):
    from clara.data.builders import StageConfig, build_stage as build

    docs = [Document("a-1", "Ships leave at dawn. The ferry is red.", name="a.md"),
            Document("b-2", "Ships leave at dawn. The ferry is blue.", name="b.md")]
    qa = tmp_path / "qa.jsonl"
    io.write_jsonl(qa, [{"question": "When do ships leave?", "answer": "at dawn",
                         "source": "b.md"},
                        {"question": "Which ferry?", "answer": "the one", "doc": "a-1#0"}])
    folder = build(workspace, "g", StageConfig(stage=2, qa=str(qa), k=2, valid_share=0),
                   docs=docs)
    rows = io.read_jsonl(folder / "train.jsonl")
    assert rows[0]["docs"][rows[0]["pos_index"][0]].endswith("blue.")
    assert rows[1]["docs"][rows[1]["pos_index"][0]].endswith("red.")


# -- list and show ---------------------------------------------------------------------------
def test_list_and_show(cli, handbook_ws, tmp_path):
    build_stage(cli, handbook_ws, tmp_path, 2, "s2")
    r = cli(*ws_args("data", "list", "--format", "json"))
    assert r.exit_code == 0
    listing = json.loads(r.output)
    assert [(d["name"], d["kind"], d["train"], d["valid"]) for d in listing] == \
        [("s2", "stage2", 9, 3)]
    r = cli(*ws_args("data", "list"))
    assert "s2" in r.output and "stage2" in r.output

    r = cli(*ws_args("data", "show", "s2", "--max-length", "150", "--samples", "2",
                     "--format", "json"))
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["splits"]["train"]["rows"] == 9 and len(report["samples"]) == 2
    assert report["kind"] == "stage2" and report["format"]  # the kind `data list` names
    share = report["splits"]["train"]["truncated"]
    assert 0 <= share <= 1
    lens = [RegexTokenizer().count("\n".join(row["docs"] + [row["question"], row["answer"]]))
            for row in io.read_jsonl(handbook_ws.datasets_dir / "s2" / "train.jsonl")]
    assert share == round(sum(n > 150 for n in lens) / len(lens), 4)
    r = cli(*ws_args("data", "show", "s2"))
    assert r.exit_code == 0 and "P90" in r.output and "sample 1:" in r.output
