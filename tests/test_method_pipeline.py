"""`clara train pipeline` end to end on a tiny model and a small synthetic benchmark: three real
runs (worker subprocesses) chained 1 -> 2 -> 3, a stop during stage 1 and a resume, the hand-off
checked bit for bit, the metric series, and `clara ask` from documents and from a store."""

from __future__ import annotations

import json
import time

import mlx.core as mx
import numpy as np
import pytest

from clara import io
from clara.method import checkpoint
from clara.method.pipeline import Pipeline, find_pipeline, stop_pipeline
from clara.runs import Run
from clara.train import tasks

SHARED = ["--doc-max-tokens", "32", "--compression-rate", "8", "--batch-size", "2",
          "--max-len", "384", "--lora-rank", "4", "--val-every", "0", "--val-batches", "1",
          "--top-k", "3", "--learning-rate", "1e-3"]


def stored(folder) -> dict[str, np.ndarray]:
    """A checkpoint's adapter weights by (adapter, key without the adapter name)."""
    out = {}
    for k, v in mx.load(str(folder / checkpoint.ADAPTERS_FILE)).items():
        name = checkpoint._adapter_of(k)
        out[(name, k.replace(f".adapters.{name}.", ".*."))] = np.array(v)
    return out


def live(model) -> dict[str, np.ndarray]:
    return {(checkpoint._adapter_of(k), k.replace(f".adapters.{checkpoint._adapter_of(k)}.",
                                                  ".*.")): np.array(v)
            for k, v in checkpoint.adapter_weights(model).items()}


def adapter(weights: dict, name: str) -> dict:
    return {k[1]: v for k, v in weights.items() if k[0] == name}


def bit_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and
                                        a[k].tobytes() == b[k].tobytes() for k in a)


def at_step0(run: Run):
    """The model a stage run starts from, built the way its worker builds it."""
    return tasks.create(run.config()["kind"], run.config(), run.path).model


def wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def synth(cli, workspace):
    r = cli("-w", "test", "data", "synth", "toy", "--entities", "16")
    assert r.exit_code == 0, r.output
    return workspace


def test_pipeline_stop_resume_handoff_metrics_and_ask(cli, synth, tiny_model_dir, tmp_path):
    ws = synth
    # -- start detached, stop during stage 1, resume in the foreground --------------------
    r = cli("-w", "test", "train", "pipeline", "-m", str(tiny_model_dir), "--data", "toy",
            "--name", "p", "--stage1-iters", "60", "--stage2-iters", "3", "--stage3-iters", "4",
            "--stage3-lr", "3e-3", *SHARED, "--detach")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "p"
    pipe = find_pipeline(ws, "p")
    s1 = Run(ws.runs_dir / "p-stage1")
    wait_for(lambda: s1.exists and (s1.last_metric("train_loss") or {}).get("step", 0) >= 2)
    assert stop_pipeline(pipe)
    wait_for(lambda: pipe.status()["status"] == "stopped")
    st = pipe.status()
    assert [s["status"] for s in st["stages"]] == ["stopped", "pending", "pending"]
    assert st["stages"][1]["run"] is None  # stage 2 is made only from a finished stage 1
    stopped_at = s1.status()["step"]
    assert 2 <= stopped_at < 60

    r = cli("-w", "test", "pipelines", "resume", "p")
    assert r.exit_code == 0, r.output
    assert "[2/3] stage2: run p-stage2 (from p-stage1)" in r.output
    assert "pipeline p: completed" in r.output
    assert "quality on stage 3's validation rows: stage 2 -> stage 3" in r.output
    doc = io.read_toml(pipe.file)
    assert doc["status"] == "completed"
    assert [doc["stages"][s]["run"] for s in ("stage1", "stage2", "stage3")] == \
        ["p-stage1", "p-stage2", "p-stage3"]
    assert [e["event"] for e in s1.events()].count("resume") == 1
    assert s1.status()["step"] == 60

    # -- run folders and the recorded chain -----------------------------------------------
    runs = {s: Run(ws.runs_dir / f"p-stage{s}") for s in (1, 2, 3)}
    for n, run in runs.items():
        assert run.status()["status"] == "completed"
        cfg = run.config()
        assert cfg["kind"] == f"clara-stage{n}" and cfg["pipeline"] == "p"
    assert "from_run" not in runs[1].config()
    assert runs[2].config()["from_run"] == "p-stage1"
    assert runs[3].config()["from_run"] == "p-stage2"
    ck1, ck2, ck3 = (run.adapters / "best" for run in runs.values())
    assert runs[2].config()["config"]["init_from"] == str(ck1.resolve())
    assert runs[3].config()["config"]["init_from"] == str(ck2.resolve())
    assert runs[2].config()["config"]["top_k"] == 5  # the stage-2 rows' document count
    assert runs[3].config()["config"]["top_k"] == 3

    # -- hand-off, bit for bit ------------------------------------------------------------
    w1, w2, w3 = stored(ck1), stored(ck2), stored(ck3)
    start2 = live(at_step0(runs[2]))
    assert bit_equal(adapter(start2, "compressor"), adapter(w1, "compressor"))
    fresh = adapter(start2, "generator")
    assert all(not v.any() for k, v in fresh.items() if k.endswith("lora_b"))
    assert not any(np.array_equal(v, adapter(w1, "generator")[k])
                   for k, v in fresh.items() if k.endswith("lora_a"))
    start3 = live(at_step0(runs[3]))
    assert bit_equal(adapter(start3, "query_reasoner"), adapter(start3, "compressor"))
    assert bit_equal(adapter(start3, "compressor"), adapter(w2, "compressor"))
    assert bit_equal(adapter(start3, "generator"), adapter(w2, "generator"))
    # after stage 3: the compressor and (by default) the generator are untouched, the query
    # reasoner trained
    assert bit_equal(adapter(w3, "compressor"), adapter(w2, "compressor"))
    assert bit_equal(adapter(w3, "generator"), adapter(w2, "generator"))
    # (best/ may be stage 3's validated start: it is kept by exact answers + recall)
    w3_last = stored(runs[3].adapters / "last")
    assert not bit_equal(adapter(w3_last, "query_reasoner"), adapter(w3_last, "compressor"))
    # stage 2 trained its compressor on from stage 1's (the reference keeps it trainable)
    assert not bit_equal(adapter(w2, "compressor"), adapter(w1, "compressor"))
    # what the workers really started from, as their start events recorded it
    digests = [next(e for e in run.events() if e["event"] == "start")["adapter_digests"]
               for run in runs.values()]
    m2 = checkpoint.load(ck2, inference=True)
    assert digests[2]["query_reasoner"] == digests[2]["compressor"] == \
        checkpoint.adapter_digests(m2)["compressor"]
    assert digests[1]["compressor"] == \
        checkpoint.adapter_digests(checkpoint.load(ck1, inference=True))["compressor"]

    # -- metric series --------------------------------------------------------------------
    rows1 = [r for r in runs[1].metrics() if "train_loss" in r]
    assert all({"train_ce", "train_mse"} <= r.keys() for r in rows1)
    assert all(r["train_mse"] > 0 for r in rows1)
    rows3 = runs[3].metrics()
    train3 = [r for r in rows3 if "train_loss" in r]
    val3 = [r for r in rows3 if "val_loss" in r]
    assert len(train3) == 4 and val3
    for key in ("ce", "recall@1", "recall@3", "precision@1"):
        assert all(f"train_{key}" in r for r in train3) and f"val_{key}" in val3[-1]
    # its frozen compressor's vectors come from a cache: no MSE of a compressor it never trains
    assert not any("train_mse" in r for r in train3)
    assert all(0 <= r["train_recall@3"] <= 1 for r in train3)
    # the loss is CE plus the supervised retrieval loss (weight 1 by default)
    assert all(r["train_loss"] == pytest.approx(r["train_ce"] + r["train_retrieval"])
               for r in train3)
    assert {"val_em", "val_em_gold"} <= val3[0].keys() and val3[0]["step"] == 0

    # -- clara pipelines list / show --------------------------------------------------------
    r = cli("-w", "test", "pipelines", "list", "--format", "json")
    assert [(p["id"], p["status"], p["stage3"]) for p in json.loads(r.output)] == \
        [("p", "completed", "completed")]
    r = cli("-w", "test", "pipelines", "show", "p-stage2", "--format", "json")
    assert json.loads(r.output)["stages"][2]["run"] == "p-stage3"

    # -- clara ask: from documents, and with retrieval from a store -------------------------
    docs = [json.loads(line) for split in ("test", "train") for line in
            (ws.datasets_dir / "toy-docs" / f"{split}.jsonl").read_text().splitlines()]
    docs_file = tmp_path / "docs.jsonl"
    io.write_jsonl(docs_file, [{"id": d["id"], "text": d["text"]} for d in docs])
    one = tmp_path / "one.txt"
    one.write_text(docs[0]["text"])
    question = f"In which year was {docs[0]['entity']} born?"
    r = cli("-w", "test", "ask", "--run", "p-stage2", "--docs", str(one), "--max-tokens", "6",
            "--format", "json", question)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert isinstance(out["answer"], str) and out["documents"] is None
    r = cli("-w", "test", "ask", "--run", "p-stage2", "--docs", str(one), "--max-tokens", "6",
            question)
    assert r.exit_code == 0 and r.output.endswith("\n") and "documents:" not in r.output

    store = tmp_path / "store"
    r = cli("-w", "test", "compress", "--run", "p", "--docs", str(docs_file), "--out", str(store),
            "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["documents"] == len(docs)
    r = cli("-w", "test", "ask", "--run", "p", "--store", str(store), "--top-k", "2",
            "--max-tokens", "6", question)
    assert r.exit_code == 0, r.output
    listed = r.output.split("documents:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed] == ["1.", "2."]
    assert {line.split()[1] for line in listed} <= {d["id"] for d in docs}
    r = cli("-w", "test", "ask", "--run", "p", "--store", str(store), "--top-k", "2",
            "--max-tokens", "6", "--format", "json", question)
    chosen = json.loads(r.output)["documents"]
    assert [d["rank"] for d in chosen] == [1, 2]
    assert chosen[0]["score"] >= chosen[1]["score"]
    assert chosen[0]["text"] in [d["text"] for d in docs]
    # a stage-3 model given more documents than its top-k picks its top-k among them
    r = cli("-w", "test", "ask", "--run", "p-stage3", "--docs", str(docs_file), "--format",
            "json", "--max-tokens", "4", question)
    assert len(json.loads(r.output)["documents"]) == 3


def test_pipeline_errors(cli, synth, tiny_model_dir, tmp_path):
    r = cli("-w", "test", "train", "pipeline", "-m", str(tiny_model_dir), "--data", "nope")
    assert r.exit_code == 1
    assert "no dataset 'nope-stage1'" in r.output and "Traceback" not in r.output
    r = cli("-w", "test", "train", "pipeline", "-m", str(tiny_model_dir))
    assert r.exit_code == 1 and "--data PREFIX" in r.output
    r = cli("-w", "test", "pipelines", "resume", "nothing")
    assert r.exit_code == 1 and "no pipeline 'nothing'" in r.output
    r = cli("-w", "test", "pipelines", "list")
    assert "no pipelines" in r.output


def test_pipeline_fails_cleanly_on_bad_stage_data(cli, synth, tiny_model_dir, tmp_path):
    """A stage whose data is bad is refused with the located error before anything is
    written: no pipeline folder, no run."""
    bad = tmp_path / "bad1"
    io.write_jsonl(bad / "train.jsonl", [{"data_type": "qa", "docs": ["x"], "question": ["q"]}])
    r = cli("-w", "test", "train", "pipeline", "-m", str(tiny_model_dir), "--data", "toy",
            "--stage1", str(bad), "--name", "bad", *SHARED)
    assert r.exit_code == 3  # ExitCode.BAD_DATA
    assert "train.jsonl:1: answers: missing" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (synth.runs_dir / "bad").exists() and not list(synth.runs_dir.glob("bad*"))
