"""Stage 3's recipe parts on a tiny real Llama: what it trains, its validation (exact answers with
the documents it picks and with the gold ones, recall), the engine keeping its start as a
candidate best checkpoint chosen by those figures, the pipeline's stage-2 vs stage-3 report, and
the warning when doc_max_tokens cuts the documents."""

from __future__ import annotations

import random

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from clara import io
from clara.method import synthetic
from clara.method.config import ClaraConfig
from clara.method.model import ClaraModel
from clara.method.pipeline import report_lines, stage3_report
from clara.method.tasks import ClaraStageTask, ClaraTrainConfig, parse_row
from clara.runs import Run
from clara.train.engine import Engine

FACTS = synthetic.facts(40, seed=5)


def make(tiny_model_dir, **kw) -> ClaraModel:
    kw = {"doc_max_tokens": 16, "compression_rate": 4, "max_len": 256, "lora_dropout": 0.0,
          "top_k": 1, **kw}
    mx.random.seed(0)
    return ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), stage="stage3", **kw))


def task_for(model, rows, valid=None, batch_size=4):
    c = model.config
    parse = lambda rs: [parse_row(r, "stage3", c.top_k, c.n_mem, "rows.jsonl", i + 1)  # noqa
                        for i, r in enumerate(rs)]
    return ClaraStageTask(model, parse(rows), parse(valid or []), batch_size)


def trained_parts(model, task) -> set[str]:
    batch = next(iter(task.train_batches(0, 0)))
    _, g = nn.value_and_grad(model, lambda m, b: task.loss(m, b)[0])(model, batch)
    return {("memory" if "memory" in k else k.split(".adapters.")[1].split(".")[0])
            for k, v in tree_flatten(g)}


def test_stage3_trains_the_query_reasoner_alone_unless_asked(tiny_model_dir):
    rows = synthetic.stage3_rows(FACTS[:8], 4)
    m = make(tiny_model_dir)
    assert ClaraTrainConfig().stage3_train == "query_reasoner"
    assert trained_parts(m, task_for(m, rows)) == {"query_reasoner"}
    m = make(tiny_model_dir, stage3_train="query_reasoner,generator,memory")
    assert trained_parts(m, task_for(m, rows)) == {"query_reasoner", "generator", "memory"}
    import pytest

    from clara.errors import UserError

    with pytest.raises(UserError, match="stage3_train"):
        make(tiny_model_dir, stage3_train="compressor")


def test_validation_figures_start_row_best_by_them_and_report(tiny_model_dir, tmp_path):
    m = make(tiny_model_dir, retrieval_weight=1.0)
    task = task_for(m, synthetic.stage3_rows(FACTS[:16], 4), synthetic.stage3_rows(FACTS[32:], 4))
    batch = next(iter(task.valid_batches()))
    m.train()
    assert "em" not in task.loss(m, batch)[2]  # training steps pay for no extra decode
    m.eval()
    extras = task.loss(m, batch)[2]
    assert {"em", "em_gold", "recall@1", "retrieval", "em_recall"} <= set(extras)
    assert all(0.0 <= float(extras[k]) <= 1.0 for k in ("em", "em_gold", "recall@1"))
    assert float(extras["em_recall"]) == float(extras["em"]) + float(extras["recall@1"])
    assert task.best_metric == ("em_recall", "max")  # best/ by answers + recall, not the loss
    cfg = ClaraTrainConfig(model=str(tiny_model_dir), iters=3, learning_rate=1e-3,
                           val_every=2, save_every=100, compile=False)
    res = Engine(task, cfg, tmp_path).run()
    assert res.status == "completed"
    val = [r for r in io.read_jsonl(tmp_path / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in val] == [0, 2, 3]  # the start is validated, then as usual
    assert {"val_em", "val_em_gold", "val_recall@1"} <= set(val[0])
    best = io.read_json(tmp_path / "adapters" / "best" / "best.json")
    scores = {r["step"]: r["val_em_recall"] for r in val}
    assert best["step"] == max(scores, key=lambda s: (scores[s], -s))  # the earliest of ties
    report = stage3_report(Run(tmp_path))
    assert set(report["stage2"]) == {"em_gold", "em", "recall@1"}
    assert report["stage3_step"] == best["step"]
    assert report["stage2"]["em_gold"] == round(val[0]["val_em_gold"], 4)
    assert report["worse"] == [k for k in report["stage2"]
                               if report["stage3"][k] < report["stage2"][k]]
    assert report["questions"] == 8  # every validation row (val_batches -1)
    lines = report_lines(report)
    assert "stage 2 -> stage 3" in lines[0] and len(lines) == 5
    assert lines[-1] == "    (8 validation questions: a change under 35 points may be noise)"


def test_documents_cut_by_doc_max_tokens_are_reported(tiny_model_dir, cli, workspace):
    long_doc = " ".join(f"{f['doc']}" for f in FACTS[:6])  # far over 16 tokens
    rows = [{"question": "Who?", "answer": "Alia", "docs": [long_doc, FACTS[7]["doc"]],
             "pos_index": [0]}] * 2
    m = make(tiny_model_dir)
    t = task_for(m, rows, batch_size=2).describe()["doc_truncation"]
    assert t["doc_max_tokens"] == 16 and t["cut_docs"] == 0.5
    assert 0.5 < t["cut_tokens_max"] < 1 and "16" in t["warning"]
    io.write_jsonl(workspace.datasets_dir / "s3" / "train.jsonl",
                   [{**r, "docs": r["docs"] * 3} for r in rows])  # 6 candidates: stage 3
    r = cli("-w", "test", "data", "show", "s3", "--tokenizer", str(tiny_model_dir),
            "--doc-max-tokens", "16")
    assert r.exit_code == 0, r.output
    assert "LOST MEAN" in r.output and "50.0%" in r.output
    assert "warning: train: 50% of the documents are longer than doc_max_tokens 16" in r.output
    r = cli("-w", "test", "data", "show", "s3", "--tokenizer", str(tiny_model_dir),
            "--doc-max-tokens", "4096", "--format", "json")
    import json

    assert json.loads(r.output)["splits"]["train"]["documents"]["cut_docs"] == 0.0


def test_answer_match_is_greedy_exactness_up_to_the_end_of_turn():
    from clara.method.losses import IGNORE, answer_match

    eos = {4}
    labels = mx.array([[IGNORE, IGNORE, 1, 2, 4, 5]])  # answer 1 2, end of turn 4, then "\n" 5

    def logits(best):  # best[i]: the argmax predicting label i + 1
        out = mx.zeros((1, 6, 6))
        for i, t in enumerate(best):
            out[0, i, t] = 1.0
        return out

    # the first answer token: end of turn is skipped (an answer is never empty), so 1 wins
    first = logits([0, 4, 2, 4, 0, 0])
    first[0, 1, 1] = 0.5
    assert float(answer_match(first, labels, eos)) == 1.0  # the token after end of turn: free
    assert float(answer_match(logits([0, 1, 3, 4, 0, 0]), labels, eos)) == 0.0
    assert float(answer_match(logits([0, 1, 2, 0, 0, 0]), labels, eos)) == 0.0  # no stop


def test_centred_scores_see_what_differs_between_the_candidates():
    from clara.method.topk import cosine_scores

    rng = np.random.default_rng(0)
    common = 100.0 * rng.standard_normal(16)  # a direction every vector shares
    diff = rng.standard_normal((1, 5, 16))
    q, d = mx.array(common + diff[0, 2] + 0.1), mx.array(common + diff)
    plain = np.array(cosine_scores(q[None], d))
    centred = np.array(cosine_scores(q[None], d, center=True))
    assert np.ptp(plain) < 0.01  # all alike: plain cosines nearly equal
    assert int(centred.argmax()) == 2 and np.ptp(centred) > 0.5
    # centring ignores the shared direction; one candidate is left as it is
    moved = np.array(cosine_scores(q[None] + 50.0, d + 50.0, center=True))
    assert np.allclose(moved, centred, atol=1e-4)
    one = cosine_scores(q[None], d[:, :1], center=True)
    assert np.allclose(np.array(one), np.array(cosine_scores(q[None], d[:, :1])))


def test_pipeline_stage3_rate_is_the_shared_one_scaled_unless_given(workspace):
    from clara.method.pipeline import STAGE3_LR_SCALE, create_pipeline, stage_config

    data = {}
    for s, rows in (("stage1", synthetic.stage1_rows(FACTS[:4])),
                    ("stage2", synthetic.stage2_rows(FACTS[:4], 2)),
                    ("stage3", synthetic.stage3_rows(FACTS[:4], 4))):
        io.write_jsonl(workspace.datasets_dir / s / "train.jsonl", rows)
        data[s] = str(workspace.datasets_dir / s)
    shared = {"model": "m", "learning_rate": 1e-3}
    pipe = create_pipeline(workspace, shared, "m", data, name="a")
    assert stage_config(pipe, "stage2", None)["learning_rate"] == 1e-3
    assert stage_config(pipe, "stage3", None)["learning_rate"] == 1e-3 * STAGE3_LR_SCALE
    pipe = create_pipeline(workspace, shared, "m", data, {"stage3": {"learning_rate": 5e-4}},
                           name="b")
    assert stage_config(pipe, "stage3", None)["learning_rate"] == 5e-4


def test_pipeline_warns_when_documents_are_cut(workspace, tiny_model_dir):
    from clara.method.pipeline import create_pipeline, truncation_warnings

    long_doc = " ".join(f["doc"] for f in FACTS[:6])
    data = {}
    for s in ("stage1", "stage2", "stage3"):
        rows = [{"question": "Who?", "answer": "Alia", "docs": [long_doc if s == "stage3"
                                                               else FACTS[0]["doc"]]}]
        io.write_jsonl(workspace.datasets_dir / s / "train.jsonl", rows)
        data[s] = str(workspace.datasets_dir / s)
    pipe = create_pipeline(workspace, {"model": str(tiny_model_dir), "doc_max_tokens": 16},
                           str(tiny_model_dir), data, name="cut")
    (line,) = truncation_warnings(pipe)
    assert line.startswith("stage3: 100% of the documents are longer than doc_max_tokens 16")


def cached_against_plain(m, cached, plain, flag: str, vectors: str, ids: str):
    """The first training batch of `cached` (the frozen compressor's vectors from the task's
    cache: `flag` on) and of `plain` (compressed inside the step: off): they differ in just
    that, and give the same gradients. Returns each batch's (loss, extras) and the gradients."""
    setattr(plain, flag, False)
    assert getattr(cached, flag)
    b1, b2 = next(iter(cached.train_batches(0, 0))), next(iter(plain.train_batches(0, 0)))
    assert vectors in b1 and ids not in b1 and ids in b2
    assert cached.loss_counts(b1) == plain.loss_counts(b2)
    m.train()
    vg = nn.value_and_grad(m, lambda mm, b: mm.stage_loss(b)[0])
    (l1, g1), (l2, g2) = vg(m, b1), vg(m, b2)
    g1, g2 = dict(tree_flatten(g1)), dict(tree_flatten(g2))
    assert g1.keys() == g2.keys()
    assert all(np.allclose(np.array(g1[k]), np.array(g2[k]), rtol=1e-4, atol=1e-6) for k in g1)
    return (l1, m.stage_loss(b1)[2]), (l2, m.stage_loss(b2)[2]), g1


def test_frozen_candidates_are_compressed_once_outside_the_step(tiny_model_dir, tmp_path):
    """With the compressor and the memory rows frozen (the default), stage 3 takes its
    candidates' vectors from a per-document cache filled outside the training step: the same
    loss and gradients as compressing them inside it, and the same compiled engine run."""
    rows = synthetic.stage3_rows(FACTS[:8], 4)
    m = make(tiny_model_dir, retrieval_weight=1.0)
    cached = task_for(m, rows)
    (l1, _), (l2, _), g = cached_against_plain(m, cached, task_for(m, rows), "cache_candidates",
                                               "cand_vecs", "cand_ids")
    assert float(l1) == pytest.approx(float(l2), rel=1e-5)
    assert all("query_reasoner" in k for k in g)
    # every unique candidate once, whatever the epochs
    for epoch in range(2):
        list(cached.train_batches(epoch, 0))
    assert set(cached._doc_vectors) == {d for r in rows for d in r["docs"]}

    def engine_losses(cache: bool, folder):
        mm = make(tiny_model_dir, retrieval_weight=1.0)
        task = task_for(mm, rows)
        task.cache_candidates = cache
        (tmp_path / folder).mkdir()
        cfg = ClaraTrainConfig(model=str(tiny_model_dir), iters=3, learning_rate=1e-2,
                               val_every=0, save_every=100, warmup_steps=0)
        assert Engine(task, cfg, tmp_path / folder).run().status == "completed"
        return [r["train_loss"] for r in io.read_jsonl(tmp_path / folder / "metrics.jsonl")
                if "train_loss" in r]

    assert engine_losses(True, "a") == pytest.approx(engine_losses(False, "b"), rel=1e-4)
    # the memory rows feed the compressor: trained, they change the candidates' vectors
    m = make(tiny_model_dir, stage3_train="query_reasoner,memory")
    assert not task_for(m, rows).cache_candidates


def test_retrieval_loss_ranks_the_gold_against_the_batch_or_the_pool(tiny_model_dir):
    """stage3_negatives: the supervised retrieval loss of a training batch ranks each question's
    gold document against its row's candidates (rows), every candidate of the batch (batch, the
    default), or every training document (pool); a candidate with the gold's text is a positive
    wherever it is. Validation batches keep the rows' own candidates."""
    import numpy as np
    import pytest

    from clara.errors import UserError

    rows = synthetic.stage3_rows(FACTS[:10], 4)  # candidates drawn from 10 facts: shared
    assert ClaraTrainConfig().stage3_negatives == "batch"
    for how in ("rows", "batch", "pool"):
        m = make(tiny_model_dir, retrieval_weight=1.0, stage3_negatives=how)
        task = task_for(m, rows, rows[:4])
        batch = next(iter(task.train_batches(0, 0)))
        assert "neg_pos" not in next(iter(task.valid_batches()))
        if how == "rows":
            assert "neg_pos" not in batch
            continue
        # the batch's samples, as train_batches draws them
        mine = [task._train[j] for j in
                task._chunks(task._train_groups, np.random.default_rng([0, 0]))[0]]
        if how == "batch":
            docs, vecs = [d for s in mine for d in s["docs"]], batch["cand_vecs"]
        else:
            docs, vecs = task._pool[0], batch["neg_vecs"]
            assert sorted(docs) == sorted({d for r in rows for d in r["docs"]})
        gold = np.array([[d == s["docs"][s["pos"][0]] for d in docs] for s in mine])
        assert np.array_equal(np.array(batch["neg_pos"]), gold)
        assert gold.sum() > len(mine) if how == "batch" else gold.sum() == len(mine)
        m.train()
        got = float(m.stage_loss(batch)[2]["retrieval"])
        q = np.array(m.encode_query(batch["q_ids"], batch["q_mask"], batch["q_mem_pos"]))
        d = np.array(vecs.astype(mx.float32)).reshape(len(docs), -1)
        sc = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ \
            (d / np.linalg.norm(d, axis=1, keepdims=True)).T / m.config.tau

        def lse(x):
            return x.max(-1) + np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1))

        assert got == pytest.approx(float(np.mean(lse(sc) - lse(np.where(gold, sc, -1e30)))),
                                    rel=1e-4)
    with pytest.raises(UserError, match="pool needs the memory rows frozen"):
        task_for(make(tiny_model_dir, stage3_negatives="pool",
                      stage3_train="query_reasoner,memory"), rows)
    with pytest.raises(UserError, match="stage3_negatives: 'all' is not rows, batch or pool"):
        make(tiny_model_dir, stage3_negatives="all")


def test_stage2_with_a_frozen_compressor_takes_its_documents_from_the_cache(tiny_model_dir):
    """stage2_train = generator without dropout: the documents' vectors come from the same
    cache, with the CE and gradients of compressing them inside the step (the loss is the CE
    alone: the MSE of a frozen compressor is a constant that trains nothing); with dropout, or
    the compressor trained, they are compressed in the step as before."""
    rows = synthetic.stage2_rows(FACTS[:6], 2)

    def stage2(**kw):
        mx.random.seed(0)
        m = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), stage="stage2",
                                             doc_max_tokens=16, compression_rate=4, top_k=2,
                                             **{"lora_dropout": 0.0, **kw}))
        samples = [parse_row(r, "stage2", 2, m.config.n_mem, "rows", i + 1)
                   for i, r in enumerate(rows)]
        return m, lambda: ClaraStageTask(m, samples, samples[:2], 2)

    m, task = stage2(stage2_train="generator")
    for layer in m._loras:  # a compressor that is not the identity: B no longer zero
        for p in layer.adapters.values():
            p.lora_b = p.lora_b + 0.05
    cached = task()
    (l1, e1), (_, e2), g = cached_against_plain(m, cached, task(), "cache_documents",
                                                "doc_vecs", "enc_ids")
    assert float(l1) == float(e1["ce"]) and "mse" not in e1 and float(e2["mse"]) > 0
    assert float(e1["ce"]) == pytest.approx(float(e2["ce"]), rel=1e-5)
    assert {k.split(".adapters.")[1].split(".")[0] for k in g} == {"generator"}
    assert "doc_vecs" in next(iter(cached.valid_batches()))
    assert not stage2(stage2_train="generator", lora_dropout=0.1)[1]().cache_documents
    assert not stage2()[1]().cache_documents


def test_stage2_continues_stage1s_generator_only_when_asked(tiny_model_dir, tmp_path):
    from clara.method import checkpoint

    mx.random.seed(0)
    m = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), stage="stage1",
                                         doc_max_tokens=16, compression_rate=4))
    for layer in m._loras:  # a "trained" stage-1 generator: B is no longer zero
        layer.adapters["generator"].lora_b = layer.adapters["generator"].lora_b + 0.01
    checkpoint.save(m, tmp_path / "s1")
    s1 = checkpoint.adapter_digests(m)
    fresh = checkpoint.adapter_digests(checkpoint.load(tmp_path / "s1", stage="stage2"))
    kept = checkpoint.adapter_digests(checkpoint.load(
        tmp_path / "s1", stage="stage2", overrides={"stage2_generator": "stage1"}))
    assert fresh["compressor"] == kept["compressor"] == s1["compressor"]
    assert fresh["generator"] != s1["generator"] and kept["generator"] == s1["generator"]
    import pytest

    from clara.errors import UserError

    with pytest.raises(UserError, match="stage2_generator"):
        ClaraTrainConfig(stage2_generator="stage0").validate()


def test_stage2_trains_what_it_is_asked(tiny_model_dir):
    rows = synthetic.stage2_rows(FACTS[:8], 1, kinds=synthetic.QUESTIONS)
    assert [r["answer"] for r in rows[:3]] == [FACTS[0]["who"], FACTS[0]["year"], FACTS[0]["what"]]

    def parts(**kw):
        mx.random.seed(0)
        m = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), stage="stage2",
                                             doc_max_tokens=16, compression_rate=4,
                                             lora_dropout=0.0, **kw))
        task = ClaraStageTask(m, [parse_row(r, "stage2", 1, m.config.n_mem, "rows", i + 1)
                                  for i, r in enumerate(rows)], None, 4)
        return trained_parts(m, task)

    assert parts() == {"compressor", "generator", "memory"}  # the reference's stage 2
    # the compressor frozen: stage 1's vectors kept, and the memory rows it reads with them
    assert parts(stage2_train="generator") == {"generator"}


def test_stage2_aligns_each_question_with_its_documents(tiny_model_dir):
    """stage2_align: stage 2's batches carry the questions and which documents are each one's,
    the loss adds stage2_align times the in-batch retrieval loss between their compressed
    vectors, and training on it pulls each question towards its own document (off: the
    reference's batch and loss; compressor frozen: nothing to align)."""
    import mlx.optimizers as optim
    import numpy as np

    rows = synthetic.stage2_rows(FACTS[:8], 1)

    def task(**kw):
        mx.random.seed(0)
        m = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), stage="stage2",
                                             doc_max_tokens=16, compression_rate=4,
                                             lora_dropout=0.0, mse_weight=0.0, **kw))
        return m, ClaraStageTask(m, [parse_row(r, "stage2", 1, m.config.n_mem, "rows", i + 1)
                                     for i, r in enumerate(rows)], None, 8)

    assert ClaraTrainConfig().stage2_align == 0.02
    m, t = task(stage2_align=0.0)
    batch = next(iter(t.train_batches(0, 0)))
    assert "q_ids" not in batch
    loss, _, ex = m.stage_loss(batch)
    assert "align" not in ex and abs(float(loss) - float(ex["ce"])) < 1e-6
    assert not task(stage2_align=1.0, stage2_train="generator")[1].align

    m, t = task(stage2_align=1.0)
    batch = next(iter(t.train_batches(0, 0)))
    assert np.array_equal(np.array(batch["positives"]), np.eye(8, dtype=bool))
    loss, _, ex = m.stage_loss(batch)
    assert abs(float(loss) - float(ex["ce"] + ex["align"])) < 1e-4
    assert "compressor" in trained_parts(m, t)

    def align(model, b):
        return model.stage_loss(b)[2]["align"]

    start = float(align(m, batch))
    opt, step = optim.Adam(learning_rate=1e-3), nn.value_and_grad(m, align)
    for _ in range(15):
        _, g = step(m, batch)
        opt.update(m, g)
        mx.eval(m.parameters(), opt.state)
    assert float(align(m, batch)) < 0.5 * start, (start, float(align(m, batch)))

    # rows of k documents with pos_index: the gold ones alone are each question's positives
    # (with every one of a row's documents a positive, its distractors were too: on the
    # lighthouse benchmark the loss sat at ln 8, where vectors all alike put it; round five)
    rows2 = synthetic.stage2_rows(FACTS[:4], 2)
    samples = [parse_row(r, "stage2", 2, m.config.n_mem, "rows", i + 1)
               for i, r in enumerate(rows2)]
    pos = np.array(ClaraStageTask(m, samples, None, 4).make_batch(samples, random.Random(0))
                   ["positives"])
    want = np.zeros((4, 8), dtype=bool)
    for b, r in enumerate(rows2):
        want[b, 2 * b + r["pos_index"][0]] = True
    assert np.array_equal(pos, want), pos


def test_auto_centring_is_decided_from_how_alike_stage1_makes_the_documents(tiny_model_dir,
                                                                              tmp_path):
    """retrieval_center=auto (the default): at stage 2's start the compressor's mean doc-doc
    cosine over the training documents decides (documents of one template, where the plain
    cosine is flat: on; distinct ones: off), without drawing random numbers; the model's config
    and the run's start report keep it, and stage 3 takes it from stage 2's checkpoint."""
    from clara.errors import UserError
    from clara.method import checkpoint
    from clara.method.retrieval import CENTER_THRESHOLD, center_line
    from clara.method.tasks import build_task

    mx.random.seed(0)
    m = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), stage="stage2",
                                         doc_max_tokens=16, compression_rate=4))
    distinct = synthetic.stage2_rows(FACTS[:16], 1)
    alike = [{**r, "docs": ["the " * 12 + f["who"]]} for r, f in zip(distinct, FACTS)]

    def stage2(rows, center="auto"):
        m.config.retrieval_center = center
        mx.random.seed(1)
        t = ClaraStageTask(m, [parse_row(r, "stage2", 1, m.config.n_mem, "rows", i + 1)
                               for i, r in enumerate(rows)], None, 8)
        return t, float(mx.random.uniform())

    t, draw = stage2(alike)
    assert t.center["value"] == m.config.retrieval_center == "on"
    assert t.center["doc_cosine"] >= CENTER_THRESHOLD
    assert t.center["documents"] == len({r["docs"][0] for r in alike})  # distinct ones
    assert t.describe()["retrieval_center"] == t.center
    assert report_lines({"retrieval_center": t.center}) == \
        [f"  retrieval_center: on (auto: doc-doc cosine {t.center['doc_cosine']:.4f} >= "
         f"{CENTER_THRESHOLD})"]
    checkpoint.save(m, tmp_path / "s2")
    t2, draw2 = stage2(distinct)
    assert t2.center["value"] == m.config.retrieval_center == "off"
    assert t2.center["doc_cosine"] < 0.9  # 0.74: the facts' documents differ
    assert draw == draw2 == stage2(alike, "off")[1]  # the run's random stream is untouched
    assert stage2(distinct, "on")[0].center == {"setting": "on", "value": "on"}
    # stage 3 keeps stage 2's decision, not its own measure of its (distinct) documents
    io.write_jsonl(tmp_path / "d3" / "train.jsonl", synthetic.stage3_rows(FACTS[:4], 4))
    t3 = build_task(ClaraTrainConfig(model=str(tiny_model_dir), init_from=str(tmp_path / "s2"),
                                     data=str(tmp_path / "d3"), doc_max_tokens=16,
                                     compression_rate=4, max_len=256, top_k=1), "stage3")
    assert t3.model.config.retrieval_center == "on"
    assert center_line(t3.center) == "on (auto: stage 2's decision, stage 2's checkpoint)"
    assert ClaraConfig(retrieval_center=True).validate().retrieval_center == "on"  # old configs
    with pytest.raises(UserError, match="retrieval_center: 'yes' is not auto, on or off"):
        ClaraTrainConfig(retrieval_center="yes").validate()
