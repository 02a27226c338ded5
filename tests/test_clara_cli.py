"""`clara train stage1|stage2 --from RUN` and `clara ask` argument handling: what the runs record
and the one-line errors (real worker subprocesses, tiny model)."""

from __future__ import annotations

import json

from clara import io
from clara.method import synthetic


def test_stage_runs_chain_with_from(cli, workspace, tiny_model_dir, tmp_path):
    facts = synthetic.facts(8, seed=4)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    io.write_jsonl(s1 / "train.jsonl", synthetic.stage1_rows(facts[:4], paraphrase_every=2))
    io.write_jsonl(s2 / "train.jsonl", synthetic.stage2_rows(facts, 2))
    common = ["--iters", "2", "--doc-max-tokens", "16", "--compression-rate", "4",
              "--batch-size", "2", "--max-len", "256", "--val-every", "0", "--lora-rank", "4"]
    r = cli("-w", "test", "train", "stage1", "-m", str(tiny_model_dir), "-d", str(s1),
            "--name", "a1", *common)
    assert r.exit_code == 0, r.output
    # --from takes a run id: its best (else last) checkpoint; the run records where it came from
    r = cli("-w", "test", "train", "stage2", "-m", str(tiny_model_dir), "-d", str(s2),
            "--from", "a1", "--top-k", "2", "--name", "a2", *common)
    assert r.exit_code == 0, r.output
    doc = io.read_toml(workspace.runs_dir / "a2" / "run.toml")
    assert doc["from_run"] == "a1"
    assert doc["config"]["init_from"] == str((workspace.runs_dir / "a1" / "adapters" /
                                              "last").resolve())
    ckpt = json.loads((workspace.runs_dir / "a2" / "adapters" / "last" /
                       "clara_config.json").read_text())
    assert ckpt["config"]["stage"] == "stage2" and ckpt["adapters"] == ["compressor", "generator"]
    # --init-from (the old name) and a bare checkpoint folder: no from_run to record
    r = cli("-w", "test", "train", "stage2", "-m", str(tiny_model_dir), "-d", str(s2),
            "--init-from", str(workspace.runs_dir / "a1" / "adapters" / "last"),
            "--top-k", "2", "--name", "a3", "--detach", *common)
    assert r.exit_code == 0 and r.output.strip() == "a3"
    doc = io.read_toml(workspace.runs_dir / "a3" / "run.toml")
    assert "from_run" not in doc
    # the link `last` is resolved: the run keeps starting from that step if a1 ever moves on
    assert doc["config"]["init_from"] == str((workspace.runs_dir / "a1" / "adapters" /
                                              "last").resolve())
    assert "step-" in doc["config"]["init_from"]
    r = cli("-w", "test", "runs", "stop", "a3")  # may already have finished: either is fine
    assert r.exit_code in (0, 1)

    # ask: documents given inline and as files; the answer is printed, no document list
    txt = tmp_path / "doc.txt"
    txt.write_text(facts[0]["doc"])
    r = cli("-w", "test", "ask", "--run", "a2", "--docs", str(txt), "--doc", facts[1]["doc"],
            "--max-tokens", "3", "--format", "json", "Who?")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out) == {"question", "answer", "documents"} and out["documents"] is None


def test_ask_and_train_errors(cli, workspace, tiny_model_dir, tmp_path):
    r = cli("-w", "test", "train", "stage2", "-d", str(tmp_path), "--from", "nope")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "no train.jsonl" in r.output or "no run 'nope'" in r.output
    (tmp_path / "d").mkdir()
    io.write_jsonl(tmp_path / "d" / "train.jsonl", [{"question": "q"}])
    r = cli("-w", "test", "train", "stage2", "-d", str(tmp_path / "d"), "--from", "nope")
    assert r.exit_code == 1 and "no run 'nope'" in r.output
    r = cli("-w", "test", "ask", "--run", "nope", "--doc", "Alia built it.", "Who?")
    assert r.exit_code == 1 and "no run 'nope'" in r.output and "Traceback" not in r.output
    r = cli("-w", "test", "ask", "--run", "nope", "Who?")
    assert r.exit_code == 1 and "no documents" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "Alia built it."}\n{"id": "b"}\n')
    r = cli("-w", "test", "ask", "--run", "nope", "--docs", str(bad), "Who?")
    assert r.exit_code == 3 and "bad.jsonl:2: text" in r.output
    r = cli("-w", "test", "ask", "--run", "nope", "--docs", str(bad), "--store", str(tmp_path),
            "Who?")
    assert r.exit_code == 3 and "bad.jsonl:2" in r.output
    r = cli("-w", "test", "ask", "Who?")
    assert r.exit_code == 2 and "--run" in r.output
