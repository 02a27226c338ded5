"""The training engine and the LoRA task, in-process on a tiny real model (no mocks)."""

from __future__ import annotations

import json
import math
import types
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx
import pytest

from clara import io
from clara.errors import UserError, DataError
from clara.models.loading import cast_model
from clara.platform import default_dtype
from clara.runs import create_run
from clara.train import tasks
from clara.train.config import EngineConfig, TrainConfig, merge_config
from clara.train.engine import Engine
from conftest import corpus_sentences


def chat_rows(n, seed=0):
    return [{"messages": [{"role": "user", "content": f"Who and what? {s.split()[0]}"},
                          {"role": "assistant", "content": s}]}
            for s in corpus_sentences(n, seed)[:n]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    chat = root / "chat"
    rows = chat_rows(60)
    io.write_jsonl(chat / "train.jsonl", rows[:48])
    io.write_jsonl(chat / "valid.jsonl", rows[48:])
    text = root / "text"
    io.write_jsonl(text / "train.jsonl", [{"text": s} for s in corpus_sentences(40, 1)[:40]])
    io.write_jsonl(text / "valid.jsonl", [{"text": s} for s in corpus_sentences(8, 2)[:8]])
    # validation that training makes worse: one pattern drilled, another one checked
    rising = root / "rising"
    io.write_jsonl(rising / "train.jsonl", [{"text": "Alia built the river mill in 1790. " * 3}] * 16)
    io.write_jsonl(rising / "valid.jsonl", [{"text": "Hollis sold a salt mine in 1829. " * 3}] * 4)
    small = root / "small"  # 3 batches of 4 per epoch: epochs wrap quickly
    io.write_jsonl(small / "train.jsonl", rows[:12])
    io.write_jsonl(small / "valid.jsonl", rows[48:52])
    return types.SimpleNamespace(chat=chat, text=text, rising=rising, small=small)


def start(workspace, model, data_dir, name=None, **settings):
    settings = {"batch_size": 4, "max_seq_length": 64, "learning_rate": 1e-3, "iters": 10,
                "val_every": 5, "save_every": 5, **settings}
    cfg = merge_config(TrainConfig, None, {"model": str(model), "data": str(data_dir), **settings})
    run = create_run(workspace, "lora", asdict(cfg), name=name)
    return run


def engine_for(run):
    doc = run.config()
    task = tasks.create(doc["kind"], doc, run.path)
    return Engine(task, EngineConfig.from_dict(doc["config"]), run.path)


def train_rows(run):
    return [r for r in run.metrics() if "train_loss" in r]


def val_rows(run):
    return [r for r in run.metrics() if "val_loss" in r]


def events(run, kind):
    return [e for e in run.events() if e["event"] == kind]


def test_sft_loss_falls_and_checkpoints_are_mlx_lm_adapters(workspace, tiny_model_dir, data):
    run = start(workspace, tiny_model_dir, data.chat, iters=30, val_every=10, save_every=10)
    result = engine_for(run).run()
    assert result.status == "completed" and result.reason == "done" and result.step == 30
    losses = [r["train_loss"] for r in train_rows(run)]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    vals = [r["val_loss"] for r in val_rows(run)]
    assert [r["step"] for r in val_rows(run)] == [10, 20, 30] and vals[-1] < vals[0]
    row = train_rows(run)[-1]
    for key in ("learning_rate", "tokens_per_second", "peak_memory_gb", "elapsed_s", "epoch"):
        assert row[key] is not None
    # the steps at a checkpoint (10, 20, 30) run at the rate of the others: each step is timed
    # with its own launch (on a CPU the step queued ahead is computed at its launch; the rate at
    # those steps read 700x the others)
    rates = sorted(r["tokens_per_second"] for r in train_rows(run))
    assert rates[-1] < 10 * rates[len(rates) // 2], rates
    assert row["learning_rate"] < 1e-4  # cosine decay reached its end
    adapters = run.adapters
    assert (adapters / "last").is_symlink() and (adapters / "last").resolve().name == "step-0000030"
    assert sorted(p.name for p in adapters.glob("step-*")) == ["step-0000020", "step-0000030"]
    cfg = json.loads((adapters / "best" / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == "lora" and cfg["lora_parameters"]["rank"] == 8
    assert json.loads((adapters / "best" / "best.json").read_text())["step"] == result.best_step
    state = json.loads((adapters / "last" / "trainer_state.json").read_text())
    assert state["step"] == 30 and len(state["rng"]) == 2


def test_cpt_text_and_prompt_masking_counts(workspace, tiny_model_dir, data, monkeypatch,
                                            tmp_path):
    run = start(workspace, tiny_model_dir, data.text, mode="cpt", iters=3, val_every=0)
    eng = engine_for(run)
    monkeypatch.setenv("CLARA_HOST_PARTS", str(tmp_path / "host"))  # benchmarks' per-rank file
    assert eng.run().status == "completed"
    # the host time of queuing each step, split into its parts, which never add up to more
    parts = json.loads((tmp_path / "host.rank0.json").read_text())
    assert len(parts["parts"]) == len(parts["launch_s"]) == 3
    assert set(parts["parts"][0]) == {"batch", "step", "eval", "tokens", "dist"}
    assert all(0 < sum(p.values()) <= t for p, t in zip(parts["parts"], parts["launch_s"]))
    sft = engine_for(start(workspace, tiny_model_dir, data.chat, iters=1))
    masked = next(iter(sft.task.valid_batches()))
    offsets, lengths = masked[1][:, 0], masked[1][:, 1]
    assert bool(mx.all(offsets > 0)) and bool(mx.all(offsets < lengths))
    plain = next(iter(eng.task.valid_batches()))
    assert bool(mx.all(plain[1][:, 0] == 0))


def test_early_stopping_fires_on_rising_validation_loss(workspace, tiny_model_dir, data):
    run = start(workspace, tiny_model_dir, data.rising, mode="cpt", iters=40, val_every=2,
                learning_rate=1e-2, early_stopping_patience=2, save_every=100)
    result = engine_for(run).run()
    assert result.reason == "early_stop" and result.status == "completed"
    assert result.step < 40
    vals = val_rows(run)
    best = min(vals, key=lambda r: r["val_loss"])
    assert best["step"] == result.best_step
    assert all(r["val_loss"] > best["val_loss"] for r in vals if r["step"] > best["step"])
    assert len([r for r in vals if r["step"] > best["step"]]) == 2
    assert events(run, "early_stop") and (run.adapters / "last" / "trainer_state.json").is_file()
    assert json.loads((run.adapters / "best" / "best.json").read_text())["step"] == best["step"]


def _comparable(rows):
    skip = {"tokens_per_second", "elapsed_s", "val_time_s", "peak_memory_gb"}
    return [{k: v for k, v in r.items() if k not in skip} for r in rows]


def test_resume_continues_the_same_loss_curve(workspace, tiny_model_dir, data):
    settings = dict(iters=12, save_every=3, val_every=4, lora_dropout=0.2,
                    grad_accumulation_steps=2, warmup_steps=2, report_every=2)
    straight = start(workspace, tiny_model_dir, data.small, **settings)
    assert engine_for(straight).run().status == "completed"

    split = start(workspace, tiny_model_dir, data.small, **settings)
    first = engine_for(split)
    result = first.run(stop_requested=lambda: first.step == 5)
    assert result.status == "stopped" and result.step == 5
    assert (split.adapters / "last").resolve().name == "step-0000005"
    second = engine_for(split)
    assert second.run().status == "completed"
    assert events(split, "resume")[0]["step"] == 5

    a, b = _comparable(straight.metrics()), _comparable(split.metrics())
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float):
                assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-6), (ra["step"], k)
            else:
                assert ra[k] == rb[k]
    wa = mx.load(str(straight.adapters / "last" / "adapters.safetensors"))
    wb = mx.load(str(split.adapters / "last" / "adapters.safetensors"))
    assert all(mx.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_queuing_the_next_step_ahead_changes_no_number(workspace, tiny_model_dir, data,
                                                        monkeypatch):
    import clara.train.engine as engine

    settings = dict(iters=9, save_every=4, val_every=3, lora_dropout=0.2, warmup_steps=2)
    runs = []
    for ahead in (True, False):
        monkeypatch.setattr(engine, "STEP_AHEAD", ahead)
        run = start(workspace, tiny_model_dir, data.small, **settings)
        assert engine_for(run).run().status == "completed"
        runs.append(run)
    a, b = (_comparable(r.metrics()) for r in runs)
    assert a == b  # losses, learning rates, grad norms, token counts: bit for bit
    wa, wb = (mx.load(str(r.adapters / "last" / "adapters.safetensors")) for r in runs)
    assert all(mx.array_equal(wa[k], wb[k]) for k in wa)


def test_absurd_learning_rate_halts_on_nan_with_a_hint(workspace, tiny_model_dir, data):
    run = start(workspace, tiny_model_dir, data.chat, iters=20, learning_rate=1e20, save_every=1)
    result = engine_for(run).run()
    assert result.status == "failed" and result.reason == "nan" and result.step < 20
    nan = events(run, "nan")
    assert nan and "learning rate" in nan[0]["hint"]
    # the checkpoint of step 1 is kept; none of the broken weights is written
    assert [p.name for p in run.adapters.glob("step-*")] == ["step-0000001"]


def test_memory_guard_saves_and_stops(workspace, tiny_model_dir, data):
    run = start(workspace, tiny_model_dir, data.chat, iters=20, memory_limit_gb=1e-6)
    result = engine_for(run).run()
    assert result.status == "stopped" and result.reason == "memory" and result.step == 1
    assert (run.adapters / "last" / "adapters.safetensors").is_file()
    assert "batch_size" in events(run, "memory")[0]["hint"]


@pytest.mark.parametrize("fine_tune_type", ["dora", "full"])
def test_dora_and_full_train_and_reload(workspace, tiny_model_dir, data, fine_tune_type):
    import mlx_lm

    run = start(workspace, tiny_model_dir, data.chat, iters=4, fine_tune_type=fine_tune_type,
                num_layers=1, val_every=0)
    eng = engine_for(run)
    assert eng.run().status == "completed"
    names = mx.load(str(run.adapters / "last" / "adapters.safetensors")).keys()
    if fine_tune_type == "dora":
        assert any(n.endswith(".m") for n in names)
    else:
        assert all(n.startswith("model.layers.1.") for n in names)
    model, tok = mlx_lm.load(str(tiny_model_dir), adapter_path=str(run.adapters / "last"))
    # the engine trains in the platform's dtype (bfloat16 on a GPU); mlx_lm keeps the files'
    dtype = default_dtype()
    cast_model(model, dtype)
    x = mx.array([[1, 5, 9, 11]])
    eng.task.model.eval()
    atol = 1e-4 if dtype == "float32" else 5e-2
    assert mx.allclose(model(x).astype(mx.float32), eng.task.model(x).astype(mx.float32),
                       atol=atol)


def test_from_adapter_starts_from_earlier_weights(workspace, tiny_model_dir, data):
    cpt = start(workspace, tiny_model_dir, data.text, mode="cpt", iters=3, val_every=0)
    assert engine_for(cpt).run().status == "completed"
    sft = start(workspace, tiny_model_dir, data.chat, iters=1,
                from_adapter=str(cpt.adapters / "last"))
    task = engine_for(sft).task
    trained = mx.load(str(cpt.adapters / "last" / "adapters.safetensors"))
    from mlx.utils import tree_flatten

    own = dict(tree_flatten(task.model.trainable_parameters()))
    assert all(mx.array_equal(own[k], v) for k, v in trained.items())
    bad = start(workspace, tiny_model_dir, data.chat, iters=1, lora_rank=4,
                from_adapter=str(cpt.adapters / "last"))
    with pytest.raises(UserError, match="shape"):
        engine_for(bad)


def test_adapter_from_mlx_lm_trainer_loads_in_ours(tmp_path, tiny_model_dir, data):
    import mlx_lm
    from mlx_lm.lora import CONFIG_DEFAULTS, train_model
    from mlx_lm.tuner.datasets import load_local_dataset

    from clara.models.loading import load_model
    from clara.train.lora import LoraTask

    out = tmp_path / "mlx_adapter"
    args = types.SimpleNamespace(**{**CONFIG_DEFAULTS, "model": str(tiny_model_dir),
                                    "train": True, "data": str(data.chat), "iters": 3,
                                    "batch_size": 4, "num_layers": -1, "steps_per_eval": 100,
                                    "val_batches": 1, "adapter_path": str(out),
                                    "learning_rate": 1e-2, "max_seq_length": 64,
                                    "mask_prompt": True})
    model, tok = mlx_lm.load(str(tiny_model_dir))
    train_set, valid_set, _ = load_local_dataset(Path(args.data), tok, args)
    train_model(args, model, train_set, valid_set)
    # loads through our loader, and as the starting point of our training
    loaded = load_model(str(tiny_model_dir), adapter_path=out)
    cfg = merge_config(TrainConfig, None, {"model": str(tiny_model_dir), "data": str(data.chat),
                                           "from_adapter": str(out), "max_seq_length": 64})
    task = LoraTask(cfg, str(tiny_model_dir), data.chat)
    x = mx.array([[1, 5, 9, 11, 40]])
    task.model.eval()
    assert mx.allclose(loaded.model(x), task.model(x), atol=1e-5)
    base, _ = mlx_lm.load(str(tiny_model_dir))
    assert not mx.allclose(base(x), loaded.model(x), atol=1e-4)  # the adapter changes outputs


def test_bad_data_gets_file_line_field(workspace, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    io.write_jsonl(bad / "train.jsonl", chat_rows(3) + [{"messages": [{"role": "user"}]}])
    run = start(workspace, tiny_model_dir, bad)
    with pytest.raises(DataError) as e:
        engine_for(run)
    assert f"{bad / 'train.jsonl'}:4: messages" in str(e.value)
    text = tmp_path / "text"
    io.write_jsonl(text / "train.jsonl", [{"text": "ok then"}, {"txt": "x"}])
    run = start(workspace, tiny_model_dir, text, mode="cpt")
    with pytest.raises(DataError, match=r"train.jsonl:2: text: missing"):
        engine_for(run)


def test_config_file_then_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('model = "m"\ndata = "d"\nlora_rank = 4\niters = 7\n')
    cfg = merge_config(TrainConfig, f, {"iters": 9})
    assert cfg.lora_rank == 4 and cfg.iters == 9
    f.write_text('model = "m"\ndata = "d"\nlora_rnk = 4\n')
    with pytest.raises(UserError, match="lora_rnk: unknown setting"):
        merge_config(TrainConfig, f, {})
    with pytest.raises(UserError, match="fine_tune_type"):
        merge_config(TrainConfig, None, {"model": "m", "data": "d", "fine_tune_type": "qlora"})
    assert EngineConfig(epochs=2, grad_accumulation_steps=2).total_steps(5) == 5


def test_task_registry_dispatches_on_kind(tmp_path):
    with pytest.raises(UserError, match="not known"):
        tasks.create("nope", {}, tmp_path)
    seen = {}
    tasks.register("probe", lambda cfg, run_dir: seen.setdefault("args", (cfg, run_dir)))
    tasks.create("probe", {"config": {}}, tmp_path)
    assert seen["args"][1] == tmp_path and "lora" in tasks.kinds()


def test_qlora_trains_on_a_quantized_base(workspace, tiny_model_dir, data, tmp_path):
    from clara.models.quantize import quantize_folder

    q = quantize_folder(tiny_model_dir, tmp_path / "q4", bits=4, group_size=32)
    run = start(workspace, q, data.chat, iters=3, val_every=0)
    eng = engine_for(run)
    assert eng.task.describe()["quantization"]["bits"] == 4
    assert eng.run().status == "completed"
    assert all(math.isfinite(r["train_loss"]) for r in train_rows(run))
    full = start(workspace, q, data.chat, fine_tune_type="full")
    with pytest.raises(UserError, match="non-quantized"):
        engine_for(full)
