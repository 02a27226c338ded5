"""Memory of training steps: dtypes of trainables and of the activations they touch, the peak of
real engine steps against the pre-flight estimate (clara/train/estimate.py) on the CPU, and the
--estimate flag."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from clara import io
from clara.train.estimate import Shape, Work, estimate
from conftest import corpus_sentences

# large enough that activations and logits, not fixed costs, make the peak
CONFIG = dict(model_type="llama", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=352, vocab_size=4096, rms_norm_eps=1e-5,
              rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A random float32 Llama of CONFIG with the tiny model's tokenizer."""
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model

    out = tmp_path_factory.mktemp("mem") / "model"
    out.mkdir()
    for f in tiny_model_dir.iterdir():
        if "token" in f.name or f.name.endswith(".jinja"):
            shutil.copy(f, out / f.name)
    tiny = json.loads((tiny_model_dir / "config.json").read_text())
    cfg = {**CONFIG, **{k: tiny[k] for k in ("bos_token_id", "eos_token_id") if k in tiny}}
    mx.random.seed(0)
    save_model(out, llama.Model(llama.ModelArgs.from_dict(cfg)))
    save_config(cfg, out / "config.json")
    return out


def words(n: int, i: int) -> str:
    sents = corpus_sentences(400, seed=i)
    return " ".join(sents)[: 8 * n]


def _backend() -> str:
    from clara.platform import backend

    return backend()


# On CUDA MLX allocates a kernel's output when the host queues it and frees it when the device
# is done, so a small step's peak counts the buffers of every kernel queued ahead of the device,
# whatever the backward keeps (H200, session 8: dropout 0.1 against 0 in 4 adapted layers, 35.6
# against 26.5 MB, where the CPU's difference is under 0.5 MB; a held step 193 against 216 MB)
QUEUED_AHEAD = ("CUDA: a small step's peak counts buffers of kernels queued ahead of the device "
                "(allocated when queued), not what the backward pass keeps")

# the estimate's coefficients are fitted per backend; on a GPU bench/clara_throughput.py checks it
cpu_fit = pytest.mark.skipif(_backend() != "cpu", reason="the estimate's CPU fit (on a GPU: "
                             "bench/clara_throughput.py prints peak against estimate)")


def measured_peak(task, cfg, tmp_path) -> int:
    from clara.train.engine import Engine

    mx.clear_cache()
    mx.reset_peak_memory()
    (tmp_path / "run").mkdir()
    Engine(task, cfg, tmp_path / "run").run()
    return mx.get_peak_memory()


@cpu_fit
def test_lora_peak_matches_estimate(model_dir, tmp_path):
    from clara.train.config import TrainConfig
    from clara.train.estimate import estimate_run
    from clara.train.lora import LoraTask

    data = tmp_path / "data"
    io.write_jsonl(data / "train.jsonl", [{"text": words(400, i)} for i in range(8)])
    cfg = TrainConfig(model=str(model_dir), data=str(data), mode="cpt", iters=2, batch_size=4,
                      max_seq_length=257, lora_rank=8, val_every=0, save_every=100,
                      dtype="float32")
    task = LoraTask(cfg, str(model_dir), data)
    assert all(b[0].shape == (4, 257) for b in task._train)  # rows fill max_seq_length
    peak = measured_peak(task, cfg, tmp_path)
    est = estimate_run("lora", cfg, str(model_dir), backend="cpu")
    assert est.parts["activations"] > est.parts["weights"]  # the test measures activations
    assert abs(est.peak_bytes / peak - 1) < 0.15, (est.parts, peak)


@cpu_fit
def test_stage1_peak_matches_estimate_from_its_shapes(model_dir, tmp_path):
    from clara.method.tasks import ClaraTrainConfig, build_task

    data = tmp_path / "s1"
    rows = [{"data_type": "paraphrase", "answers": [words(120, i)], "docs": [words(120, i)]}
            for i in range(8)]
    io.write_jsonl(data / "train.jsonl", rows)
    cfg = ClaraTrainConfig(model=str(model_dir), data=str(data), batch_size=4, iters=2,
                           doc_max_tokens=128, compression_rate=16, lora_rank=8,
                           val_every=0, save_every=100)
    task = build_task(cfg, "stage1")
    b = next(iter(task.train_batches(0, 0)))
    shape = Shape.from_config(CONFIG)
    work = Work(kind="stage1", batch_size=b["dec_ids"].shape[0], enc_rows=b["enc_ids"].shape[0],
                enc_len=b["enc_ids"].shape[1], dec_len=b["dec_ids"].shape[1],
                supervised_len=b["labels"].shape[1], lora_rank=8, adapters_trained=2,
                adapters_held=2, lora_dropout=cfg.lora_dropout, dtype="float32",
                extra_trainable=8 * shape.hidden)
    peak = measured_peak(task, cfg, tmp_path)
    est = estimate(shape, work, backend="cpu")
    assert abs(est.peak_bytes / peak - 1) < 0.15, (est.parts, peak)


def _step_peak(model, loss_fn) -> int:
    mx.clear_cache()
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    mx.eval(nn.value_and_grad(model, loss_fn)(model))
    return mx.get_peak_memory() - base


def test_lora_bfloat16_dtypes_and_no_float32_activation_copies(model_dir):
    """Trainables stay float32 (the optimizer's precision), what they touch stays bfloat16, and
    a step's activations are within a bound computed from the shapes: the float32 copies that
    mlx-lm's LoRALinear keeps of every bfloat16 input would break it."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from clara.method.adapters import CastLoRALinear, cast_lora_layers
    from clara.models.loading import load_model

    def prepared(cast: bool):
        lm = load_model(str(model_dir), dtype="bfloat16").model
        lm.freeze()
        linear_to_lora_layers(lm, -1, {"rank": 8, "scale": 20.0, "dropout": 0.0})
        if cast:
            assert cast_lora_layers(lm) == 2 * 7
        return lm

    lm = prepared(True)
    for name, p in tree_flatten(lm.trainable_parameters()):
        assert p.dtype == mx.float32, name
    layer = lm.model.layers[0].self_attn.q_proj
    assert isinstance(layer, CastLoRALinear)
    x = mx.random.normal((2, 8, CONFIG["hidden_size"])).astype(mx.bfloat16)
    assert layer(x).dtype == mx.bfloat16
    tokens = mx.random.randint(0, CONFIG["vocab_size"], (8, 256))
    grads = nn.value_and_grad(lm, lambda m: m(tokens).astype(mx.float32).mean())(lm)[1]
    assert all(g.dtype == mx.float32 for _, g in tree_flatten(grads))

    def loss(m):
        return nn.losses.cross_entropy(m(tokens[:, :-1]), tokens[:, 1:]).astype(mx.float32).mean()

    ours = _step_peak(lm, loss)
    theirs = _step_peak(prepared(False), loss)
    shape = Shape.from_config(CONFIG)
    bound = estimate(shape, Work(kind="lora", batch_size=8, seq_len=255, lora_rank=8,
                                 dtype="bfloat16"), backend="cpu")
    assert ours < 1.15 * (bound.parts["activations"] + bound.parts["logits"])
    # what float32 copies of each adapted input (q,k,v,o,gate,up: hidden; down: MLP width)
    # would add; mlx-lm's own layer pays most of it
    dims = sum(a for a, _ in shape.proj_dims().values())
    copies = 8 * 255 * shape.layers * dims * 4
    assert theirs - ours > 0.5 * copies, (ours, theirs, copies)


def test_clara_adapters_keep_the_activation_dtype(model_dir):
    from clara.method.config import ClaraConfig
    from clara.method.model import ClaraModel
    from clara.models.loading import load_model

    loaded = load_model(str(model_dir), dtype="bfloat16")
    m = ClaraModel.from_base(ClaraConfig(doc_max_tokens=32, compression_rate=8),
                             lm=loaded.model, tokenizer=loaded.tokenizer)
    for name, p in tree_flatten(m.trainable_parameters()):
        assert p.dtype == mx.float32, name
    b = m.encoder_batch(["the mill by the river", "a tower"])
    m.set_adapter("compressor")
    pair = m._loras[0].adapters["compressor"]
    x = m.embedding(b["enc_ids"])
    assert x.dtype == mx.bfloat16 and pair.delta(x).dtype == mx.bfloat16
    vec, mse = m.compress(b["enc_ids"], b["enc_mask"], b["enc_mem_pos"])
    assert vec.dtype == mx.bfloat16 and mse.dtype == mx.float32


def test_estimate_flag_prints_and_creates_no_run(cli, workspace, model_dir):
    r = cli("-w", "test", "train", "lora", "-m", str(model_dir), "--batch-size", "2",
            "--estimate")
    assert r.exit_code == 0, r.output
    assert "estimated peak" in r.output and "GB" in r.output
    small = float(r.output.split("activations ")[1].split(",")[0])
    assert small > 0, r.output
    r2 = cli("-w", "test", "train", "lora", "-m", str(model_dir), "--batch-size", "64",
             "--estimate")
    # the activations grow with the rows (the peak less so on CUDA, with its fixed buffers)
    assert float(r2.output.split("activations ")[1].split(",")[0]) > 16 * small
    r3 = cli("-w", "test", "train", "stage1", "-m", str(model_dir), "--estimate")
    assert r3.exit_code == 0 and "estimated peak" in r3.output, r3.output
    assert not (workspace.path / "runs").exists() or not any((workspace.path / "runs").iterdir())


def _stage_model(model_dir, stage: str, **kw):
    from clara.method.config import ClaraConfig
    from clara.method.model import ClaraModel
    from clara.models.loading import load_model

    loaded = load_model(str(model_dir), dtype="float32")  # on a GPU too: compared to 1e-3
    mx.random.seed(0)
    m = ClaraModel.from_base(ClaraConfig(base_model=str(model_dir), stage=stage,
                                         doc_max_tokens=64, compression_rate=16,
                                         lora_dropout=0.0, **kw), loaded.model, loaded.tokenizer)
    m.train()
    return m


def _stage1_batch(m, n: int = 4):
    from clara.method import prompts

    docs = [words(64, i) for i in range(n)]
    ex = [m.decoder_example(*prompts.scp_paraphrase(m.config.n_mem, d, __import__("random")
                                                    .Random(i))) for i, d in enumerate(docs)]
    return {**m.encoder_batch(docs), **m.decoder_batch(ex, 1)}


@pytest.mark.parametrize("stage", ["stage1", "stage3"])
def test_chunked_ce_same_loss_and_gradients_less_memory(model_dir, monkeypatch, stage):
    """chunked_ce: the loss and every trainable's gradient (the memory rows through the tied
    head included) equal the whole-logits path's up to float rounding, over several chunks,
    and the step's peak is lower by most of the logits' working copies. At stage 1 the chunked
    side also pads causal attention to a multiple of 128 inside the call (CLARA_ATTN_PAD=128,
    model._padded_sdpa: so that MLX on CUDA runs cuDNN's fused backward), which must change
    neither (the pads are in its graph: q, k and v's, per block and pass)."""
    import io as io_

    from clara.method import losses

    m = _stage_model(model_dir, "stage1")
    batch = _stage1_batch(m)
    if stage == "stage3":  # 2 candidates per question, the query as an encoder row
        m = _stage_model(model_dir, "stage3", top_k=1, stage3_train="query_reasoner,generator,memory")
        docs = [words(64, i) for i in range(4)]
        qs = [words(8, 10 + i) for i in range(2)]
        from clara.method import prompts

        ex = [m.decoder_example(*prompts.rag_qa(m.config.n_mem, 1, q, "the mill"))
              for q in qs]
        batch = {**m.encoder_batch(qs, prefix="q"), **m.encoder_batch(docs, prefix="cand"),
                 **m.decoder_batch(ex, 1), "positives": mx.array([[True, False], [False, True]])}
    V = m.embedding.base_rows
    monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", 40 * V)  # chunks of 40 positions

    def run(chunked: bool):
        m.config.chunked_ce = chunked
        monkeypatch.setenv("CLARA_ATTN_PAD", "128" if chunked and stage == "stage1" else "0")
        buf = io_.StringIO()
        mx.export_to_dot(buf, m.stage_loss(batch)[0])
        pads.append(buf.getvalue().count("Pad"))
        fn = nn.value_and_grad(m, lambda mm, b: mm.stage_loss(b)[0])
        mx.clear_cache()
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        loss, grads = fn(m, batch)
        mx.eval(loss, grads)
        return loss, dict(tree_flatten(grads)), mx.get_peak_memory() - base

    pads = []
    l0, g0, p0 = run(False)
    l1, g1, p1 = run(True)
    if stage == "stage1":
        assert batch["enc_ids"].shape[1] % 128 and batch["dec_ids"].shape[1] % 128
        assert pads[0] == 0 and pads[1] >= 3 * 2 * len(m.lm.model.layers), pads
    assert batch["labels"].shape[0] * batch["labels"].shape[1] > 3 * 40  # several chunks
    assert abs(float(l0) - float(l1)) < 1e-4 * abs(float(l0))
    assert g0.keys() == g1.keys() and "lm.model.embed_tokens.memory" in g0
    for k in g0:  # (CUDA multiplies float32 in TF32: 1e-3, not the CPU's 1e-6)
        scale = float(mx.abs(g0[k]).max()) + 1e-12
        assert float(mx.abs(g0[k] - g1[k]).max()) < 1e-3 * scale, k
    logits = batch["labels"].shape[0] * batch["labels"].shape[1] * V * 4
    assert p0 - p1 > 1.5 * logits, (p0, p1, logits)


@pytest.mark.parametrize("rng", ["threefry", "hash", "kernel"])
def test_lora_dropout_draws_its_mask_again_in_the_backward_pass(rng, monkeypatch):
    """clara.method.adapters.dropped_lora keeps no mask: the backward pass draws the same one
    again from the key, so the gradients equal those of a plain dropout with that mask, and a
    step keeps less than one byte per adapted input element beyond what no dropout keeps. Every
    mask generator: MLX's threefry (the default), the hashed one (CLARA_DROPOUT_RNG=hash), and
    on CUDA the kernel that makes the hashed mask and applies it (CLARA_DROPOUT_RNG=kernel;
    elsewhere that setting is the hash in MLX ops)."""
    from clara.method.adapters import dropped_lora, kernel_dropped_lora, keep_mask
    from clara.platform import backend

    monkeypatch.setenv("CLARA_DROPOUT_RNG", rng)
    if rng == "kernel":
        if backend() != "cuda":
            pytest.skip("the CUDA dropout kernel (off CUDA, 'kernel' is the 'hash' case)")
        dropped_lora = kernel_dropped_lora  # noqa: F811
    mx.random.seed(0)
    x, a, b = (mx.random.normal(s) for s in ((64, 96), (96, 8), (8, 32)))
    key, p = mx.random.key(3), mx.array(0.25)
    keep = keep_mask(key, x.shape, p)
    assert 0.65 < float(keep.astype(mx.float32).mean()) < 0.85
    if rng == "threefry":
        assert mx.array_equal(keep, mx.random.bernoulli(0.75, x.shape, key=key))
    if rng == "kernel":  # the 8-wide kernels of 2-byte dtypes, and their scalar tail (7 x 9)
        from clara.method.adapters import cuda_dropout, hashed_keep

        for shape in (x.shape, (7, 9)):
            xb = mx.random.normal(shape).astype(mx.bfloat16)
            ref = mx.where(hashed_keep(key, shape, p), xb / (1 - p).astype(mx.bfloat16), 0)
            assert mx.array_equal(cuda_dropout(xb, key, p), ref)

    def ours(x, a, b):
        return (dropped_lora(x, key, p, a, b) ** 2).sum()

    def plain(x, a, b):
        return ((mx.where(keep, x / 0.75, 0) @ a @ b) ** 2).sum()

    assert abs(float(ours(x, a, b)) / float(plain(x, a, b)) - 1) < 1e-5
    for g1, g2 in zip(mx.grad(ours, argnums=(0, 1, 2))(x, a, b),
                      mx.grad(plain, argnums=(0, 1, 2))(x, a, b)):
        assert float(mx.abs(g1 - g2).max()) < 1e-3 * float(mx.abs(g2).max())  # TF32 on CUDA

    # folded (adapters.lora_fold): the base matmul with the adapter's output and input gradient
    # added in its epilogue is the same sum, with the same mask, in the forward and the backward
    from clara.method.adapters import folded_lora, kernel_folded_lora

    fold = kernel_folded_lora if rng == "kernel" else folded_lora
    w = mx.random.normal((32, 96)) * 0.1
    x3 = x.reshape(4, 16, 96)

    def folded(x, a, b):
        return (fold(x, w, key, p, a, b) ** 2).sum()

    def unfolded(x, a, b):
        return ((x @ w.T + dropped_lora(x, key, p, a, b)) ** 2).sum()

    assert abs(float(folded(x3, a, b)) / float(unfolded(x3, a, b)) - 1) < 1e-5
    for g1, g2 in zip(mx.grad(folded, argnums=(0, 1, 2))(x3, a, b),
                      mx.grad(unfolded, argnums=(0, 1, 2))(x3, a, b)):
        assert g1.shape == g2.shape
        assert float(mx.abs(g1 - g2).max()) < 1e-3 * float(mx.abs(g2).max())
    if rng != "threefry":
        return  # the peaks below: once is enough

    # each peak in a process of its own: in the suite's worker the allocator's state left by
    # earlier tests moved a peak by more than the bound
    code = """
import sys
import mlx.core as mx
import mlx.nn as nn
from clara.method.adapters import MultiLoRALinear

dropout = float(sys.argv[1])
mx.random.seed(0)
layers = [MultiLoRALinear(nn.Linear(256, 256, bias=False), 8, 2.0, dropout) for _ in range(4)]
for m in layers:
    m.freeze()
    m.add("g")
    m.active = "g"

def f(params, x):
    for m, q in zip(layers, params):
        m.adapters["g"].update(q)
        x = mx.tanh(m(x))
    return x.sum()

params = [m.adapters["g"].parameters() for m in layers]
x = mx.random.normal((1024, 256))
mx.eval(params, x)
mx.clear_cache()
mx.reset_peak_memory()
base = mx.get_active_memory()
mx.eval(mx.grad(f)(params, x))
print(mx.get_peak_memory() - base)
"""

    def peak(dropout: float) -> int:
        out = subprocess.run([sys.executable, "-c", code, str(dropout)], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.split()[-1])

    if _backend() == "cuda":
        pytest.skip(QUEUED_AHEAD)  # (the gradients above are checked on CUDA too)
    with_dropout, without = peak(0.1), peak(0.0)
    # a kept mask would be a byte per element (4 layers x 1024 x 256 inputs); measured 0.54
    # (since the LoRA scale went into B, which lowered both peaks by 2-3 MB), -0.4 before
    assert with_dropout - without < 0.75 * 4 * 1024 * 256, (with_dropout, without)


def test_new_token_rows_are_made_a_chunk_at_a_time_and_not_left_in_the_step():
    """The added tokens' rows start as the mean row of the (quantized) embedding and untied
    head: made a few thousand rows at a time and evaluated at install, so neither a whole
    dequantized or float32 copy of either table (7.4 GB at Llama-3-8B's vocabulary) is ever
    made, nor left lazily in the first training step's graph; the mean is the table's."""
    from clara.method import embeddings as E

    V, H = 20000, 256
    mx.random.seed(0)
    emb = nn.QuantizedEmbedding.from_embedding(nn.Embedding(V, H), group_size=64, bits=4)
    head = nn.QuantizedLinear.from_linear(nn.Linear(H, V, bias=False), group_size=64, bits=4)
    mx.eval(emb.parameters(), head.parameters())
    full = V * H * 4  # one float32 copy of a table
    mx.clear_cache()
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    m = E.MemoryEmbedding(emb, V, n_mem=4)
    r = E.MemoryHead(head, V, 7)
    assert mx.get_peak_memory() - before < 0.5 * full
    for a in (m.memory, m.special, r.rows):  # evaluated now: no graph reaches the tables
        assert a.dtype == mx.float32
    mx.reset_peak_memory()
    mx.eval(m.memory, r.rows)
    assert mx.get_peak_memory() - before < 0.1 * full
    want = mx.mean(E.dense_weight(emb).astype(mx.float32), axis=0)
    assert mx.allclose(m.memory[0], want, atol=1e-5).item()
    assert mx.allclose(r.rows[0], mx.mean(E.dense_weight(head).astype(mx.float32), axis=0),
                       atol=1e-5).item()


def test_mlx_memory_limit_holds_a_step_nearer_to_what_it_keeps(model_dir, tmp_path):
    """CLARA_MLX_MEMORY_LIMIT_GB: MLX allocates a kernel's output when the host queues it and
    frees its inputs when the device is done, so a host running ahead holds buffers the step no
    longer needs; with the limit MLX waits for the device instead. Same loss, lower peak (each
    peak in a process of its own)."""
    import os

    if _backend() == "cuda":
        pytest.skip(QUEUED_AHEAD + "; the limit's effect at scale: bench/clara_throughput.py "
                    "(1.1B stage 1: 21.85 -> 11.86 GB under a 10 GB limit)")

    data = tmp_path / "s1"
    rows = [{"data_type": "paraphrase", "answers": [words(120, i)], "docs": [words(120, i)]}
            for i in range(8)]
    io.write_jsonl(data / "train.jsonl", rows)
    code = """
import json, sys, tempfile
import mlx.core as mx
from clara import io
from clara.method.tasks import ClaraTrainConfig, build_task
from clara.train.engine import Engine

cfg = ClaraTrainConfig(model=sys.argv[1], data=sys.argv[2], batch_size=4, iters=3,
                       doc_max_tokens=128, compression_rate=16, lora_rank=8, val_every=0,
                       save_every=100)
task = build_task(cfg, "stage1")
mx.eval(task.model.parameters())
base = mx.get_active_memory()
mx.clear_cache()
mx.reset_peak_memory()
with tempfile.TemporaryDirectory() as t:
    Engine(task, cfg, t).run()
    loss = [r["train_loss"] for r in io.read_jsonl(t + "/metrics.jsonl") if "train_loss" in r]
print(json.dumps({"over": mx.get_peak_memory() - base, "base": base, "loss": loss}))
"""

    def run(limit_gb=None):
        env = {k: v for k, v in os.environ.items() if k != "CLARA_MLX_MEMORY_LIMIT_GB"}
        if limit_gb is not None:
            env["CLARA_MLX_MEMORY_LIMIT_GB"] = str(limit_gb)
        out = subprocess.run([sys.executable, "-c", code, str(model_dir), str(data)], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    free = run()
    held = run(free["base"] / 1e9)  # every allocation over the weights waits
    assert held["over"] < 0.8 * free["over"], (free, held)
    assert held["loss"] == pytest.approx(free["loss"], rel=1e-5)


def test_engine_gives_mlx_a_memory_limit_under_the_guards(monkeypatch):
    """A lean run: memory_limit_gb holds MLX at MEMORY_HOLD of it (a throttled step passes
    MLX's limit by up to 1.4x, so its peak stays under the guard's); the environment's setting
    wins; on the CPU without memory_limit_gb MLX keeps its own."""
    from clara.train import engine as E
    from clara.train.config import EngineConfig

    monkeypatch.delenv("CLARA_MLX_MEMORY_LIMIT_GB", raising=False)
    assert E.mlx_memory_limit(EngineConfig(memory_limit_gb=10)) == int(E.MEMORY_HOLD * 10e9)
    assert E.MEMORY_HOLD * 1.4 <= 1.0
    if _backend() == "cpu":
        assert E.mlx_memory_limit(EngineConfig()) is None
    monkeypatch.setenv("CLARA_MLX_MEMORY_LIMIT_GB", "3")
    assert E.mlx_memory_limit(EngineConfig(memory_limit_gb=10)) == int(3e9)


def test_checkpointing_switched_on_when_the_estimate_does_not_fit(cli, workspace, model_dir):
    """A run whose estimated peak passes its memory limit, and that gradient checkpointing
    would bring under it, gets checkpointing with a line saying so (--estimate shows the run as
    it would start); a switch given as a flag is left alone; a run that fits is untouched."""
    from clara.train.estimate import estimate_request

    base = {"model": str(model_dir), "batch_size": 64}

    def peak(**kw):
        return estimate_request(workspace, "lora", {**base, **kw}).peak_bytes / 1e9

    # a limit between what the step needs with and without checkpointing (the limit also
    # holds MLX under 70 % of it, which the estimate models)
    limits = [peak() * f / 20 for f in range(1, 21)]
    fit = [g for g in limits if peak(memory_limit_gb=g) > g >= peak(memory_limit_gb=g,
                                                                     grad_checkpoint=True)]
    assert fit, limits
    args = ["-w", "test", "train", "lora", "-m", str(model_dir), "--batch-size", "64",
            "--memory-limit-gb", f"{fit[0]:.6f}", "--estimate"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert "turned on gradient checkpoint" in r.output
    shown = float(r.output.split("estimated peak ")[1].split()[0])
    assert shown == pytest.approx(peak(memory_limit_gb=fit[0], grad_checkpoint=True), abs=0.01)
    r = cli(*args[:-1], "--no-grad-checkpoint", "--estimate")
    assert r.exit_code == 0 and "turned on" not in r.output, r.output
    r = cli(*args[:-3], "--estimate")  # no limit: fits the machine
    assert r.exit_code == 0 and "turned on" not in r.output, r.output
    # the library does it where runs are made, for both faces (the app calls lora_run too), and
    # the run says so in run.toml
    from clara import io
    from clara.train.launch import lora_run

    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(64)]
    io.write_jsonl(workspace.datasets_dir / "chat" / "train.jsonl", rows)
    run = lora_run(workspace, {**base, "data": "chat", "memory_limit_gb": fit[0]})
    assert run.config()["config"]["grad_checkpoint"] is True
    assert "turned on gradient checkpoint" in run.config()["auto_fit"]
    # CLaRa: chunked CE first, then chunked CE and checkpointing
    base = {"model": str(model_dir), "batch_size": 16}
    kind = "stage1"

    def cpeak(**kw):
        return estimate_request(workspace, kind, {**base, **kw}).peak_bytes / 1e9

    both = dict(chunked_ce=True, grad_checkpoint=True)
    fit = [g for g in (cpeak() * f / 20 for f in range(1, 21))
           if cpeak(memory_limit_gb=g) > g >= cpeak(memory_limit_gb=g, **both)]
    assert fit
    r = cli("-w", "test", "train", "stage1", "-m", str(model_dir), "--batch-size", "16",
            "--memory-limit-gb", f"{fit[0]:.6f}", "--estimate")
    assert r.exit_code == 0 and "turned on chunked ce" in r.output, r.output


def test_rows_are_padded_to_few_widths_with_bounded_padding():
    """CLaRa's batch widths (each a new trace of the compiled step): multiples of 16 up to 128,
    then 4 widths per doubling; never under the rows, at most 25 % over them."""
    from clara.method.config import padded_length

    widths = {padded_length(n) for n in range(1, 2049)}
    assert sorted(w for w in widths if w <= 128) == list(range(16, 129, 16))
    assert len([w for w in widths if 256 < w <= 512]) == 4
    for n in range(1, 2049):
        assert n <= padded_length(n) <= max(n + 15, 1.25 * n)
    assert padded_length(275) == padded_length(304) == 320  # 1.1B stage 1: one width


@pytest.mark.parametrize("rng,bound", [("threefry", 18), ("hash", 45)])
def test_dropout_adds_few_graph_ops_per_adapter_call(model_dir, monkeypatch, rng, bound):
    """The host queues every op of a step, and on CUDA it bounds a CLaRa step: LoRA dropout
    draws one key per forward pass and derives each adapter's from it, so it adds few ops per
    adapter call (a draw from the global random state per call was 25 ops by itself). The
    hashed masks (CLARA_DROPOUT_RNG=hash) are more graph ops, all elementwise: mx.compile
    fuses them into the kernel that applies the mask (chains of at most 11, which
    adapters.hashed_keep keeps to)."""
    import io as io_

    monkeypatch.setenv("CLARA_DROPOUT_RNG", rng)

    def ops(m, b) -> int:
        loss = m.stage_loss(b)[0]
        buf = io_.StringIO()
        mx.export_to_dot(buf, loss)
        return buf.getvalue().count("shape=rectangle")

    counts = {}
    for p in (0.0, 0.1):
        m = _stage_model(model_dir, "stage1")
        for lora in m._loras:
            for pair in lora.adapters.values():
                pair.dropout = nn.Dropout(p)
        counts[p] = ops(m, _stage1_batch(m))
    calls = 2 * len(m._loras)  # the encoder's pass and the decoder's
    assert 0 < (counts[0.1] - counts[0.0]) / calls <= bound, counts


def test_hashed_dropout_mask_is_bernoulli_and_fixed_by_its_key():
    """adapters.hashed_keep (CLARA_DROPOUT_RNG=hash): the keep rate is 1 - p, the same key gives
    the same mask, another key (the next adapter call's) an unrelated one, and neighbouring
    elements are not correlated."""
    import numpy as np

    from clara.method.adapters import hashed_keep

    key = mx.array([12345, 678], dtype=mx.uint32)
    m = np.array(hashed_keep(key, (4, 64, 512), mx.array(0.1))).ravel().astype(float)
    assert abs(m.mean() - 0.9) < 4 * (0.09 / m.size) ** 0.5
    assert np.array_equal(m, np.array(hashed_keep(key, (4, 64, 512), mx.array(0.1))).ravel())
    other = np.array(hashed_keep(key + mx.array([0, 1], dtype=mx.uint32), (4, 64, 512),
                                 mx.array(0.1))).ravel().astype(float)
    bound = 4 / m.size ** 0.5
    assert abs(np.corrcoef(m, other)[0, 1]) < bound
    assert abs(np.corrcoef(m[:-1], m[1:])[0, 1]) < bound
    assert abs(np.corrcoef(m[:-512], m[512:])[0, 1]) < bound
    quarter = np.array(hashed_keep(key, (256, 512), mx.array(0.25))).mean()
    assert abs(quarter - 0.75) < 4 * (0.1875 / (256 * 512)) ** 0.5


def test_fused_swiglu_has_autodiffs_values_and_gradients():
    """model.fused_swiglu (CLARA_SWIGLU=fused): mlx-lm's silu(gate) * x with a hand-written
    backward gives the same value and, in float32, the same gradients as autodiff's."""
    from clara.method.model import fused_swiglu

    mx.random.seed(0)
    g, x, c = (mx.random.normal((4, 33, 64)) for _ in range(3))

    def ref(g, x):
        return ((nn.silu(g) * x) * c).sum()

    def new(g, x):
        return (fused_swiglu(g, x) * c).sum()

    assert float(ref(g, x)) == float(new(g, x))
    for a, b in zip(mx.grad(ref, argnums=(0, 1))(g, x), mx.grad(new, argnums=(0, 1))(g, x)):
        assert float(mx.abs(a - b).max()) < 1e-6 * float(mx.abs(a).max())
