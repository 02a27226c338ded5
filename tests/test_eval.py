"""Evaluation: QA rows, metrics on hand-made cases, every configuration end to end on a tiny
model (closed book, adapter, raw-text RAG, CLaRa with documents and with retrieval), compare with
the retention probe, and the CLI."""

from __future__ import annotations

import json

import pytest

from clara import io
from clara.chat.engine import ChatEngine
from clara.chat.models import ModelCache
from clara.errors import UserError, DataError
from clara.evaluation.qa import parse_row, read_qa_file
from clara.evaluation.runner import EvalConfig, compare, parse_spec, run_eval, summarize
from clara.workspace import Workspace
from test_chat_helpers import make_clara_checkpoint, make_lora_adapter

HANDBOOK = """# Mills of the valley

Alia built the river mill in 1790. The mill ground wheat for the northern villages and its wheel
was made of oak.

# Towers

Borun painted a glass tower in 1801. The tower stands on the harbour and its bell rings at noon.

# Mines

Cetra sold the salt mine in 1822 to a merchant from the south. The salt was carried by boat.
"""

QA = [
    {"id": "q1", "question": "Who built the river mill?", "answer": "Alia", "keywords": ["Alia"],
     "category": "factual"},
    {"id": "q2", "question": "In which year did Borun paint the glass tower?",
     "reference_answer": "1801", "keywords": ["1801"], "category": "numeric"},
    {"id": "q3", "question": "What did Cetra sell?", "answer": "the salt mine",
     "category": "factual"},
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    from clara.data.sources import import_files

    root = tmp_path_factory.mktemp("eval")
    ws = Workspace(root / "ws", "ev").create()
    (root / "handbook.md").write_text(HANDBOOK)
    import_files(ws, [root / "handbook.md"])
    io.write_jsonl(root / "qa.jsonl", QA)
    adapter = make_lora_adapter(root / "adapter", tiny_model_dir, seed=1)
    s2 = make_clara_checkpoint(root / "clara-s2", tiny_model_dir, "stage2", top_k=2)
    s3 = make_clara_checkpoint(root / "clara-s3", tiny_model_dir, "stage3", top_k=2)
    engine = ChatEngine(ws, cache=ModelCache(), log=False)
    return ws, root, adapter, s2, s3, engine


# -- rows and metrics ---------------------------------------------------------------------------
def test_qa_rows_in_every_format_and_located_errors(tmp_path):
    assert parse_row({"question": "Q", "golden_answers": ["A", "B"]}, "f", 1).answer == "A"
    assert parse_row({"question": "Q", "reference_answer": "R"}, "f", 1).answer == "R"
    chat = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}
    row = parse_row(chat, "f", 1)
    assert (row.question, row.answer) == ("Q?", "A.")
    row = parse_row({"question": "Q", "answer": "A", "docs": ["x", "y"], "pos_index": 1}, "f", 3)
    assert row.pos_index == [1] and row.id == "3"
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok", "answer": "A"}\n{"question": "Q"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: answer: missing"):
        read_qa_file(path)
    path.write_text('{"question": "Q", "answer": "A", "docs": ["d"], "pos_index": [4]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: pos_index"):
        read_qa_file(path)
    with pytest.raises(UserError, match="kind must be one of"):
        parse_spec("oracle")
    with pytest.raises(UserError, match="needs a CLaRa run"):
        parse_spec("clara")
    assert parse_spec("closed=run-1:best").label == "closed=run-1:best"


def test_summaries_average_only_rows_that_have_the_metric():
    rows = [{"config": "a", "em": 1.0, "f1": 1.0, "keyword": 0.5, "latency": 1.0},
            {"config": "a", "em": 0.0, "f1": 0.5, "latency": 3.0},
            {"config": "b", "em": 0.0, "f1": 0.0, "recall": 1.0, "latency": 2.0}]
    by = {r["config"]: r for r in summarize(rows)}
    assert by["a"]["n"] == 2 and by["a"]["em"] == 0.5 and by["a"]["f1"] == 0.75
    assert by["a"]["keyword"] == 0.5 and by["a"]["recall"] is None and by["a"]["latency"] == 2.0
    assert by["b"]["recall"] == 1.0


# -- end to end ---------------------------------------------------------------------------------
def test_every_configuration_scores_and_writes_its_folder(env, tiny_model_dir):
    ws, root, adapter, s2, s3, engine = env
    cfg = EvalConfig(data=str(root / "qa.jsonl"), model=str(tiny_model_dir), top_k=2,
                     max_tokens=6, chunk_tokens=24, chunk_overlap=0,
                     configs=["closed", f"closed={adapter}", "rag", f"clara={s2}",
                              f"clara-retrieval={s3}"])
    result = run_eval(ws, cfg, engine)
    assert len(result.results) == 5 * 3
    by = {r["config"]: r for r in result.summary}
    assert list(by) == ["closed", f"closed={adapter}", "rag", f"clara={s2}",
                        f"clara-retrieval={s3}"]
    for row in result.results:
        assert {"em", "f1", "cover_em", "latency", "ttft", "prompt_tokens"} <= set(row)
        assert ("keyword" in row) == (row["id"] != "q3")
    rag = [r for r in result.results if r["config"] == "rag"]
    # BM25 finds each answer's chunk among the top 2 of this small handbook
    assert all(r["recall"] == 1.0 for r in rag), [(r["retrieved"], r.get("gold_docs")) for r in rag]
    assert "recall" not in by["closed"] or by["closed"]["recall"] is None
    assert by["rag"]["prompt_tokens"] > by["closed"]["prompt_tokens"]
    # CLaRa reads two documents as two fixed-size memory slots, whatever the documents are:
    # the prompt length is the same for the given chunks and for the retrieved ones.
    plain = {r["id"]: r["prompt_tokens"] for r in result.results if r["config"] == f"clara={s2}"}
    picked = {r["id"]: r["prompt_tokens"] for r in result.results
              if r["config"] == f"clara-retrieval={s3}"}
    assert plain == picked
    assert by[f"clara-retrieval={s3}"]["recall"] is not None
    assert all(len(r["retrieved"]) == 2 for r in result.results
               if r["config"].startswith("clara-retrieval"))
    folder = ws.evals_dir / result.id
    for name in ("eval.toml", "results.jsonl", "summary.json", "summary.md"):
        assert (folder / name).is_file(), name
    assert len(io.read_jsonl(folder / "results.jsonl")) == 15
    summary = io.read_json(folder / "summary.json")
    assert set(summary["by_category"]["rag"][0]) >= {"category", "f1"}
    assert io.read_toml(folder / "eval.toml")["config"]["top_k"] == 2
    md = (folder / "summary.md").read_text()
    assert "| config |" in md and "Answers side by side" in md


def test_clara_rows_with_their_own_documents(env, tiny_model_dir):
    ws, root, _, s2, s3, engine = env
    docs = ["Alia built the river mill in 1790.", "Borun painted a glass tower in 1801.",
            "Cetra sold the salt mine in 1822."]
    io.write_jsonl(root / "stage.jsonl", [
        {"question": "Who built the river mill?", "answer": "Alia", "docs": docs,
         "pos_index": [0]}])
    cfg = EvalConfig(data=str(root / "stage.jsonl"), model=str(tiny_model_dir), max_tokens=4,
                     top_k=2, configs=[f"clara-retrieval={s3}"], name="own-docs")
    (row,) = run_eval(ws, cfg, engine).results
    assert row["recall"] == (1.0 if 0 in row["retrieved"] else 0.0)
    assert row["gold_docs"] == [0] and len(row["retrieved"]) == 2


def test_compare_side_by_side_with_retention_probe(env, tiny_model_dir):
    ws, root, adapter, _, _, engine = env
    result = compare(ws, str(root / "qa.jsonl"), [str(adapter)], model=str(tiny_model_dir),
                     retention=3, engine=engine, max_tokens=4, limit=2)
    assert [r["config"] for r in result.summary] == ["closed", f"closed={adapter}"]
    assert len(result.retention) == 2 * 3
    assert {r["set"] for r in result.retention} == {"general"}
    base, tuned = result.summary
    assert base["retention_drop"] == 0.0
    assert tuned["retention_drop"] == pytest.approx(base["retention_f1"] - tuned["retention_f1"])
    assert io.read_toml(ws.evals_dir / result.id / "eval.toml")["kind"] == "compare"


def test_eval_cli_run_list_show_and_errors(env, tiny_model_dir, monkeypatch):
    from click.testing import CliRunner

    from clara.cli import cli as clara_cli

    ws, root, adapter, _, _, _ = env
    def run(*args):
        return CliRunner().invoke(clara_cli, ["--root", str(ws.root), "-w", ws.name, *args])

    r = run("eval", "-d", str(root / "qa.jsonl"), "-m", str(tiny_model_dir), "-c", "closed",
            "-c", "rag", "--limit", "2", "--max-tokens", "3", "--name", "cli-eval")
    assert r.exit_code == 0, r.output
    assert "cover-EM" in r.output and "recall@k" in r.output and "cli-eval" in r.output
    r = run("eval", "list", "--format", "json")
    assert "cli-eval" in [e["id"] for e in json.loads(r.output)]
    r = run("eval", "show", "cli-eval", "--format", "json", "--answers")
    doc = json.loads(r.output)
    assert len(doc["results"]) == 4 and doc["summary"][0]["config"] == "closed"
    r = run("eval", "-d", str(root / "qa.jsonl"), "-c", "oracle")
    assert r.exit_code == 1 and "kind must be one of" in r.output and "Traceback" not in r.output
    r = run("eval", "-d", str(root / "missing.jsonl"), "-m", str(tiny_model_dir))
    assert r.exit_code == 1 and "missing.jsonl" in r.output
    r = run("eval", "compare", "-d", str(root / "qa.jsonl"), "-m", str(tiny_model_dir),
            "-a", str(adapter), "--limit", "1", "--retention", "1", "--max-tokens", "2")
    assert r.exit_code == 0, r.output
    assert "F1 lost" in r.output and "question" in r.output
