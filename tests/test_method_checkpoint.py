"""CLaRa checkpoints (exact round trip, loading rules by stage), the compressed-document store,
answering (streamed through mlx-lm with its KV cache) and the engine registration."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from clara import io
from clara.errors import UserError, DataError
from clara.method import checkpoint, inference, prompts, synthetic
from clara.method.config import ClaraConfig
from clara.method.model import ClaraModel

FACTS = synthetic.facts(8, seed=5)


def make(tiny_model_dir, stage="stage1", **kw) -> ClaraModel:
    kw = {"doc_max_tokens": 16, "compression_rate": 4, "max_len": 256, **kw}
    mx.random.seed(0)
    return ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), stage=stage, **kw))


def perturb(model: ClaraModel, seed: int):
    """Stand-in for training: random non-zero weights in every adapter and the memory rows."""
    mx.random.seed(seed)
    for layer in model._loras:
        for p in layer.adapters.values():
            p.lora_a = p.lora_a + mx.random.normal(p.lora_a.shape) * 0.05
            p.lora_b = mx.random.normal(p.lora_b.shape) * 0.05
    emb = model.embedding
    emb.memory = emb.memory + mx.random.normal(emb.memory.shape) * 0.05
    mx.eval(model.parameters())


def adapter(model, name):
    return [np.array(v) for k, v in sorted(checkpoint.adapter_weights(model).items())
            if f".adapters.{name}." in k]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def outputs(model, k=1):
    model.eval()
    docs = [f["doc"] for f in FACTS[:k]]
    b = model.encoder_batch(docs)
    vec, _ = model.compress(b["enc_ids"], b["enc_mask"], b["enc_mem_pos"])
    ex = model.decoder_example(*prompts.rag_qa(model.config.n_mem, k, "Who?", "Alia"))
    logits = model.decode_logits(model.decoder_batch([ex], k), vec, k)
    # float32 first: NumPy has no bfloat16 (the platform dtype on Metal and CUDA)
    return np.array(vec.astype(mx.float32)), np.array(logits.astype(mx.float32))


def test_round_trip_is_bit_identical(tiny_model_dir, tmp_path):
    m = make(tiny_model_dir, "stage3", top_k=1)
    perturb(m, 1)
    checkpoint.save(m, tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "clara_config.json").read_text())
    assert meta["config"]["n_mem"] == 4 and meta["config"]["stage"] == "stage3"
    assert meta["tokenizer_additions"]["<MEM0>"] == m.special.mem[0]
    assert meta["adapters"] == ["compressor", "generator", "query_reasoner"]
    for inference_mode in (True, False):
        back = checkpoint.load(tmp_path / "ck", inference=inference_mode)
        for x, y in zip(outputs(m), outputs(back)):
            assert np.array_equal(x, y)
        for name in ("compressor", "generator", "query_reasoner"):
            assert same(adapter(m, name), adapter(back, name))
    served = checkpoint.load(tmp_path / "ck", inference=True)
    assert __import__("mlx.utils").utils.tree_flatten(served.trainable_parameters()) == []


def test_loading_rules_by_stage(tiny_model_dir, tmp_path):
    s1 = make(tiny_model_dir, "stage1")
    perturb(s1, 2)
    checkpoint.save(s1, tmp_path / "s1")
    # stage 2: compressor and memory rows kept, generator FRESH
    s2 = checkpoint.load(tmp_path / "s1", stage="stage2", overrides={"top_k": 2}, seed=3)
    assert s2.config.stage == "stage2" and s2.config.top_k == 2
    assert same(adapter(s2, "compressor"), adapter(s1, "compressor"))
    assert not same(adapter(s2, "generator"), adapter(s1, "generator"))
    assert all(not np.any(np.array(l.adapters["generator"].lora_b)) for l in s2._loras)
    assert np.array_equal(np.array(s2.embedding.memory), np.array(s1.embedding.memory))
    perturb(s2, 4)
    checkpoint.save(s2, tmp_path / "s2")
    # stage 3: compressor and generator kept, query reasoner = copy of the compressor
    s3 = checkpoint.load(tmp_path / "s2", stage="stage3")
    assert same(adapter(s3, "compressor"), adapter(s2, "compressor"))
    assert same(adapter(s3, "generator"), adapter(s2, "generator"))
    assert same(adapter(s3, "query_reasoner"), adapter(s2, "compressor"))
    trainable = {k for k, _ in __import__("mlx.utils").utils.tree_flatten(s3.trainable_parameters())}
    assert not any(".adapters.compressor." in k for k in trainable)
    # a stage-3 checkpoint with its own query reasoner keeps it; stage 1 ignores it
    perturb(s3, 5)
    checkpoint.save(s3, tmp_path / "s3")
    again = checkpoint.load(tmp_path / "s3", stage="stage3")
    assert same(adapter(again, "query_reasoner"), adapter(s3, "query_reasoner"))
    assert not same(adapter(again, "query_reasoner"), adapter(again, "compressor"))
    back1 = checkpoint.load(tmp_path / "s3", stage="stage1")
    assert back1.adapter_names() == ["compressor", "generator"]
    # the geometry cannot change, and a folder that is no checkpoint is refused
    with pytest.raises(UserError, match="compression_rate"):
        checkpoint.load(tmp_path / "s3", stage="stage3", overrides={"compression_rate": 2})
    with pytest.raises(UserError, match="not a CLaRa checkpoint"):
        checkpoint.load(tmp_path)


def test_store_and_answers(tiny_model_dir, tmp_path):
    m = make(tiny_model_dir, "stage3", top_k=2)
    perturb(m, 6)
    docs = [f["doc"] for f in FACTS]
    inference.CompressedStore.build(m, docs, tmp_path / "store", batch_size=3,
                                    ids=[f"d{i}" for i in range(len(docs))])
    opened = inference.CompressedStore.open(tmp_path / "store")
    direct = inference.compress_documents(m, docs, batch_size=8)
    assert opened.vectors.shape == (len(docs), 4, m.hidden_size)
    assert float(mx.abs(opened.vectors - direct).max()) < 1e-5  # batching does not matter
    assert [d["id"] for d in opened.docs] == [f"d{i}" for i in range(len(docs))]
    opened.check(m)

    # streamed greedy answer == a greedy loop without any cache over the same embeddings
    comp = opened.vectors[:2]
    stream = list(inference.stream_answer(m, "Who built it?", comp, max_tokens=6))
    tokens = [r.token for r in stream]
    ids = m.prompt_ids("Who built it?", 2)
    arr = np.array([ids], dtype=np.int32)
    emb = m.inject(mx.array(arr), mx.array(m.slot_index(arr, 2)), comp, 2)
    m.set_adapter("generator")
    want = []
    for _ in range(len(tokens)):
        logits = m.head(m.hidden_states(None, None, emb))[0, -1]
        s = m.special
        logits[s.first:s.first + s.count] = -float("inf")
        t = int(mx.argmax(logits).item())
        want.append(t)
        emb = mx.concatenate([emb, m.embedding(mx.array([[t]]))], axis=1)
    assert tokens == want[:len(tokens)] and len(tokens) >= 1
    assert not any(m.special.first <= t < m.special.first + m.special.count for t in tokens)
    text = inference.answer_from_compressed(m, "Who built it?", comp, max_tokens=6)
    assert text == "".join(r.text for r in stream).strip()
    assert inference.answer_from_docs(m, "Who built it?", docs[:2], max_tokens=6) == text

    # retrieval over the pool: top-k by the query reasoner, rank order
    res = inference.answer_with_retrieval(m, "Who built the river mill?", opened, max_tokens=4)
    idx, scores = inference.retrieve(m, "Who built the river mill?", opened.vectors, 2)
    assert res.indices == idx and len(idx) == 2 and scores[0] >= scores[1]
    assert res.doc_ids == [f"d{i}" for i in idx]
    # a store made by another compressor is refused
    other = make(tiny_model_dir, "stage3", top_k=2)
    with pytest.raises(UserError, match="another compressor"):
        opened.check(other)


def test_registered_kinds_and_engine_run(tiny_model_dir, tmp_path):
    from clara.train import tasks as registry
    from clara.train.engine import Engine

    assert {"clara-stage1", "clara-stage2", "clara-stage3"} <= set(registry.kinds())
    data = tmp_path / "data"
    rows = synthetic.stage1_rows(FACTS, paraphrase_every=3)
    io.write_jsonl(data / "train.jsonl", rows[:6])
    io.write_jsonl(data / "valid.jsonl", rows[6:])
    conf = {"model": str(tiny_model_dir), "data": str(data), "doc_max_tokens": 16,
            "compression_rate": 4, "batch_size": 2, "iters": 3, "val_every": 0,
            "save_every": 10, "max_len": 256, "learning_rate": 1e-3}
    task = registry.create("clara-stage1", {"config": conf}, tmp_path / "run")
    assert task.kind == "clara-stage1" and task.num_train_batches() == 3
    from clara.method.tasks import ClaraTrainConfig

    (tmp_path / "run").mkdir(exist_ok=True)
    result = Engine(task, ClaraTrainConfig(**conf), tmp_path / "run").run()
    assert (result.status, result.step) == ("completed", 3), result
    metrics = io.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert any("mse" in json.dumps(r) for r in metrics)
    saved = [p for p in (tmp_path / "run").rglob("clara_config.json")]
    assert saved, "the engine wrote no CLaRa checkpoint"
    back = checkpoint.load(saved[0].parent, inference=True)
    task.model.eval()
    for x, y in zip(outputs(task.model), outputs(back)):
        assert np.array_equal(x, y)
    # stage 2 continues from it through the factory
    rows2 = synthetic.stage2_rows(FACTS, 2)
    io.write_jsonl(tmp_path / "d2" / "train.jsonl", rows2)
    conf2 = {**conf, "data": str(tmp_path / "d2"), "init_from": str(saved[0].parent), "top_k": 2}
    task2 = registry.create("clara-stage2", {"config": conf2}, tmp_path / "run2")
    assert same(adapter(task2.model, "compressor"), adapter(back, "compressor"))
    with pytest.raises(DataError, match="docs"):
        registry.create("clara-stage2", {"config": {**conf2, "top_k": 3}}, tmp_path / "run3")
