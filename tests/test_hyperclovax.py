"""The hyperclovax model for mlx-lm: parity with transformers' reference, loading through
mlx_lm.load, input_embeddings, KV cache, LoRA, quantization."""

from __future__ import annotations


import numpy as np
import pytest

import clara.models  # noqa: F401  (registers hyperclovax with mlx-lm)

TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, rms_norm_eps=1e-6, max_position_embeddings=256)
# muP values of the kind the SEED configs carry, so that a multiplier applied in the wrong place
# (or divided instead of multiplied) moves the logits far beyond the tolerance.
MUP = dict(embedding_multiplier=3.5, residual_multiplier=0.6, attention_multiplier=0.11,
           logits_scaling=0.4)


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def _hf_checkpoint(tmp_path, name, **overrides):
    """A random transformers HyperCLOVAX model saved as a HF folder; returns (torch model, path)."""
    torch = pytest.importorskip(
        "torch", reason="PyTorch (CPU build) is not installed: no reference to compare against "
                        "(scripts/env.sh installs it from /opt/wheels when a wheel is there)")
    from transformers import HyperCLOVAXConfig, HyperCLOVAXForCausalLM

    torch.manual_seed(len(name))
    cfg = HyperCLOVAXConfig(**{**TINY, **MUP, **overrides})
    model = HyperCLOVAXForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            # Norm weights away from one, so a missing or misplaced post-norm shows.
            p.copy_(1.0 + 0.3 * torch.randn_like(p) if pname.endswith("norm.weight") or
                    ".post_norm" in pname else 0.08 * torch.randn_like(p))
    path = tmp_path / name
    model.save_pretrained(path)
    return torch, model, path


CASES = {
    "postnorm-untied-gqa": dict(use_post_norm=True, tie_word_embeddings=False, num_key_value_heads=2),
    "postnorm-tied-mha": dict(use_post_norm=True, tie_word_embeddings=True, num_key_value_heads=4),
    "nopostnorm-tied-gqa": dict(use_post_norm=False, tie_word_embeddings=True, num_key_value_heads=1),
    "nopostnorm-untied-headdim": dict(use_post_norm=False, tie_word_embeddings=False,
                                      num_key_value_heads=2, head_dim=24,
                                      rope_parameters={"rope_type": "default", "rope_theta": 5e5}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_transformers(tmp_path, case):
    torch, ref, path = _hf_checkpoint(tmp_path, case, **CASES[case])
    import mlx.core as mx
    from mlx_lm.utils import load_model

    model, config = load_model(path)
    assert config["model_type"] == "hyperclovax"
    assert type(model).__module__ == "clara.models.hyperclovax"
    if not CASES[case]["tie_word_embeddings"]:
        assert hasattr(model, "lm_head")
    assert hasattr(model.layers[0], "post_norm1") == CASES[case]["use_post_norm"]

    rng = np.random.default_rng(0)
    ids = rng.integers(0, TINY["vocab_size"], size=(2, 11))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got = np.array(model(mx.array(ids)))
    assert _rel_err(got, want) < 1e-4

    # Incremental decoding: prompt of 7 through the KV cache, then 4 single tokens.
    cache = model.make_cache()
    steps = [np.array(model(mx.array(ids[:, :7]), cache=cache))]
    for t in range(7, 11):
        steps.append(np.array(model(mx.array(ids[:, t:t + 1]), cache=cache)))
    got_inc = np.concatenate(steps, axis=1)
    assert _rel_err(got_inc, want) < 1e-4
    with torch.no_grad():
        out = ref(torch.tensor(ids[:, :7]), use_cache=True)
        ref_steps = [out.logits.numpy()]
        past = out.past_key_values
        for t in range(7, 11):
            out = ref(torch.tensor(ids[:, t:t + 1]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            ref_steps.append(out.logits.numpy())
    assert _rel_err(got_inc, np.concatenate(ref_steps, axis=1)) < 1e-4

    # input_embeddings: same contract as transformers' inputs_embeds (the multiplier applies).
    emb = rng.normal(size=(2, 5, TINY["hidden_size"])).astype(np.float32)
    with torch.no_grad():
        want_e = ref(inputs_embeds=torch.tensor(emb)).logits.numpy()
    got_e = np.array(model(mx.zeros((2, 5), dtype=mx.int32), input_embeddings=mx.array(emb)))
    assert _rel_err(got_e, want_e) < 1e-4


def _random_model(**overrides):
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map

    from clara.models import hyperclovax

    args = hyperclovax.ModelArgs.from_dict({"model_type": "hyperclovax", **TINY, **MUP,
                                            "num_key_value_heads": 2, **overrides})
    mx.random.seed(1)
    model = hyperclovax.Model(args)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.08, model.parameters()))
    mx.eval(model.parameters())
    return model, len(tree_flatten(model.parameters()))


def test_config_defaults_follow_transformers():
    from clara.models.hyperclovax import ModelArgs

    args = ModelArgs.from_dict({"model_type": "hyperclovax", **TINY,
                                "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
                                "unknown_key": 1})
    assert args.use_post_norm is True and args.tie_word_embeddings is False
    assert args.head_dim == 16 and args.num_key_value_heads == 4
    assert args.attention_multiplier == pytest.approx(16 ** -0.5)
    assert args.rope_theta == 1e6 and args.rope_scaling is None
    with pytest.raises(ValueError, match="gelu"):
        ModelArgs.from_dict({"model_type": "hyperclovax", **TINY, "hidden_act": "gelu"})


def test_logits_scaling_multiplies_and_post_norm_matters():
    import mlx.core as mx

    ids = mx.array([[5, 9, 2, 7]])
    model, _ = _random_model()
    base = np.array(model(ids))
    model.args.logits_scaling = MUP["logits_scaling"] * 2
    assert np.allclose(np.array(model(ids)), base * 2, rtol=1e-5, atol=1e-6)
    _, n_with = _random_model(use_post_norm=True)
    _, n_without = _random_model(use_post_norm=False)
    assert n_with - n_without == 2 * TINY["num_hidden_layers"]  # post_norm1 and post_norm2 per layer


def _save(model, path, config, tokenizer=None):
    from mlx_lm.utils import save_config, save_model

    path.mkdir(parents=True)
    save_model(path, model)
    save_config(config, path / "config.json")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_hcx_dir(tmp_path_factory):
    """A tiny random hyperclovax checkpoint in mlx-lm's format, with a tokenizer that has <think>."""
    from clara.models.tiny import train_tokenizer
    from tests.conftest import corpus_sentences

    tok = train_tokenizer(corpus_sentences(), 300)
    model, _ = _random_model(vocab_size=len(tok), tie_word_embeddings=False)
    config = {"model_type": "hyperclovax", "architectures": ["HyperCLOVAXForCausalLM"],
              **TINY, **MUP, "vocab_size": len(tok), "num_key_value_heads": 2,
              "tie_word_embeddings": False, "eos_token_id": tok.eos_token_id}
    return _save(model, tmp_path_factory.mktemp("hcx") / "hcx", config, tok)


def test_mlx_lm_load_and_generate(tiny_hcx_dir):
    import mlx_lm

    model, tok = mlx_lm.load(str(tiny_hcx_dir))
    assert type(model).__name__ == "Model" and model.model_type == "hyperclovax"
    assert tok.has_thinking and tok.think_start_id == tok.convert_tokens_to_ids("<think>")
    out = mlx_lm.generate(model, tok, "Alia built", max_tokens=6)
    assert isinstance(out, str) and len(tok.encode(out, add_special_tokens=False)) >= 1
    from mlx_lm.utils import does_model_support_input_embeddings

    assert does_model_support_input_embeddings(model)


def test_lora_applies_to_plain_and_quantized(tiny_hcx_dir):
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import quantize_model

    ids = mx.array([[3, 8, 13, 21, 34]])
    for quantize in (False, True):
        model, _ = mlx_lm.load(str(tiny_hcx_dir))
        if quantize:
            model, _ = quantize_model(model, {}, group_size=32, bits=4)
            assert isinstance(model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
        before = np.array(model(ids))
        model.freeze()
        linear_to_lora_layers(model, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
        names = [k for k, _ in tree_flatten(model.trainable_parameters())]
        assert any("self_attn.q_proj.lora_a" in k for k in names)
        assert any("mlp.down_proj.lora_b" in k for k in names)
        # lora_b starts at zero: output unchanged until trained; a gradient step moves it.
        assert np.allclose(np.array(model(ids)), before, atol=1e-5)

        def loss(m):
            return nn.losses.cross_entropy(m(ids[:, :-1]), ids[:, 1:]).mean()

        _, grads = nn.value_and_grad(model, loss)(model)
        g = dict(tree_flatten(grads))
        assert any(float(mx.abs(v).sum()) > 0 for k, v in g.items() if "lora_b" in k)


def test_mlx_lm_cli_through_clara(tiny_hcx_dir):
    """mlx-lm's own tools see the hyperclovax type when started through clara."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "clara.models.architectures", "generate", "--model", str(tiny_hcx_dir),
           "--prompt", "Alia", "--max-tokens", "3", "--ignore-chat-template"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Generation:" in done.stdout
    plain = subprocess.run([sys.executable, "-m", "mlx_lm", *cmd[3:]], capture_output=True,
                           text=True, env=env, timeout=120)
    assert plain.returncode != 0 and "hyperclovax not supported" in plain.stderr


# A SEED-Think-style template: the generation prompt opens the assistant turn, the model writes
# "/think\n" and its reasoning, closes the turn and opens a second assistant turn for the answer.
HCX_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant"
    "{% if skip_reasoning %}{{ '\\n' }}{% elif force_reasoning %}{{ '/think\\n' }}{% endif %}"
    "{% endif %}")


def test_reasoning_markers_think_tokens_ban_and_split(tiny_hcx_dir):
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.sample_utils import make_logits_processors

    from clara.models.thinking import reasoning_markers, split_reasoning

    model, tok = mlx_lm.load(str(tiny_hcx_dir))
    m = reasoning_markers(tok)
    think = tok.convert_tokens_to_ids("<think>")
    assert m.style == "tokens" and m.start == "<think>" and m.ban_ids == (think,)
    assert split_reasoning("<think>plan</think>\nAnswer.", m) == ("plan", "Answer.")
    assert split_reasoning("plan</think>Answer.", m) == ("plan", "Answer.")  # opened by prompt
    assert split_reasoning("<think>still going", m) == ("still going", "")
    assert split_reasoning("Just an answer.", m) == (None, "Just an answer.")

    # Make <think> the model's favourite token; the ban must still keep it out.
    favour = mx.zeros((len(tok),)).at[think].add(100.0)

    def prefer_think(tokens, logits):
        return logits + favour

    ids = tok.encode("Alia built", add_special_tokens=False)
    assert "<think>" in mlx_lm.generate(model, tok, ids, max_tokens=2,
                                        logits_processors=[prefer_think])
    banned = make_logits_processors({t: -1e9 for t in m.ban_ids})
    text = mlx_lm.generate(model, tok, ids, max_tokens=4,
                           logits_processors=[prefer_think, *banned])
    assert "<think>" not in text and len(text) > 0


def test_reasoning_markers_hcx_role_style():
    from clara.models.thinking import HCX_END, reasoning_markers, split_reasoning
    from clara.models.tiny import train_tokenizer
    from tests.conftest import corpus_sentences

    tok = train_tokenizer(corpus_sentences(), 300)
    tok.chat_template = HCX_TEMPLATE
    m = reasoning_markers(tok)
    assert m.style == "hcx" and m.ban_ids == () and m.off_kwargs == {"skip_reasoning": True}
    assert tok.decode(list(m.end_ids)) == HCX_END
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True, **m.off_kwargs)
    assert prompt.endswith("<|im_start|>assistant\n")
    out = "/think\nThe user greets.<|im_end|>\n<|im_start|>assistant\nHello!"
    assert split_reasoning(out, m) == ("The user greets.", "Hello!")
    assert split_reasoning("\nHello!", m) == (None, "Hello!")
    assert split_reasoning("/think\nhmm", m) == ("hmm", "")


def test_clara_on_hyperclovax_matches_its_own_forward(tiny_hcx_dir):
    """CLaRa's padded-batch forward applies the muP multipliers like the model itself, so what
    the stages train is what mlx-lm generates with (embedding and logits scaling included)."""
    import mlx.core as mx

    from clara.method.config import ClaraConfig
    from clara.method.inference import answer_from_docs
    from clara.method.model import ClaraModel

    mx.random.seed(0)
    m = ClaraModel.from_base(ClaraConfig(base_model=str(tiny_hcx_dir), doc_max_tokens=16,
                                         compression_rate=4, max_len=128))
    m.eval()
    m.set_adapter(None)
    ids = mx.array([[5, 9, 17, 33, 60, 2]])
    ones = mx.ones(ids.shape, dtype=mx.int32)
    states = m.hidden_states(ids, ones)
    assert np.allclose(np.array(states), np.array(m.lm.model(ids)), atol=1e-5)
    assert np.allclose(np.array(m.head(states)), np.array(m.lm(ids)), atol=1e-4)
    assert isinstance(answer_from_docs(m, "Who built it?", ["Alia built the mill."],
                                       max_tokens=3), str)
