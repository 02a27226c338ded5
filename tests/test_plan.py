"""Planning a run (clara.plan): every setting, the data kind and every row are checked before a
run folder exists — the same check in the CLI, the app and the worker; a continued CLaRa run
keeps its checkpoint's geometry; `clara data validate` and the trainers agree row for row."""

from __future__ import annotations


import pytest

from clara import io
from clara.data.formats import parse_lora_row, read_stage_rows
from clara.errors import UserError, DataError
from clara.plan import plan_lora, plan_stage

LORA_SMALL = ["--iters", "1", "--batch-size", "1", "--max-seq-length", "64"]
STAGE_SMALL = ["--doc-max-tokens", "16", "--compression-rate", "4", "--lora-rank", "2",
               "--iters", "1", "--batch-size", "1", "--max-len", "256"]


@pytest.fixture
def toy(cli, workspace, tmp_path):
    r = cli("-w", "test", "data", "synth", "toy", "--entities", "12")
    assert r.exit_code == 0, r.output
    io.write_text(tmp_path / "empty" / "train.jsonl", "")
    io.write_text(tmp_path / "corrupt" / "train.jsonl", '{"text": "ok"}\n{"text": \n')
    return workspace


def _candidates(ws) -> int:
    row = io.read_jsonl(ws.datasets_dir / "toy-stage3" / "train.jsonl")[0]
    return len(row["docs"])


def _table(ws, model, tmp_path):
    m = ["-m", str(model)]
    n3 = _candidates(ws)
    lora = ["train", "lora", *m, *LORA_SMALL]
    s1 = ["train", "stage1", *m, "-d", "toy-stage1", *STAGE_SMALL]
    return [
        (lora + ["-d", "toy-sft", "--learning-rate", "inf"], "learning_rate: inf is not a finite"),
        (lora + ["-d", "toy-sft", "--learning-rate", "nan"], "learning_rate: nan is not a finite"),
        (lora + ["-d", "toy-sft", "--lora-rank", "0"], "lora_rank"),
        (lora + ["-d", "toy-sft", "--num-layers", "99"], "num_layers: 99, but model"),
        (lora + ["-d", "toy-sft", "--num-layers", "0"], "num_layers: 0"),
        (lora + ["-d", "toy-sft", "--batch-size", "0"], "batch_size"),
        (lora + ["-d", "toy-cpt", "--mode", "sft"], "train it with: clara train lora --mode cpt"),
        (lora + ["-d", "toy-sft", "--mode", "cpt"], "train it with: clara train lora --mode sft"),
        (lora + ["-d", "toy-stage1"], "train it with: clara train stage1"),
        (lora + ["-d", "toy-qa"], "clara data build"),
        (lora + ["-d", str(tmp_path / "empty"), "--mode", "cpt"], "train.jsonl: no rows"),
        (lora + ["-d", str(tmp_path / "corrupt"), "--mode", "cpt"], "train.jsonl:2: invalid JSON"),
        (lora + ["-d", "no-such-data"], "no-such-data"),
        (s1 + ["--compression-rate", "0"], "compression_rate: 0 is outside 1..256"),
        (s1 + ["--compression-rate", "100000"], "compression_rate: 100000 is outside"),
        (s1 + ["--doc-max-tokens", "0"], "doc_max_tokens: 0 must be positive"),
        (s1 + ["--doc-max-tokens", "2"], "gives no memory token"),
        (s1 + ["--lora-rank", "0"], "lora_rank: 0 must be at least 1"),
        (s1 + ["--lora-layers", "99"], "lora_layers: 99, but model"),
        (s1 + ["--tau", "inf"], "tau: inf is not a finite number"),
        (s1 + ["--lora-dropout", "1.5"], "lora_dropout"),
        (s1 + ["--learning-rate", "-1"], "learning_rate"),
        (["train", "stage3", *m, "-d", "toy-stage3", *STAGE_SMALL, "--top-k", str(n3 + 30)],
         f"fewer than top_k = {n3 + 30}"),
        (["train", "stage3", *m, "-d", "toy-stage2", *STAGE_SMALL],
         "train it with: clara train stage2"),
        (["train", "stage2", *m, "-d", "toy-stage1", *STAGE_SMALL],
         "train it with: clara train stage1"),
        (["train", "stage2", *m, "-d", "toy-stage2", *STAGE_SMALL, "--top-k", "9"],
         "stage2 needs exactly top_k = 9"),
        (["train", "stage1", *m, "-d", "toy-sft", *STAGE_SMALL],
         "train it with: clara train lora --mode sft"),
        (["train", "stage2", *m, "-d", "toy-stage2", *STAGE_SMALL, "--from", "no-such-run"],
         "no run 'no-such-run'"),
        (["train", "pipeline", *m, "--data", "toy", *STAGE_SMALL, "--compression-rate", "0"],
         "compression_rate: 0"),
        (["train", "pipeline", *m, "--data", "toy", *STAGE_SMALL, "--stage2-lr", "inf"],
         "learning_rate: inf is not a finite"),
        (["train", "pipeline", *m, "--data", "toy", *STAGE_SMALL, "--stage1", "toy-stage2"],
         "train it with: clara train stage2"),
        (["eval", "--data", "toy-qa", *m, "-c", "rag", "--top-k", "0"],
         "top_k: 0 must be at least 1"),
    ]


def test_bad_settings_exit_one_line_no_run_folder(cli, toy, tiny_model_dir, tmp_path):
    ws = toy
    before = sorted(p.name for p in ws.path.rglob("*"))
    for args, expected in _table(ws, tiny_model_dir, tmp_path):
        r = cli("-w", "test", *args)
        out = r.output.strip()
        assert r.exit_code != 0, (args, out)
        assert expected in out, (args, out)
        assert len(out.splitlines()) == 1 and "Traceback" not in out, (args, out)
    # nothing was written: no run, pipeline or evaluation folder
    assert sorted(p.name for p in ws.path.rglob("*")) == before


def test_good_plan_records_effective_values(toy, tiny_model_dir):
    plan = plan_stage(toy, "stage2", {"model": str(tiny_model_dir), "data": "toy-stage2",
                                      "doc_max_tokens": 16, "compression_rate": 4})
    rows = io.read_jsonl(toy.datasets_dir / "toy-stage2" / "train.jsonl")
    assert plan.kind == "clara-stage2" and plan.rows["train"] == len(rows)
    assert plan.config["top_k"] == 5 or plan.config["top_k"] == len(rows[0]["docs"])
    assert "compression_rate = 4" in plan.preview()
    # the app's preview plans without reading every row, but still checks the kind
    with pytest.raises(UserError, match="clara train stage2"):
        plan_stage(toy, "stage1", {"model": str(tiny_model_dir), "data": "toy-stage2"},
                   check_data=False)
    assert plan_lora(None, {"model": "x", "data": "y", "iters": 3}).config["iters"] == 3


def _completed_stage1(ws, tiny_model_dir, name="s1"):
    """A finished stage-1 run whose checkpoint has doc 16 / rate 4 / rank 2 (no training: the
    geometry is what matters)."""
    import mlx.core as mx

    from clara.method import checkpoint
    from clara.method.config import ClaraConfig
    from clara.method.model import ClaraModel
    from clara.runs import Run, create_run

    run = create_run(ws, "clara-stage1", {"model": str(tiny_model_dir)},
                     resolved={"model": str(tiny_model_dir)}, name=name)
    mx.random.seed(0)
    model = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), doc_max_tokens=16,
                                             compression_rate=4, lora_rank=2, max_len=256))
    checkpoint.save(model, run.adapters / "best")
    Run(run.path).write_status(status="completed")
    return run


def test_from_checkpoint_keeps_geometry_and_refuses_another(cli, toy, tiny_model_dir):
    from clara.method.launch import stage_run

    ws = toy
    _completed_stage1(ws, tiny_model_dir)
    runs_before = sorted(p.name for p in ws.runs_dir.iterdir())
    for flag, value, saved in (("--compression-rate", "8", "4"), ("--doc-max-tokens", "32", "16"),
                               ("--lora-rank", "4", "2"), ("--lora-layers", "1", "-1")):
        r = cli("-w", "test", "train", "stage2", "-d", "toy-stage2", "--from", "s1", flag, value)
        out = r.output.strip()
        name = flag[2:].replace("-", "_")
        assert r.exit_code == 2 and len(out.splitlines()) == 1, out
        assert f"{name}: {value} asked, but the checkpoint s1:best has {saved}" in out, out
    assert sorted(p.name for p in ws.runs_dir.iterdir()) == runs_before
    # asking the checkpoint's own values, or none, is fine; run.toml records what the model is
    run = stage_run(ws, "stage2", {"data": "toy-stage2", "init_from": "s1", "lora_rank": 2})
    cfg = run.config()
    assert (cfg["config"]["compression_rate"], cfg["config"]["doc_max_tokens"],
            cfg["config"]["lora_rank"]) == (4, 16, 2)
    assert cfg["from_run"] == "s1" and cfg["resolved"]["init_from"].endswith("s1/adapters/best")


# ---------------------------------------------------------------------------- agreement
BAD = {
    # trainer, dataset kind, rows (one problem each)
    "cpt": ("text", [{"text": "fine"}, {"text": 3}]),
    "sft": ("chat", [{"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": "a"}]},
                     {"messages": [{"role": "user", "content": "q"}]}]),
    "sft-completions": ("completions", [{"prompt": "p", "completion": "c"},
                                        {"prompt": "p", "completion": ""}]),
    "stage1": ("stage1", [{"question": ["q"], "answers": ["a"], "docs": ["d"]},
                          {"question": ["q", "r"], "answers": ["a"], "docs": ["d"]}]),
    "stage2": ("stage2", [{"question": "q", "docs": ["d", "e"], "answer": "a"},
                          {"question": "q <SEP>", "docs": ["d", "e"], "answer": "a"}]),
    "stage3": ("stage3", [{"question": "q", "docs": ["d", "e", "f"], "answer": "a"},
                          {"question": "q", "docs": ["d", "e", "f"], "answer": "a",
                           "pos_index": [7]}]),
}


def _dataset(tmp_path, name, kind, rows):
    folder = tmp_path / name
    io.write_jsonl(folder / "train.jsonl", rows)
    io.write_toml(folder / "dataset.toml", {"name": name, "kind": kind})
    return folder


def test_validator_and_trainers_agree_on_every_kind(cli, workspace, tiny_model_dir, tmp_path):
    for trainer, (kind, rows) in BAD.items():
        folder = _dataset(tmp_path, trainer, kind, rows)
        v = cli("-w", "test", "data", "validate", str(folder))
        assert v.exit_code == 3
        said = v.output.strip()
        assert said.startswith(f"{folder / 'train.jsonl'}:2: "), said
        if trainer.startswith("sft") or trainer == "cpt":
            mode = trainer.split("-")[0]
            args = ["train", "lora", "-m", str(tiny_model_dir), "-d", str(folder),
                    "--mode", mode]
            with pytest.raises(DataError) as e:  # the worker's own reading of the row
                parse_lora_row(rows[1], mode, folder / "train.jsonl", 2)
        else:
            top_k = {"stage1": 1, "stage2": 2, "stage3": 2}[trainer]
            args = ["train", trainer, "-m", str(tiny_model_dir), "-d", str(folder),
                    "--top-k", str(top_k), *STAGE_SMALL]
            with pytest.raises(DataError) as e:
                read_stage_rows(folder / "train.jsonl", trainer, top_k)
        t = cli("-w", "test", *args)
        assert t.exit_code == 3
        assert t.output.strip() == f"Error: {said}", (trainer, t.output)
        assert str(e.value) == said
    assert not any(workspace.runs_dir.iterdir())


def test_stage3_rows_with_different_candidate_counts(cli, workspace, tmp_path):
    rows = [{"question": "q", "docs": ["a", "b", "c"], "answer": "x"},
            {"question": "q", "docs": ["a", "b"], "answer": "x"}]
    folder = _dataset(tmp_path, "s3", "stage3", rows)
    assert cli("-w", "test", "data", "validate", str(folder)).exit_code == 0
    assert [len(s["docs"]) for s in read_stage_rows(folder / "train.jsonl", "stage3", 2)] == [3, 2]
    with pytest.raises(DataError, match=r"train.jsonl:2: docs: has 2 candidates, fewer than"):
        read_stage_rows(folder / "train.jsonl", "stage3", 3)


def test_validate_an_empty_file_fails(cli, workspace, tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    r = cli("-w", "test", "data", "validate", str(f), "--kind", "text")
    assert r.exit_code == 3 and r.output.strip() == f"{f}: no rows"


def test_planning_modules_do_not_import_mlx():
    """Planning, references, row formats, configs and presets stay light: the CLI checks a run
    before any model library loads."""
    import subprocess
    import sys

    code = ("import sys, clara.plan, clara.refs, clara.data.formats, clara.data.validate, "
            "clara.method.config, clara.presets; "
            "sys.exit(any(m == 'mlx' or m.startswith(('mlx.', 'mlx_lm')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
