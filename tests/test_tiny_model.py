import json

import mlx.core as mx


def test_tiny_model_loads_and_generates_with_mlx_lm(tiny_model_dir):
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    model, tok = mlx_lm.load(str(tiny_model_dir))
    assert tok.has_chat_template and tok.has_thinking
    ids = tok.apply_chat_template([{"role": "user", "content": "안녕 Alia"}],
                                  add_generation_prompt=True)
    assert tok.decode(ids).startswith("<|bos|><|im_start|>user\n안녕 Alia<|im_end|>")
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), len(tok._tokenizer))
    assert bool(mx.all(mx.isfinite(logits)))
    # Ban the end tokens so the random model really emits text.
    from mlx_lm.sample_utils import make_logits_processors

    ban = make_logits_processors(logit_bias={i: -1e9 for i in tok.eos_token_ids})
    out = mlx_lm.generate(model, tok, "Alia built", max_tokens=5, sampler=make_sampler(0.0),
                          logits_processors=ban)
    assert isinstance(out, str) and len(tok.encode(out, add_special_tokens=False)) >= 1
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_key_value_heads"] == 2
