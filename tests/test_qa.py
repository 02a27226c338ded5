"""QA generation from documents (`clara data build qa`): the rule-based generator, the grounding
check, golden rows, provenance, and the generated dataset feeding the SFT and CLaRa builders."""

from __future__ import annotations

import json

import pytest

from clara import io
from clara.data.qa import (QAGenConfig, build_qa, delete_rows, generate_qa, grounded,
                           parse_pairs, rule_pairs)

from conftest import DATA

HANDBOOK_MD = DATA / "sample" / "karsholm_observatory_handbook.md"
HANDBOOK_PDF = DATA / "sample" / "karsholm_observatory_handbook.pdf"


@pytest.fixture
def handbook(workspace):
    from clara.data.sources import import_files

    import_files(workspace, [HANDBOOK_PDF])
    return workspace


def test_rule_generator_writes_template_and_cloze_questions_grounded_in_the_text():
    text = ("The observatory was founded in 1961 by the astronomer Dr. Ingrid Maalen. "
            "A return ticket costs 24 euros for adults.\n"
            "- Amara Okafor, head of instruments, responsible for all telescopes.\n"
            "All data are stored on the station's server, called Fulmar, which has 480 "
            "terabytes of disk space.")
    pairs = dict(rule_pairs(text))
    assert pairs["When was the observatory founded?"] == "1961"
    assert pairs["Who is the head of instruments?"] == "Amara Okafor"
    assert pairs["How much does a return ticket cost?"] == "24 euros"
    assert pairs["What is the station's server called?"] == "Fulmar"
    cloze = {q: a for q, a in pairs.items() if q.startswith("Fill in the blank")}
    assert "480 terabytes" in cloze.values() and "Dr. Ingrid Maalen" in cloze.values()
    # "Dr." does not end a sentence; every blank is the answer's place in its sentence
    for q, a in cloze.items():
        assert q.count("___") == 1 and q.replace("Fill in the blank: ", "").replace("___", a) \
            in " ".join(text.replace("- ", "").split())
    assert all(grounded(a, text) for a in pairs.values())


def test_rule_generator_is_deterministic(handbook, root):
    cfg = QAGenConfig(per_chunk=4, chunk_tokens=64)
    a, b = generate_qa(handbook, cfg), generate_qa(handbook, cfg)
    assert a.rows == b.rows and len(a.rows) > 40
    assert a.report.generator == "rules" and {r["origin"] for r in a.rows} == {"rules"}
    # provenance: source file, page and chunk of each pair, and the answer is in that chunk
    from clara.data.builders import chunk_documents, documents_from_sources
    from clara.data.chunking import RegexTokenizer

    chunks = chunk_documents(documents_from_sources(handbook), RegexTokenizer(), 64, 0)
    for row in a.rows:
        assert row["source"] == "karsholm_observatory_handbook.pdf" and 1 <= row["page"] <= 4
        assert grounded(row["answer"], chunks[row["chunk"]].text)
        assert row["page"] in chunks[row["chunk"]].pages
    per_chunk = {}
    for row in a.rows:
        per_chunk[row["chunk"]] = per_chunk.get(row["chunk"], 0) + 1
    assert max(per_chunk.values()) <= 4


def test_grounding_check_drops_answers_not_in_the_chunk_and_counts_them(handbook):
    """A model writer (here a fixed function standing in for the model's reply) whose answers
    are partly invented: those pairs are dropped and counted; duplicates too."""
    def writer(prompt: str, max_tokens: int) -> str:
        assert "answerable from the text" in prompt
        return ("1. Q: Who founded the observatory?\nA: Dr. Ingrid Maalen\n"
                "2. Q: What is the capital of France?\nA: Paris\n"
                "Q: Who founded the observatory?\nA: Ingrid Maalen\n"
                "Q: When was it founded?\nA: In 1961\n"
                "Q: a question with no answer line\n")

    result = generate_qa(handbook, QAGenConfig(per_chunk=5, chunk_tokens=400),
                         limit_chunks=1, writer=writer)
    kept = [(r["question"], r["answer"]) for r in result.rows]
    assert kept == [("Who founded the observatory?", "Dr. Ingrid Maalen"),
                    ("When was it founded?", "In 1961")]
    assert result.report.dropped["ungrounded"] == 1  # Paris is not in the handbook
    assert result.report.dropped["duplicate"] == 1
    assert result.report.dropped["unparsed"] == 1
    assert {r["origin"] for r in result.rows} == {"model"}
    assert not grounded("Paris", "The observatory was founded in 1961.")
    assert grounded("founded in 1961", "It was founded in 1961 by Dr. Maalen.")
    assert grounded("1961, Maalen", "It was founded in 1961 by Dr. Maalen.")  # key terms


def test_parse_pairs_reads_numbered_and_bold_formats():
    pairs, unpaired = parse_pairs("**Q1:** Where?\n**A1:** Here.\nQuestion: Why?\nAnswer: So.")
    assert pairs == [("Where?", "Here."), ("Why?", "So.")] and unpaired == 0


def test_golden_rows_kept_and_dataset_feeds_sft_and_stage_builders(handbook, cli, tmp_path):
    golden = tmp_path / "golden.jsonl"
    io.write_jsonl(golden, [{"question": "What is the island's nickname?",
                             "answer": "The Quiet Rock", "keywords": ["Quiet Rock"]}])
    r = cli("-w", "test", "data", "build", "qa", "hb-qa", "--per-chunk", "3",
            "--chunk-tokens", "64", "--golden", str(golden))
    assert r.exit_code == 0, r.output
    assert "rules:" in r.output and "kept" in r.output
    folder = handbook.datasets_dir / "hb-qa"
    rows = io.read_jsonl(folder / "train.jsonl")
    # a golden row is kept although its answer is in no chunk
    assert rows[0]["origin"] == "golden" and rows[0]["answer"] == "The Quiet Rock"
    meta = io.read_toml(folder / "dataset.toml")
    assert meta["kind"] == "qa" and meta["generator"] == "rules"
    assert "rule-based" in meta["generator_note"] and meta["report"]["golden"] == 1
    assert cli("-w", "test", "data", "validate", "hb-qa").exit_code == 0

    r = cli("-w", "test", "data", "build", "sft", "hb-sft", "--qa", "hb-qa", "--no-general")
    assert r.exit_code == 0, r.output
    sft = io.read_jsonl(handbook.datasets_dir / "hb-sft" / "train.jsonl")
    assert len(sft) + len(io.read_jsonl(handbook.datasets_dir / "hb-sft" / "valid.jsonl")) \
        == len(rows)
    # the stage builders locate the gold chunk of every generated pair (golden rows with an
    # answer in no chunk are refused by them, so these use a file without it)
    io.write_jsonl(tmp_path / "gen.jsonl", rows[1:])
    for stage in ("1", "2", "3"):
        r = cli("-w", "test", "data", "build", f"stage{stage}", f"hb-s{stage}", "--qa",
                str(tmp_path / "gen.jsonl"), "--doc-tokens", "64")
        assert r.exit_code == 0, r.output
    r = cli("-w", "test", "data", "build", "qa", "hb-qa-2", "--preview", "1")
    assert r.exit_code == 0 and "Q: " in r.output and "[rules]" in r.output
    assert not (handbook.datasets_dir / "hb-qa-2").exists()  # a preview writes nothing


def test_stage_builder_accepts_the_generated_dataset_name(handbook, cli):
    assert cli("-w", "test", "data", "build", "qa", "gen", "--chunk-tokens", "64").exit_code == 0
    r = cli("-w", "test", "data", "build", "stage2", "gen-s2", "--qa", "gen", "--k", "2",
            "--doc-tokens", "64")
    assert r.exit_code == 0, r.output
    row = json.loads((handbook.datasets_dir / "gen-s2" / "train.jsonl").read_text().split("\n")[0])
    assert len(row["docs"]) == 2 and row["answer"] in row["docs"][row["pos_index"][0]]


def test_bad_input_is_one_line(handbook, cli, tmp_path):
    r = cli("-w", "test", "data", "build", "qa", "x", "--sources", "nope")
    assert r.exit_code != 0 and "no imported source 'nope'" in r.output
    assert "Traceback" not in r.output
    r = cli("-w", "test", "data", "build", "sft", "y", "--qa", "no-such-dataset")
    assert r.exit_code != 0 and "no-such-dataset" in r.output
    r = cli("-w", "test", "data", "build", "qa", "x", "--per-chunk", "0")
    assert r.exit_code != 0 and "--per-chunk" in r.output
    assert not (handbook.datasets_dir / "x").exists()


def test_delete_rows_removes_pairs_and_updates_counts(handbook):
    path, _ = build_qa(handbook, "del", QAGenConfig(per_chunk=2, chunk_tokens=64))
    rows = io.read_jsonl(path / "train.jsonl")
    left = delete_rows(path / "train.jsonl", [0, 2])
    assert left == len(rows) - 2
    assert io.read_jsonl(path / "train.jsonl") == [r for i, r in enumerate(rows) if i not in (0, 2)]
    assert io.read_toml(path / "dataset.toml")["rows"]["train"] == left


def test_a_real_model_generates_through_mlx_lm_end_to_end(handbook, cli, tiny_model_dir, tmp_path):
    """A tiny random Llama writes the questions through the chat engine (mlx-lm generation): what
    it writes is parsed and checked like any model's; golden rows are kept. It writes no usable
    pair (it is random), so what is asserted is the run itself, the report and the rows kept."""
    golden = tmp_path / "golden.jsonl"
    io.write_jsonl(golden, [{"question": "Who founded the observatory?",
                             "answer": "Dr. Ingrid Maalen", "keywords": ["Ingrid Maalen"]}])
    r = cli("-w", "test", "data", "build", "qa", "gen", "--model", str(tiny_model_dir),
            "--chunk-tokens", "600", "--max-tokens", "24", "--golden", str(golden))
    assert r.exit_code == 0, r.output
    assert f"model:{tiny_model_dir}" in r.output
    folder = handbook.datasets_dir / "gen"
    meta = io.read_toml(folder / "dataset.toml")
    assert meta["generator"] == f"model:{tiny_model_dir}" and meta["report"]["chunks"] >= 3
    rows = io.read_jsonl(folder / "train.jsonl")
    assert rows[0]["origin"] == "golden"
    for row in rows[1:]:  # whatever the model wrote and survived is grounded in the source
        text = handbook.sources_dir / row["source_id"] / "text.txt"
        assert row["origin"] == "model" and grounded(row["answer"], text.read_text())
    # stage-1 paraphrases written by the model; a reply that loses a number of the chunk is
    # replaced by the simple rewrite
    r = cli("-w", "test", "data", "build", "stage1", "s1", "--qa", str(golden),
            "--doc-tokens", "600", "--paraphrase-model", str(tiny_model_dir))
    assert r.exit_code == 0, r.output
    meta = io.read_toml(handbook.datasets_dir / "s1" / "dataset.toml")
    assert meta["paraphrase"].startswith(f"model {tiny_model_dir}")
    rows = io.read_jsonl(handbook.datasets_dir / "s1" / "train.jsonl")
    assert any(r["data_type"] == "paraphrase" for r in rows)
