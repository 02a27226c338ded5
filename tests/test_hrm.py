"""HRM: model shapes and masks, the one-step gradient, stablemax, ACT halting and Q targets,
sign-SGD, puzzle generators, checkpoints and exact resume (clara/hrm)."""

from __future__ import annotations

import json
import random

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from clara.errors import UserError, DataError
from clara.hrm import data as D
from clara.hrm import puzzles as P
from clara.hrm.config import HRMConfig, HRMTrainConfig
from clara.hrm.model import (HRM, IGNORE, act_loss, act_step, new_carry, run_episode,
                             stablemax_cross_entropy)
from clara.hrm.task import HRMTask, load_model, save_model, sign_sgd_rows
from clara.train.engine import Engine
from clara.workspace import Workspace


def tiny(**kw) -> HRMConfig:
    base = dict(vocab_size=6, seq_len=16, hidden_size=32, num_heads=2, H_layers=1, L_layers=1,
                H_cycles=2, L_cycles=2, halt_max_steps=3, halt_exploration_prob=0.0)
    base.update(kw)
    return HRMConfig(**base)


def batch_of(c: HRMConfig, B: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"inputs": mx.array(rng.integers(1, c.vocab_size, (B, c.seq_len)).astype(np.int32)),
            "labels": mx.array(rng.integers(2, c.vocab_size, (B, c.seq_len)).astype(np.int32)),
            "puzzle_ids": mx.array(rng.integers(0, c.num_puzzle_ids, B).astype(np.int32))}


# ---------------------------------------------------------------------------- model
@pytest.mark.parametrize("kw", [{}, {"puzzle_emb_len": 2, "num_puzzle_ids": 5},
                                {"pos_encodings": "learned"}, {"variant": "trm"}])
def test_shapes(kw):
    mx.random.seed(0)
    c = tiny(**kw)
    net = HRM(c)
    b = batch_of(c)
    carry = new_carry(net, b)
    new, logits, qh, qc, target = act_step(net, carry, b, training=True)
    assert logits.shape == (3, 16, 6)  # puzzle-embedding positions are not predicted
    assert new["z_H"].shape == (3, 16 + c.puzzle_emb_len, 32)
    assert qh.shape == qc.shape == (3,)
    assert (target is None) == (c.variant == "trm")
    assert new["steps"].tolist() == [1, 1, 1]
    # halted sequences took the batch's puzzles
    assert np.array_equal(np.array(new["inputs"]), np.array(b["inputs"]))


def test_attention_is_not_causal():
    """Changing the last cell changes the prediction at the first one."""
    mx.random.seed(1)
    c = tiny(H_cycles=1, L_cycles=1)
    net = HRM(c)
    b = batch_of(c, B=1)
    x2 = np.array(b["inputs"])
    x2[0, -1] = 1 if x2[0, -1] != 1 else 2
    l1 = run_episode(net, b, 1)[0]
    l2 = run_episode(net, {**b, "inputs": mx.array(x2)}, 1)[0]
    assert not np.allclose(np.array(l1[0, 0]), np.array(l2[0, 0]))


def test_ignored_labels_do_not_count():
    mx.random.seed(0)
    logits = mx.random.normal((2, 5, 6))
    labels = mx.array([[2, 3, IGNORE, 4, IGNORE], [5, IGNORE, 2, 2, 3]])
    ce = stablemax_cross_entropy(logits, labels)
    assert np.array(ce)[0, 2] == 0 and np.array(ce)[1, 1] == 0
    other = np.array(logits)
    other[0, 2] += 7.0  # an ignored position's logits must not move the loss
    ce2 = stablemax_cross_entropy(mx.array(other), labels)
    assert np.allclose(np.array(ce), np.array(ce2))


def test_stablemax_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (4, 7, 9)).astype(np.float32)
    y = rng.integers(0, 9, (4, 7))
    s = np.where(x < 0, 1 / (1 - x.astype(np.float64)), x.astype(np.float64) + 1)
    ref = -np.log(np.take_along_axis(s / s.sum(-1, keepdims=True), y[..., None], -1)[..., 0])
    got = np.array(stablemax_cross_entropy(mx.array(x), mx.array(y.astype(np.int32))))
    assert np.allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_stablemax_gradient_is_finite_at_one():
    """Logits of exactly 1.0 (frequent in bfloat16) once gave NaN gradients through mx.where."""
    logits = mx.array([[[1.0, -1.0, 0.0, 2.0]]])
    labels = mx.array([[3]])
    g = mx.grad(lambda x: stablemax_cross_entropy(x, labels).sum())(logits)
    assert np.isfinite(np.array(g)).all()


def test_bfloat16_training_stays_finite(sudoku4, tmp_path):
    cfg = _cfg(sudoku4, dtype="bfloat16", iters=3, val_every=0, save_every=10)
    (tmp_path / "r").mkdir()
    r = Engine(HRMTask(cfg, sudoku4), cfg, tmp_path / "r").run()
    assert r.status == "completed", r.message


def test_only_the_last_update_carries_gradient():
    """The gradient w.r.t. the incoming carry is zero, and the parameters' gradient equals the
    one of the last L and H update alone applied to the (constant) earlier states."""
    mx.random.seed(2)
    c = tiny()
    net = HRM(c)
    b = batch_of(c, B=2)
    x = net.input_embeddings(b["inputs"], b["puzzle_ids"])
    z_H0, z_L0 = net.initial_carry(2)
    z_H0 = z_H0 + mx.random.normal(z_H0.shape)
    z_L0 = z_L0 + mx.random.normal(z_L0.shape)
    x = mx.stop_gradient(x)

    def out(zh, zl):
        return net.segment(zh, zl, x)[1].astype(mx.float32).square().mean()

    gh, gl = mx.grad(out, argnums=(0, 1))(z_H0, z_L0)
    assert float(mx.abs(gh).max()) == 0.0 and float(mx.abs(gl).max()) == 0.0

    # the early updates, by hand, as constants
    zh, zl = z_H0, z_L0
    for h in range(c.H_cycles):
        for l_ in range(c.L_cycles):
            if not (h == c.H_cycles - 1 and l_ == c.L_cycles - 1):
                zl = net.L_level(zl, zh + x)
        if h != c.H_cycles - 1:
            zh = net.H_level(zh, zl)
    zh, zl = mx.array(np.array(zh)), mx.array(np.array(zl))

    def one_step(m):
        l2 = m.L_level(zl, zh + x)
        return m.lm_head(m.H_level(zh, l2)).astype(mx.float32).square().mean()

    g_full = dict(tree_flatten(nn.value_and_grad(net, lambda m: out(z_H0, z_L0))(net)[1]))
    g_one = dict(tree_flatten(nn.value_and_grad(net, one_step)(net)[1]))
    for k in g_full:
        if k.startswith(("q_head", "embed")):
            continue
        assert np.allclose(np.array(g_full[k]), np.array(g_one[k]), atol=1e-6), k
    assert float(mx.abs(g_full["L_level.layers.0.mlp.down.weight"]).max()) > 0


def _with_q_bias(net: HRM, halt: float, cont: float) -> None:
    net.q_head.bias = mx.array([halt, cont])


def test_act_halting_and_q_targets():
    mx.random.seed(3)
    c = tiny(halt_max_steps=3)
    net = HRM(c)
    b = batch_of(c, B=4)
    # halt beats continue: every sequence halts after its first segment
    _with_q_bias(net, 2.0, -1.0)
    new, _, qh, qc, target = act_step(net, new_carry(net, b), b, training=True)
    assert new["halted"].tolist() == [True] * 4
    assert np.allclose(np.array(target), 1 / (1 + np.exp(-2.0)), atol=1e-5)  # max(next q)
    # continue beats halt: no halting until the last step, whose target is the next q_halt
    _with_q_bias(net, -1.0, 0.5)
    carry = new_carry(net, b)
    halted_at = []
    for step in range(1, 4):
        carry, _, _, _, target = act_step(net, carry, b, training=True)
        halted_at.append(bool(carry["halted"].all()))
        want = 0.5 if step < 3 else -1.0
        assert np.allclose(np.array(target), 1 / (1 + np.exp(-want)), atol=1e-5)
    assert halted_at == [False, False, True]
    assert carry["steps"].tolist() == [3] * 4
    # the next step starts over: halted sequences reset to step 1 with new puzzles
    b2 = batch_of(c, B=4, seed=9)
    carry, *_ = act_step(net, carry, b2, training=True)
    assert carry["steps"].tolist() == [1] * 4
    assert np.array_equal(np.array(carry["inputs"]), np.array(b2["inputs"]))
    # exploration with probability 1: a minimum of >= 2 segments, so nobody halts at step 1
    net.config.halt_exploration_prob = 1.0
    _with_q_bias(net, 2.0, -1.0)
    new, *_ = act_step(net, new_carry(net, b), b, training=True)
    assert not any(new["halted"].tolist())
    # evaluation never halts early
    net.config.halt_exploration_prob = 0.0
    new, *_ = act_step(net, new_carry(net, b), b, training=False)
    assert not any(new["halted"].tolist())


def test_act_loss_on_hand_made_logits():
    labels = mx.array([[2, 3], [4, IGNORE]])
    logits = mx.zeros((2, 2, 6))
    logits = logits.at[0, 0, 2].add(5.0).at[0, 1, 3].add(5.0)  # sequence 0 right
    logits = logits.at[1, 0, 5].add(5.0)  # sequence 1 wrong
    qh = mx.array([3.0, -3.0])  # both q_halt predictions right
    qc = mx.array([0.0, 0.0])
    target = mx.array([0.5, 0.5])
    loss, sums, count = act_loss(logits, labels, qh, qc, target, mx.array([True, True]),
                                 mx.array([2, 5]))
    assert count.item() == 2
    assert sums["exact_accuracy"].item() == 1
    assert sums["token_accuracy"].item() == pytest.approx(1.0)
    assert sums["q_halt_accuracy"].item() == 2
    assert sums["steps"].item() == 7
    bce = lambda x, t: max(x, 0) - x * t + np.log1p(np.exp(-abs(x)))  # noqa: E731
    want_q = bce(3.0, 1) + bce(-3.0, 0)
    assert sums["q_halt_loss"].item() == pytest.approx(want_q, rel=1e-5)
    assert sums["q_continue_loss"].item() == pytest.approx(2 * bce(0.0, 0.5), rel=1e-5)
    assert loss.item() == pytest.approx(sums["lm_loss"].item() + 0.5 * (
        want_q + 2 * bce(0.0, 0.5)), rel=1e-5)
    # a sequence that did not halt is left out of the metrics
    _, sums, count = act_loss(logits, labels, qh, qc, target, mx.array([False, True]),
                              mx.array([2, 5]))
    assert count.item() == 1 and sums["exact_accuracy"].item() == 0


def test_sign_sgd_touches_only_batch_rows():
    table = mx.array(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    grad = mx.array(np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32))
    new = sign_sgd_rows(table, grad, mx.array([1, 4, 4]), 0.1, 0.5)
    t, g, n = np.array(table), np.array(grad), np.array(new)
    for r in range(6):
        if r in (1, 4):
            assert np.allclose(n[r], t[r] * (1 - 0.05) - 0.1 * np.sign(g[r]))
        else:
            assert np.array_equal(n[r], t[r])


# ---------------------------------------------------------------------------- puzzles
@pytest.mark.parametrize("n", [4, 6])
def test_sudoku_generator_deterministic_and_unique(n):
    a = P.generate_sudoku(n, 8, seed=5)
    b = P.generate_sudoku(n, 8, seed=5)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["inputs"], P.generate_sudoku(n, 8, seed=6)["inputs"])
    for x, y in zip(a["inputs"], a["labels"]):
        cells = [int(v) - 1 for v in x]
        count, sol, _ = P.solve(cells, n, limit=5)
        assert count == 1 and [v + 1 for v in sol] == y.tolist()
        given = x > 1
        assert np.array_equal(x[given], y[given])


def test_solver_finds_two_solutions_when_there_are():
    # an empty 4x4 grid has 288 solutions; one with a single given still many
    assert P.solve([0] * 16, 4, limit=2)[0] == 2
    assert P.solve([1, 1] + [0] * 14, 4, limit=2)[0] == 0  # conflicting givens


def test_sudoku_augmentation_keeps_valid_grids():
    from clara.hrm.infer import is_valid_sudoku

    for n in (4, 6, 9):
        base = P.generate_sudoku(n, 2, seed=1) if n != 9 else P.generate_sudoku(n, 1, seed=1,
                                                                                  givens=40)
        aug = P.augment_sudoku(base, n, 3, seed=2)
        assert len(aug["inputs"]) == 4 * len(base["inputs"])
        for x, y in zip(aug["inputs"], aug["labels"]):
            assert is_valid_sudoku([int(v) - 1 for v in y], n)
            assert P.solve([int(v) - 1 for v in x], n, limit=2)[0] == 1
            assert np.array_equal(x[x > 1], y[x > 1])
        assert np.array_equal(aug["group"][len(base["group"]):], np.tile(base["group"], 3))


def test_maze_generator_marks_the_shortest_path():
    m = P.generate_maze(11, 6, seed=3, min_path=8)
    assert np.array_equal(m["inputs"], P.generate_maze(11, 6, seed=3, min_path=8)["inputs"])
    for x, y, length in zip(m["inputs"], m["labels"], m["difficulty"]):
        g = x.reshape(11, 11)
        lab = y.reshape(11, 11)
        open_ = g != 1
        s = tuple(np.argwhere(g == 3)[0])
        dist, ways = P._bfs(open_, s)
        goal = tuple(np.argwhere(g == 4)[0])
        assert dist[goal] == length >= 8 and ways[goal] == 1
        assert (lab == 5).sum() == length - 1  # path cells between S and G
    aug = P.augment_maze(m, 11, 2, seed=0)
    for x, y in zip(aug["inputs"], aug["labels"]):
        assert (x == 3).sum() == 1 and (y == 5).sum() == (y == 5).sum()
        assert np.array_equal(x[x != 2], y[x != 2])  # walls, S and G stay; only blanks change


def test_dataset_round_trip_and_errors(tmp_path):
    ws = Workspace(tmp_path, "w")
    ws.create()
    splits, meta = D.sudoku_dataset(4, 5, 3, 2, seed=0)
    folder = D.write_dataset(ws, "s4", splits, meta)
    assert D.validate(folder)["rows"] == {"train": 15, "test": 3}
    back = D.read_split(folder, "train")
    assert np.array_equal(back["inputs"], splits["train"]["inputs"])
    with pytest.raises(UserError, match="already exists"):
        D.write_dataset(ws, "s4", splits, meta)
    (folder / "test.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="test.safetensors: not a safetensors file"):
        D.validate(folder)


def test_arc_and_reference_loaders(tmp_path):
    task = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
            "test": [{"input": [[0]], "output": [[9]]}]}
    (tmp_path / "a.json").write_text(json.dumps(task))
    splits, meta = D.load_arc(tmp_path)
    x = splits["train"]["inputs"][0].reshape(30, 30)
    assert x[0, :2].tolist() == [3, 4] and x[2, 0] == 1 and x[0, 2] == 1
    assert meta["num_puzzle_ids"] == 2 and splits["test"]["puzzle_ids"].tolist() == [1]
    (tmp_path / "b.json").write_text(json.dumps({"train": [{"input": [[1, 2], [3]], "output": [[1]]}]}))
    with pytest.raises(DataError, match="b.json: train\\[0\\].input"):
        D.load_arc(tmp_path)
    ref = tmp_path / "ref"
    for split, n in (("train", 4), ("test", 2)):
        d = ref / split
        d.mkdir(parents=True)
        (d / "dataset.json").write_text(json.dumps({
            "seq_len": 16, "vocab_size": 6, "num_puzzle_identifiers": 1, "sets": ["all"],
            "pad_id": 0, "ignore_label_id": 0}))
        np.save(d / "all__inputs.npy", np.ones((n, 16), np.int32))
        np.save(d / "all__labels.npy", np.full((n, 16), 2, np.int32))
        np.save(d / "all__puzzle_identifiers.npy", np.zeros(n // 2, np.int32))
        np.save(d / "all__puzzle_indices.npy", np.arange(0, n + 1, 2, dtype=np.int32))
    splits, meta = D.load_reference(ref)
    assert splits["train"]["group"].tolist() == [0, 0, 1, 1] and meta["seq_len"] == 16


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_bit_identical(tmp_path):
    mx.random.seed(4)
    net = HRM(tiny(puzzle_emb_len=1, num_puzzle_ids=3))
    save_model(net, tmp_path / "ck")
    back, _ = load_model(tmp_path / "ck")
    a, b = dict(tree_flatten(net.parameters())), dict(tree_flatten(back.parameters()))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(np.array(a[k]), np.array(b[k])), k
    batch = batch_of(net.config, B=2)
    assert np.array_equal(np.array(run_episode(net, batch)[0]),
                          np.array(run_episode(back, batch)[0]))


@pytest.fixture(scope="module")
def sudoku4(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("hrm"), "w")
    ws.create()
    splits, meta = D.sudoku_dataset(4, 40, 16, 3, seed=0)
    return D.write_dataset(ws, "s4", splits, meta)


def _cfg(data, **kw) -> HRMTrainConfig:
    base = dict(data=str(data), batch_size=16, hidden_size=32, num_heads=2, H_layers=1,
                L_layers=1, H_cycles=1, L_cycles=2, halt_max_steps=3, iters=6, save_every=3,
                val_every=6,
                learning_rate=1e-3, warmup_steps=2, val_puzzles=16)
    base.update(kw)
    return HRMTrainConfig(**base)


def test_resume_equals_uninterrupted_run(tmp_path, sudoku4):
    cfg = _cfg(sudoku4)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    ta = HRMTask(cfg, sudoku4)
    Engine(ta, cfg, a_dir).run()
    tb = HRMTask(cfg, sudoku4)
    calls = {"n": 0}

    def stop_after_3():
        calls["n"] += 1
        return calls["n"] > 3
    r = Engine(tb, cfg, b_dir).run(stop_requested=stop_after_3)
    assert r.status == "stopped" and r.step == 3
    tb2 = HRMTask(cfg, sudoku4)  # a fresh process would build the task again
    r2 = Engine(tb2, cfg, b_dir).run()
    assert r2.status == "completed" and r2.step == 6
    pa, pb = dict(tree_flatten(ta.net.parameters())), dict(tree_flatten(tb2.net.parameters()))
    for k in pa:
        assert np.array_equal(np.array(pa[k]), np.array(pb[k])), k
    la = [r["train_loss"] for r in map(json.loads, open(a_dir / "metrics.jsonl")) if "train_loss" in r]
    lb = [r["train_loss"] for r in map(json.loads, open(b_dir / "metrics.jsonl")) if "train_loss" in r]
    assert la == lb and len(la) == 6
    # best/ follows exact accuracy and holds a loadable model
    best = json.loads((a_dir / "adapters" / "best" / "best.json").read_text())
    assert 0.0 <= best["val_loss"] <= 1.0
    load_model(a_dir / "adapters" / "best")


def test_puzzle_embeddings_train_with_sign_sgd(tmp_path):
    """With several puzzle ids, only the rows of puzzles seen in training move."""
    ws = Workspace(tmp_path, "w")
    ws.create()
    splits, meta = D.sudoku_dataset(4, 16, 4, 0, seed=1)
    splits["train"]["puzzle_ids"] = np.where(np.arange(16) < 8, 1, 2).astype(np.int32)
    meta["num_puzzle_ids"] = 4
    folder = D.write_dataset(ws, "ids", splits, meta)
    cfg = _cfg(folder, iters=2, batch_size=16, val_every=0, save_every=10, puzzle_emb_lr=1e-2)
    task = HRMTask(cfg, folder)
    assert task.net.config.puzzle_emb_len == 1
    (tmp_path / "run").mkdir()
    Engine(task, cfg, tmp_path / "run").run()
    table = np.array(task.net.puzzle_emb)
    assert np.all(table[0] == 0) and np.all(table[3] == 0)
    assert np.abs(table[1]).max() > 0 and np.abs(table[2]).max() > 0


def test_bad_config_is_one_line(sudoku4):
    with pytest.raises(UserError, match="num_heads: must divide hidden_size"):
        _cfg(sudoku4, hidden_size=30, num_heads=4).model_config(D.validate(sudoku4))
    with pytest.raises(UserError, match="batch_size"):
        HRMTask(_cfg(sudoku4, batch_size=10_000), sudoku4)


@pytest.mark.slow
def test_tiny_model_learns_4x4_sudoku(tmp_path):
    """HRM (hidden 64, one block per level) reaches >= 90 % exact on unseen 4x4 puzzles."""
    from clara.hrm.demo import SETTINGS
    from clara.hrm.infer import evaluate

    ws = Workspace(tmp_path, "w")
    ws.create()
    splits, meta = D.sudoku_dataset(4, 200, 100, 10, seed=0, givens=12)
    folder = D.write_dataset(ws, "s4", splits, meta)
    cfg = HRMTrainConfig(**{**SETTINGS, "data": str(folder), "iters": 600, "val_every": 100,
                            "save_every": 1000})
    task = HRMTask(cfg, folder)
    (tmp_path / "run").mkdir()
    Engine(task, cfg, tmp_path / "run").run()
    net, _ = load_model(tmp_path / "run" / "adapters" / "best")
    res = evaluate(net, splits["test"])
    assert res["exact_accuracy"] >= 0.9, res
    seen = {tuple(x) for x in splits["train"]["inputs"].tolist()}
    assert not any(tuple(x) in seen for x in splits["test"]["inputs"].tolist())


def test_early_stopping_follows_exact_accuracy(tmp_path, sudoku4):
    """best/ keeps the highest validation exact accuracy; no rise for `patience` validations
    stops the run (a 2-step-old tiny model stays at 0 exact)."""
    cfg = _cfg(sudoku4, iters=20, val_every=1, save_every=100, early_stopping_patience=2,
               learning_rate=1e-6, warmup_steps=0)
    (tmp_path / "r").mkdir()
    r = Engine(HRMTask(cfg, sudoku4), cfg, tmp_path / "r").run()
    assert r.reason == "early_stop" and r.step == 3 and r.best_step == 1
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert [x["val_exact_accuracy"] for x in rows if "val_loss" in x] == [0.0, 0.0, 0.0]
