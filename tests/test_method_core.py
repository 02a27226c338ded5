"""CLaRa method core on a tiny real Llama: tokens, float memory rows, multi-adapter LoRA,
compression layout and padding, injection, losses and the straight-through top-k."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest

from clara.errors import UserError
from clara.method import prompts
from clara.method.adapters import MultiLoRALinear
from clara.method.config import ClaraConfig
from clara.method.embeddings import MemoryEmbedding
from clara.method.losses import (contrastive_retrieval_loss, masked_ce, memory_mse,
                                 retrieval_metrics)
from clara.method.model import ClaraModel
from clara.method.tokens import added_tokens, extend_tokenizer
from clara.method.topk import differentiable_topk, soft_topk

DOCS = ["Alia built the river mill in 1790.",
        "Borun sold a salt mine in 1801 and then repaired the harbour bell in 1802 near the "
        "northern archive, which Cetra guarded until 1829."]


def npf(x):
    """A NumPy float32 copy (NumPy has no bfloat16, the platform dtype on Metal and CUDA)."""
    return np.array(x.astype(mx.float32))


def make(tiny_model_dir, **kw) -> ClaraModel:
    kw = {"doc_max_tokens": 32, "compression_rate": 8, "max_len": 256, **kw}
    mx.random.seed(0)
    m = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_model_dir), **kw))
    m.eval()
    return m


def test_memory_tokens_are_single_ids(tiny_model_dir):
    m = make(tiny_model_dir)
    hf = m.hf
    names = added_tokens(m.config.n_mem)
    assert names[:4] == ["<MEM0>", "<MEM1>", "<MEM2>", "<MEM3>"] and names[4:] == ["<AE>", "<ENC>", "<SEP>"]
    for name, i in m.special.added().items():
        assert hf.encode(name, add_special_tokens=False) == [i]
        assert m.tokenizer.decode([i]) == name  # the rebuilt wrapper knows the new ids
    placeholder = prompts.docs_placeholder(m.config.n_mem, 2)
    assert len(hf.encode(placeholder, add_special_tokens=False)) == 2 * (m.config.n_mem + 1)
    # The streaming detokenizer was rebuilt too (mlx-lm builds its token map once).
    detok = m.tokenizer.detokenizer
    detok.reset()
    detok.add_token(m.special.sep)
    detok.finalize()
    assert detok.text == "<SEP>"
    # Extending again is idempotent; a different n_mem is refused.
    _, again = extend_tokenizer(m.tokenizer, m.config.n_mem)
    assert again == m.special
    with pytest.raises(UserError):
        extend_tokenizer(m.tokenizer, m.config.n_mem + 1)


def test_n_mem_and_rates():
    assert ClaraConfig(doc_max_tokens=256, compression_rate=32).n_mem == 8
    assert ClaraConfig(doc_max_tokens=256, compression_rate=256).validate().n_mem == 1
    assert ClaraConfig(doc_max_tokens=16, compression_rate=1).validate().n_mem == 16
    for bad in (dict(compression_rate=300), dict(compression_rate=0),
                dict(doc_max_tokens=8, compression_rate=16), dict(stage="stage4")):
        with pytest.raises(UserError):
            ClaraConfig(**bad).validate()


def test_only_memory_rows_train_and_base_untouched(tiny_model_dir):
    base, _ = mlx_lm.load(str(tiny_model_dir))
    m = make(tiny_model_dir)
    emb = m.embedding
    dt = emb.base.weight.dtype  # the platform's (bfloat16 on a GPU): NumPy sees float32 copies
    w0 = npf(base.model.embed_tokens.weight.astype(dt))
    assert isinstance(emb, MemoryEmbedding)
    names = set(k for k, _ in __import__("mlx.utils").utils.tree_flatten(m.trainable_parameters()))
    emb_names = {k for k in names if "embed_tokens" in k}
    assert emb_names == {"lm.model.embed_tokens.memory"}
    assert all(".adapters.compressor." in k or ".adapters.generator." in k
               for k in names - emb_names)
    # base rows are bit-identical; new rows are the mean of the base rows
    assert np.array_equal(npf(emb.base.weight), w0)
    assert np.allclose(npf(emb.memory), w0.mean(0, keepdims=True), atol=1e-6)
    # lookup: base ids from the base table, added ids from the float rows
    ids = mx.array([[5, m.special.mem[1], m.special.sep]])
    out = npf(emb(ids))
    assert np.array_equal(out[0, 0], w0[5])
    assert np.array_equal(out[0, 1], npf(emb.memory[1].astype(dt)))
    assert np.array_equal(out[0, 2], npf(emb.special[2].astype(dt)))
    # the tied head covers the extended vocabulary
    logits = m.lm(mx.array([[1, 2, 3]]))
    assert logits.shape[-1] == m.special.first + m.special.count


def test_quantized_base_and_untied_head(tmp_path):
    """A 4-bit base keeps its quantized tables; an untied head gets frozen float rows."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import corpus_sentences

    from clara.models.tiny import TinyConfig, build_tiny_model
    from mlx_lm.utils import quantize_model

    d = build_tiny_model(tmp_path / "untied", corpus_sentences(120),
                         TinyConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    vocab_size=300), extra_config={"tie_word_embeddings": False})
    lm, tok = mlx_lm.load(str(d))
    lm, _ = quantize_model(lm, {}, 32, 4)
    qweight = np.array(lm.model.embed_tokens.weight)
    cfg = ClaraConfig(base_model=str(d), doc_max_tokens=16, compression_rate=4, max_len=128)
    m = ClaraModel.from_base(cfg, lm, tok)
    assert isinstance(m.embedding.base, nn.QuantizedEmbedding)
    assert np.array_equal(np.array(m.embedding.base.weight), qweight)
    assert isinstance(m.lm.lm_head.base, nn.QuantizedLinear)
    multi = m.lm.model.layers[0].self_attn.q_proj
    assert isinstance(multi, MultiLoRALinear) and isinstance(multi.linear, nn.QuantizedLinear)
    assert m.embedding.memory.dtype == mx.float32
    from mlx.utils import tree_flatten

    trainable = {k for k, _ in tree_flatten(m.trainable_parameters())}
    assert "lm.lm_head.rows" not in trainable and "lm.model.embed_tokens.memory" in trainable
    b = m.encoder_batch(DOCS[:1])
    vec, mse = m.compress(b["enc_ids"], b["enc_mask"], b["enc_mem_pos"])
    assert vec.shape == (1, cfg.n_mem, 64) and float(mse) > 0
    logits = m.lm(mx.array([[1, 2, 3]]))
    assert logits.shape[-1] == m.special.first + m.special.count
    # QLoRA: gradient reaches the compressor's lora_b and the memory rows through 4-bit layers
    _, g = nn.value_and_grad(m, lambda mm, bb: mm.compress(bb["enc_ids"], bb["enc_mask"],
                                                           bb["enc_mem_pos"])[1])(m, b)
    flat = dict(tree_flatten(g))
    assert float(mx.abs(flat["lm.model.embed_tokens.memory"]).max()) > 0
    assert all(float(mx.abs(v).max()) > 0 for k, v in flat.items()
               if ".adapters.compressor." in k and k.endswith("lora_b"))


def test_encoder_layout_right_padding_and_truncation(tiny_model_dir):
    m = make(tiny_model_dir, doc_max_tokens=8, compression_rate=2)
    s, n = m.special, m.config.n_mem
    b = m.encoder_batch(["Alia", DOCS[1]])
    ids, mask, pos = (np.array(b[k]) for k in ("enc_ids", "enc_mask", "enc_mem_pos"))
    doc0 = m.hf.encode("Alia", add_special_tokens=False)
    row0 = [s.enc, s.bos] + doc0 + [s.eos] + list(s.mem)
    pad = ids.shape[1] - len(row0)
    assert list(ids[0]) == row0 + [s.pad] * pad
    assert list(mask[0]) == [1] * len(row0) + [0] * pad
    # as the reference: <ENC> BOS doc EOS cut to doc_max_tokens + 3 (a long document loses its
    # EOS and keeps one more document token), then the memory tokens
    end = int(mask[1].sum())
    assert end == 1 + 1 + 8 + 1 + n and ids.shape[1] % 16 == 0
    assert list(ids[1, end - n:end]) == list(s.mem) and ids[1, end - n - 1] != s.eos
    assert list(ids[1, end - n - 9:end - n]) == m.hf.encode(DOCS[1], add_special_tokens=False)[:9]
    assert (ids[np.arange(2)[:, None], pos] == np.array(s.mem)).all()
    # a document spelling a special token does not produce one
    b2 = m.encoder_batch(["see <MEM0> here"])
    assert int((np.array(b2["enc_ids"]) == s.mem[0]).sum()) == 1


def test_post_norm_states_equal_mlx_lm(tiny_model_dir):
    m = make(tiny_model_dir)
    m.set_adapter(None)
    ids = mx.array([[1, 40, 50, 60, 70, 4]])
    ours = m.hidden_states(ids, mx.ones(ids.shape, dtype=mx.int32))
    ref = m.lm.model(ids)
    assert float(mx.abs(ours - ref).max()) < 1e-5


def test_padding_never_leaks(tiny_model_dir):
    """A document compresses to the same vectors alone or right-padded in a batch."""
    m = make(tiny_model_dir)
    # give every adapter non-zero weights so the compressor is not the bare base
    for layer in m._loras:
        for p in layer.adapters.values():
            p.lora_b = mx.random.normal(p.lora_b.shape) * 0.05
    alone = m.encoder_batch(DOCS[:1])
    batch = m.encoder_batch(DOCS)
    assert int(np.array(batch["enc_mask"])[0].sum()) < batch["enc_mask"].shape[1]  # padded
    v1, mse1 = m.compress(alone["enc_ids"], alone["enc_mask"], alone["enc_mem_pos"])
    v2, _ = m.compress(batch["enc_ids"], batch["enc_mask"], batch["enc_mem_pos"])
    assert float(mx.abs(v1[0] - v2[0]).max()) < 1e-5
    # pads placed before the document instead do leak (so the check above can fail)
    ids, mask, pos = (np.array(batch[k])[:1] for k in ("enc_ids", "enc_mask", "enc_mem_pos"))
    shift = ids.shape[1] - int(mask[0].sum())
    v3, _ = m.compress(mx.array(np.roll(ids, shift, axis=1)), mx.array(np.roll(mask, shift, axis=1)),
                       mx.array(pos + shift))
    assert float(mx.abs(v1[0] - v3[0]).max()) > 1e-3


def test_memory_mse_formula():
    h = mx.array(np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32))
    mask = mx.array([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    mem = mx.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]], dtype=mx.bool_)
    hn = np.array(h)
    t0, m0 = hn[0, 1:3].mean(0), hn[0, 3:5].mean(0)
    t1, m1 = hn[1, 0:4].mean(0), hn[1, 4:5].mean(0)
    want = np.mean(np.concatenate([(t0 - m0) ** 2, (t1 - m1) ** 2]))
    assert abs(float(memory_mse(h, mask, mem)) - want) < 1e-6


def test_masked_ce_equals_mean_over_supervised_tokens():
    rng = np.random.default_rng(1)
    logits = mx.array(rng.normal(size=(2, 4, 7)).astype(np.float32))
    labels = mx.array([[-100, -100, 3, 5], [-100, 2, 6, -100]])
    loss, n = masked_ce(logits, labels)
    lp = npf(logits) - np.log(np.exp(npf(logits)).sum(-1, keepdims=True))
    want = -np.mean([lp[0, 1, 3], lp[0, 2, 5], lp[1, 0, 2], lp[1, 1, 6]])
    assert int(n) == 4 and abs(float(loss) - want) < 1e-5
    # already shifted logits (CLARA_CE_SHIFT=1's head over positions 0..L-2): the same loss
    shifted, n2 = masked_ce(logits[:, :-1], labels, shifted=True)
    assert int(n2) == 4 and abs(float(shifted) - want) < 1e-5


def test_injection_per_slot_keeps_sep(tiny_model_dir):
    m = make(tiny_model_dir)
    n, k, H = m.config.n_mem, 2, m.hidden_size
    ex = m.decoder_example(*prompts.rag_qa(n, k, "Who built it?", "Alia"))
    batch = m.decoder_batch([ex], k)
    ids, slot = np.array(batch["dec_ids"])[0], np.array(batch["slot_index"])[0]
    comp = mx.random.normal((k, n, H))
    emb = npf(m.inject(batch["dec_ids"], batch["slot_index"], comp, k))[0]
    tok = npf(m.embedding(batch["dec_ids"]))[0]
    comp = comp.astype(m.embedding(batch["dec_ids"]).dtype)
    starts = np.flatnonzero(ids == m.special.mem[0])
    assert len(starts) == k
    for j, p in enumerate(starts):
        assert np.array_equal(emb[p:p + n], npf(comp[j]))
        assert ids[p + n] == m.special.sep and np.array_equal(emb[p + n], tok[p + n])
    assert np.array_equal(emb[slot < 0], tok[slot < 0])
    with pytest.raises(UserError, match="shape"):
        m.inject(batch["dec_ids"], batch["slot_index"], comp[:1], k)
    with pytest.raises(UserError, match="slots"):
        m.decoder_batch([ex], 3)


def test_labels_supervise_only_the_answer(tiny_model_dir):
    m = make(tiny_model_dir)
    n = m.config.n_mem
    short = m.decoder_example(*prompts.rag_qa(n, 1, "Who?", "Alia"))
    long = m.decoder_example(*prompts.rag_qa(n, 1, "Who built the river mill in 1790?", "Alia"))
    b = m.decoder_batch([short, long], 1)
    labels = np.array(b["labels"])
    ids = np.array(b["dec_ids"])[:, -labels.shape[1]:]  # labels cover the last columns only
    for row in range(2):
        sup = ids[row][labels[row] != -100]
        text = m.hf.decode(list(sup))
        assert text.startswith("Alia") and "<|im_end|>" in text and "Question" not in text


def test_system_role_fallback(tiny_model_dir):
    m = make(tiny_model_dir)
    hf = m.hf
    old = hf.chat_template
    hf.chat_template = ("{% for message in messages %}{% if message['role'] == 'system' %}"
                        "{{ raise_exception('System role not supported') }}{% endif %}"
                        "{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
                        "{% if add_generation_prompt %}assistant: {% endif %}")
    try:
        ids, plen = prompts.render(m.tokenizer, "SYS", "USER", "ANS")
        text = hf.decode(ids)
        assert text.startswith("user: SYS\nUSER\n") and plen < len(ids)
    finally:
        hf.chat_template = old


def test_paraphrase_instructions():
    assert len(prompts.PARAPHRASE_INSTRUCTIONS) == 13
    assert all(t.count("{docs}") == 1 for t in prompts.PARAPHRASE_INSTRUCTIONS)


def test_topk_forward_is_hard_and_backward_is_softmax():
    rng = np.random.default_rng(0)
    scores = mx.array(rng.uniform(-1, 1, size=(3, 7)).astype(np.float32))
    k = 3
    w, idx = differentiable_topk(scores, k, tau=0.02)
    want_idx = np.argsort(-np.array(scores), axis=-1)[:, :k]
    assert np.array_equal(np.array(idx), want_idx)
    hard = np.zeros((3, k, 7), dtype=np.float32)
    for b in range(3):
        hard[b, np.arange(k), want_idx[b]] = 1
    assert np.array_equal(np.array(w), hard)  # exactly, not approximately
    R = mx.array(rng.normal(size=(3, k, 7)).astype(np.float32))
    g_st = mx.grad(lambda s: (differentiable_topk(s, k, 0.5)[0] * R).sum())(scores)
    g_soft = mx.grad(lambda s: (soft_topk(s, k, 0.5) * R).sum())(scores)
    assert float(mx.abs(g_st - g_soft).max()) < 1e-6 and float(mx.abs(g_st).max()) > 1e-4
    # later slots cannot pick an already chosen document
    soft = np.array(soft_topk(scores, k, 0.5))
    for b in range(3):
        for j in range(1, k):
            assert soft[b, j, want_idx[b, :j]].max() < 1e-6


def test_contrastive_loss_and_metrics():
    scores = mx.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    pos = mx.array([[True, False, True], [False, False, False]])
    loss = float(contrastive_retrieval_loss(scores, pos, tau=0.5))
    l = np.array([0.9, 0.1, 0.5]) / 0.5
    want = -np.log((np.exp(l[0]) + np.exp(l[2])) / np.exp(l).sum())
    assert abs(loss - want) < 1e-5  # the row without positives is left out
    met = {k: float(v) for k, v in retrieval_metrics(scores, pos, ks=(1, 3)).items()}
    assert met["recall@1"] == pytest.approx(0.25) and met["precision@1"] == pytest.approx(0.5)
    assert met["recall@3"] == pytest.approx(0.5) and met["precision@3"] == pytest.approx(1 / 3)
