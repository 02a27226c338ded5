"""`clara eval` on QA rows that carry their own documents (CLaRa's stage-2/3 rows), in a
workspace with no imported sources, and its progress output when stderr is not a terminal."""

from __future__ import annotations

import json

from clara import io

DOCS = ["Alia built the river mill in 1790.", "Borun painted a glass tower in 1801.",
        "Cetra sold the salt mine in 1822.", "Dovan guarded the harbour bell in 1811."]
ROWS = [{"question": "Who built the river mill?", "answer": "Alia", "docs": DOCS,
         "pos_index": [0]},
        {"question": "Who sold the salt mine?", "answer": "Cetra", "docs": DOCS,
         "pos_index": [2]},
        {"question": "Who guarded the harbour bell?", "answer": "Dovan", "docs": DOCS[:2],
         "pos_index": []}]


def test_rag_on_rows_with_docs_reads_them_and_progress_prints_lines(cli, workspace, tmp_path,
                                                                    tiny_model_dir):
    io.write_jsonl(tmp_path / "stage.jsonl", ROWS)
    r = cli("-w", "test", "eval", "-d", str(tmp_path / "stage.jsonl"), "-m", str(tiny_model_dir),
            "-c", "rag", "-c", "closed", "--top-k", "2", "--max-tokens", "2", "--name", "own-docs")
    assert r.exit_code == 0, r.output
    assert "indices must be in" not in r.output
    # not a terminal: one line per update, never a carriage-return counter
    assert "\r" not in r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("rag: ")] == \
        ["rag: 1/3", "rag: 2/3", "rag: 3/3"]
    r = cli("-w", "test", "eval", "show", "own-docs", "--format", "json", "--answers")
    rag = [x for x in json.loads(r.output)["results"] if x["config"] == "rag"]
    # the BM25 top-2 of each row's own documents; recall against its pos_index
    assert all(len(x["retrieved"]) == 2 and x["retrieved"][0] == x["gold_docs"][0]
               for x in rag[:2])
    assert [x["recall"] for x in rag[:2]] == [1.0, 1.0]
    assert rag[2]["retrieved"] == [0, 1] and "recall" not in rag[2]  # 2 docs: both, no gold
