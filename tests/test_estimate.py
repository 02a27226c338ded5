"""The pre-flight estimate (clara/train/estimate.py) against the peaks measured on the H200: the
formula's numbers for the shapes of its module doc's table, its coefficients refitted from that
table, and each point predicted by a fit that did not see it. Arithmetic only (no model, no
step): the CPU's estimate is checked against real steps in test_memory.py."""

from __future__ import annotations


import numpy as np
import pytest

from clara.train import estimate as E

GB = 1e9
MODELS = {  # bench/clara_throughput.py's presets, as the config.json it writes
    "1.1B": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=4, intermediate_size=5632, vocab_size=32000,
                 tie_word_embeddings=True),
    "8B-q4": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                  tie_word_embeddings=False, quantization={"group_size": 64, "bits": 4}),
}
PRESET = dict(doc=256, cr=16, seq=512, rank=16, dtype="bfloat16")


def sh(B, enc, dec):
    return {"enc_ids": [B, enc], "dec_ids": [B, dec], "labels": [B, dec]}


# (model, bench kind, batch shapes, measured peak GB): the module doc's table
UNLIMITED = [
    ("1.1B", "stage1", sh(8, 288, 448), 21.85),
    ("1.1B", "stage1+chunk", sh(8, 288, 448), 22.03),
    ("1.1B", "stage1+chunk+ckpt", sh(8, 288, 448), 17.84),
    ("1.1B", "stage1", sh(8, 320, 448), 21.98),
    ("1.1B", "stage1", sh(16, 320, 448), 31.50),
    ("1.1B", "stage1", sh(32, 320, 448), 51.39),
    ("1.1B", "stage1+drop0", sh(8, 320, 448), 20.47),
    ("1.1B", "lora", {"tokens": [8, 513]}, 10.65),
    ("1.1B", "lora", {"tokens": [16, 513]}, 23.20),
    ("1.1B", "lora", {"tokens": [32, 513]}, 35.28),
    ("8B-q4", "stage1+chunk", sh(1, 288, 432), 15.21),
    ("8B-q4", "stage1+chunk+ckpt", sh(1, 288, 432), 11.16),
]
HELD = [  # under MLX's memory limit (+limX: X GB)
    ("1.1B", "stage1+lim10", sh(8, 288, 448), 11.86),
    ("1.1B", "stage1+chunk+ckpt+lim6", sh(8, 288, 448), 8.44),
    ("1.1B", "lora+lim10", {"tokens": [8, 513]}, 9.89),
    ("1.1B", "stage1+chunk+ckpt+lim8", sh(8, 288, 448), 8.43),
    ("1.1B", "stage1+chunk+lim8", sh(8, 288, 448), 12.13),
    ("1.1B", "stage1+ckpt+lim8", sh(8, 288, 448), 8.43),
    ("1.1B", "stage1+chunk+ckpt+lim8", sh(8, 320, 448), 8.58),
    ("1.1B", "stage1+chunk+lim8", sh(8, 320, 448), 12.79),
    ("1.1B", "stage1+ckpt+lim10", sh(8, 320, 448), 10.43),
    ("8B-q4", "stage1+chunk+ckpt+lim8", sh(1, 288, 432), 8.82),
]
# outside 15 %, and why, in the module doc: LoRA at batch 8 (host-bound: no step queued ahead)
OUTSIDE = {("1.1B", "lora", 8)}


def rows_of(shapes) -> int:
    return (shapes.get("dec_ids") or shapes["tokens"])[0]


def work(model: str, kind: str, shapes: dict) -> tuple[E.Shape, E.Work]:
    """What estimate_for_bench estimates for the bench's row (without its MLX limit)."""
    s = dict(PRESET, batch_size=rows_of(shapes))
    k = "+".join(o for o in kind.split("+") if not o.startswith(("drop", "lim")))
    return E.bench_work(MODELS[model], s, k, shapes, dropout=0.0 if "drop0" in kind else 0.1)


def bench_estimate(model: str, kind: str, shapes: dict) -> float:
    cfg = MODELS[model]
    s = dict(PRESET, batch_size=rows_of(shapes))
    kind = "+".join(o for o in kind.split("+") if not o.startswith("drop"))
    return E.estimate_for_bench(cfg, s, kind, shapes, backend="cuda") / GB


def geometry(shapes) -> str:
    return (f"{shapes['enc_ids'][1]}/{shapes['dec_ids'][1]}" if "enc_ids" in shapes
            else str(shapes["tokens"][1]))


def test_the_h200_table_is_the_module_docs():
    """Every point here is a row of the module doc's table, with its measured peak and the
    estimate the formula gives now."""
    lines = {tuple(x.split()[:4]): x for x in E.__doc__.splitlines() if len(x.split()) > 6}
    for model, kind, shapes, meas in UNLIMITED + HELD:
        line = lines.get((model, kind, f"b{rows_of(shapes)}", geometry(shapes)))
        assert line is not None, (model, kind, shapes)
        got = line.split()[4:7]  # measured, old est, new est
        assert got[0] == f"{meas:.2f}" and got[2] == f"{bench_estimate(model, kind, shapes):.2f}", \
            (line, bench_estimate(model, kind, shapes))


@pytest.mark.parametrize("point", UNLIMITED + HELD, ids=lambda p: f"{p[0]} {p[1]} b{rows_of(p[2])}")
def test_estimate_within_15_percent_of_the_h200_peak(point):
    model, kind, shapes, meas = point
    err = bench_estimate(model, kind, shapes) / meas - 1
    if (model, kind, rows_of(shapes)) in OUTSIDE:
        assert err >= 0.15, f"{point} is within 15 % now: take it off OUTSIDE and the doc"
        assert err < 0.45, err  # over the measured peak: the safe side
    else:
        assert abs(err) < 0.15, (point, err)


def features(model: str, kind: str, shapes: dict) -> tuple[float, np.ndarray]:
    """(the peak less what is not fitted, the terms the CUDA constants multiply) in GB."""
    shape, w = work(model, kind, shapes)
    e = E.estimate(shape, w, "cuda")
    t = E.cuda_terms(shape, w)
    known = e.parts["weights"] + e.parts["trainables"] + e.parts["logits"]
    return known / GB, np.array([t["kept"], t["dropped"], t["weights"], GB]) / GB


def fit(points) -> np.ndarray:
    X, y = [], []
    for model, kind, shapes, meas in points:
        known, f = features(model, kind, shapes)
        X.append(f)
        y.append(meas - known)
    return np.linalg.lstsq(np.array(X), np.array(y), rcond=None)[0]


def test_cuda_constants_are_the_fit_and_hold_out_of_it():
    """The module's CUDA constants are the least-squares fit to the unlimited H200 points, and
    each point, predicted by the fit to the others, stays within 20 % (the outside ones
    excepted): the constants are not a curve through the points."""
    coef = fit(UNLIMITED)
    want = [E.CUDA_KEPT, E.CUDA_RECOMPUTE, E.CUDA_PASS_WEIGHTS, E.CUDA_FIXED / GB]
    assert np.allclose(coef, want, rtol=0.03, atol=0.02), (coef, want)
    held_out = {}
    for i, (model, kind, shapes, meas) in enumerate(UNLIMITED):
        c = fit(UNLIMITED[:i] + UNLIMITED[i + 1:])
        known, f = features(model, kind, shapes)
        held_out[f"{model} {kind} b{rows_of(shapes)}"] = (known + f @ c) / meas - 1
        if (model, kind, rows_of(shapes)) not in OUTSIDE:
            assert abs(held_out[f"{model} {kind} b{rows_of(shapes)}"]) < 0.20, held_out


def test_checkpointing_and_batch_move_the_cuda_estimate_the_measured_way():
    """The measured H200 peaks grow ~1.2 GB a row over a fixed part, and checkpointing saves
    a part of the kept activations, not all of them: the formula's do too."""
    b = [bench_estimate("1.1B", "stage1", sh(n, 320, 448)) for n in (8, 16, 32)]
    assert 0.9 < (b[2] - b[0]) / 24 < 1.4 and b[0] - 8 * (b[2] - b[0]) / 24 > 8
    plain, ckpt = (bench_estimate("1.1B", k, sh(8, 288, 448))
                   for k in ("stage1+chunk", "stage1+chunk+ckpt"))
    assert 0.6 * plain < ckpt < 0.95 * plain


def test_every_h200_peak_lies_between_the_host_bound_and_the_queued_estimates():
    """The estimate's low end (E.Estimate.low_bytes: a host-bound step, nothing queued ahead of
    the device, so no per-pass step buffers) and its peak bound every measured H200 peak within
    15 %; LoRA at batch 8, the host-bound step the peak cannot know of, is within 15 % of the
    low end (+37 % over the peak). The Train form's line (form_line) shows the low end too,
    where there is one."""
    for model, kind, shapes, meas in UNLIMITED + HELD:
        shape, w = work(model, kind, shapes)
        lim = [o for o in kind.split("+") if o.startswith("lim")]
        w.mlx_limit_bytes = int(float(lim[0][3:]) * GB) if lim else 0
        e = E.estimate(shape, w, "cuda")
        low, high = e.low_bytes / GB, e.peak_bytes / GB
        assert low <= high and 0.85 * low <= meas <= 1.15 * high, (model, kind, low, meas, high)
        if (model, kind, rows_of(shapes)) in OUTSIDE:
            assert abs(meas / low - 1) < 0.15, (model, kind, low, meas)
            assert "if the host, not the device, bounds the step" in e.line()
            # the Train form's line shows both ends
            assert f"peak {high:.1f} GB ({low:.1f} GB if the host bounds" in e.form_line()
    shape, w = work("1.1B", "stage1+chunk+ckpt", sh(8, 288, 448))
    cpu = E.estimate(shape, w, "cpu")
    assert cpu.low_bytes == cpu.peak_bytes and "host" not in cpu.form_line()
