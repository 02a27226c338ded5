"""Text-backbone extraction from synthetic vision checkpoints (random weights, the real key layouts
and config shapes), sharded in and out, and the errors for what cannot be extracted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import clara.models  # noqa: F401  (registers hyperclovax with mlx-lm)
from clara.errors import UserError
from clara.models.extract import extract_text
from tests.conftest import corpus_sentences

HCX_TEXT = dict(model_type="hyperclovax", hidden_size=64, intermediate_size=96,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                rms_norm_eps=1e-6, max_position_embeddings=256, embedding_multiplier=2.0,
                residual_multiplier=0.7, logits_scaling=0.5, use_post_norm=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
LLAMA_TEXT = dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=True)
VISION_CONFIG = {"model_type": "qwen2_5_vl", "depth": 2, "hidden_size": 32, "out_hidden_size": 64,
                 "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2}

# name: (top-level config, text config key, body prefix, head prefix, vision tensors)
LAYOUTS = {
    "seed-hub-vlm": ({"model_type": "vlm", "architectures": ["HCXVisionV2ForCausalLM"]},
                     "text_config", "model.language_model.model.", "model.language_model.lm_head.",
                     {"model.vision_model.patch_embed.proj.weight": (32, 588),
                      "model.vision_model.blocks.0.attn.qkv.weight": (96, 32),
                      "model.vision_model.blocks.1.attn.qkv.weight": (96, 32),
                      "model.vision_projector.weight": (64, 32),
                      "model.vision_projector.bias": (64,)}),
    "transformers-v2": ({"model_type": "hyperclovax_vision_v2",
                         "architectures": ["HyperCLOVAXVisionV2ForConditionalGeneration"]},
                        "text_config", "model.language_model.", "lm_head.",
                        {"model.vision_model.blocks.0.mlp.fc1.weight": (64, 32),
                         "model.projector.weight": (64, 32)}),
    "llava-generic": ({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]},
                      "text_config", "language_model.model.", "language_model.lm_head.",
                      {"vision_tower.vision_model.embeddings.patch_embedding.weight": (32, 3, 4, 4),
                       "multi_modal_projector.linear_1.weight": (64, 32),
                       "multi_modal_projector.linear_2.weight": (64, 64)}),
    "seed-vision-old": ({"model_type": "hyperclovax_vlm", "architectures": ["HCXVisionForCausalLM"]},
                        "language_config", "language_model.model.", "language_model.lm_head.",
                        {"vision_model.encoder.layers.0.self_attn.k_proj.weight": (32, 32),
                         "mm_projector.net.0.weight": (64, 32)}),
}


@pytest.fixture(scope="module")
def tokenizer():
    from clara.models.tiny import train_tokenizer

    return train_tokenizer(corpus_sentences(), 300)


def _text_model(text_cfg: dict, vocab: int, tied: bool, seed: int = 0):
    """A random text model (mlx) and its flat weights under mlx-lm names."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.utils import _get_classes

    cfg = {**text_cfg, "vocab_size": vocab, "tie_word_embeddings": tied}
    Model, Args = _get_classes(cfg)
    mx.random.seed(seed)
    model = Model(Args.from_dict(cfg))
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.1, model.parameters()))
    mx.eval(model.parameters())
    return model, dict(tree_flatten(model.parameters()))


def _write_checkpoint(path, layout, tokenizer, *, tied=False, shards=1, dtype="float32",
                      text_model=None, processor_template=False):
    """A vision checkpoint folder in one of LAYOUTS; returns the reference text model."""
    import mlx.core as mx

    top, key, body, head, vision = LAYOUTS[layout]
    text_cfg = dict(LLAMA_TEXT if layout in ("llava-generic", "seed-vision-old") else HCX_TEXT)
    if layout == "seed-vision-old":
        text_cfg.pop("model_type")  # old SEED Vision configs leave it to the outer type
    model, flat = text_model or _text_model(
        {**text_cfg, "model_type": text_cfg.get("model_type", "llama")}, len(tokenizer), tied)
    tensors = {}
    for name, value in flat.items():
        src = (head + name[len("lm_head."):]) if name.startswith("lm_head.") \
            else body + name[len("model."):]
        tensors[src] = value.astype(getattr(mx, dtype))
    for name, shape in vision.items():
        tensors[name] = mx.random.normal(shape).astype(getattr(mx, dtype))

    path.mkdir(parents=True)
    names = sorted(tensors)
    # Vision tensors in the last shard alone, language weights spread over the others.
    lm = [n for n in names if n not in vision]
    groups = [lm] if shards == 1 else [lm[i::shards - 1] for i in range(shards - 1)]
    groups = [g for g in groups if g]
    if shards == 1:
        groups[0] = groups[0] + list(vision)
    else:
        groups.append(list(vision))
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        fname = "model.safetensors" if len(groups) == 1 else \
            f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        mx.save_safetensors(str(path / fname), {n: tensors[n] for n in group},
                            metadata={"format": "pt"})
        weight_map.update({n: fname for n in group})
    if len(groups) > 1:
        (path / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    config = {**top, key: {**text_cfg, "vocab_size": len(tokenizer),
                           "tie_word_embeddings": tied},
              "vision_config": VISION_CONFIG, "torch_dtype": dtype,
              "eos_token_id": tokenizer.eos_token_id, "image_token_id": 5}
    (path / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(str(path))
    (path / "preprocessor_config.json").write_text(json.dumps({"patch_size": 14}))
    if processor_template:
        # As some vision checkpoints keep it: with the processor, not the tokenizer.
        template = (path / "chat_template.jinja").read_text()
        (path / "chat_template.jinja").unlink()
        (path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    return model, len(groups)


def _logits(model, ids):
    import mlx.core as mx

    return np.array(model(mx.array(ids)).astype(mx.float32))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_extract_layouts_load_and_match(tmp_path, tokenizer, layout):
    import mlx_lm

    tied = layout == "llava-generic"
    ref, _ = _write_checkpoint(tmp_path / "src", layout, tokenizer, tied=tied,
                               processor_template=layout == "seed-hub-vlm")
    report = extract_text(tmp_path / "src", tmp_path / "out")

    vision = LAYOUTS[layout][4]
    expected_drops = {}
    for name in vision:
        parts = name.split(".")
        group = ".".join(parts[:2] if parts[0] == "model" else parts[:1])
        expected_drops[group] = expected_drops.get(group, 0) + 1
    assert report.dropped == expected_drops
    assert report.tie_word_embeddings is tied
    assert "preprocessor_config.json" in report.dropped_files
    assert report.text_type == ("hyperclovax" if layout.startswith(("seed-hub", "transformers"))
                                else "llama")

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "vision_config" not in config and config["model_type"] == report.text_type
    assert config["eos_token_id"] == tokenizer.eos_token_id  # inherited from the outer config

    model, tok = mlx_lm.load(str(tmp_path / "out"))
    ids = np.array([[3, 17, 42, 99, 7, 250]])
    assert np.allclose(_logits(model, ids), _logits(ref, ids), rtol=1e-5, atol=1e-5)
    assert tok.has_chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    out = mlx_lm.generate(model, tok, prompt, max_tokens=5)
    assert isinstance(out, str)
    # The reasoning block is recognised from the tokenizer, so chat can hide or ban it.
    assert report.thinking["start"] == "<think>" and report.thinking["end"] == "</think>"
    assert report.thinking["style"] == "tokens"
    assert report.thinking["ban_ids"] == [tokenizer.convert_tokens_to_ids("<think>")]
    assert tok.think_end_id == tokenizer.convert_tokens_to_ids("</think>")


def test_sharded_in_sharded_out_keeps_dtype(tmp_path, tokenizer):
    import mlx.core as mx
    import mlx_lm
    from safetensors import safe_open

    _, n_in = _write_checkpoint(tmp_path / "src", "seed-hub-vlm", tokenizer, shards=3,
                                dtype="bfloat16")
    assert n_in == 3
    report = extract_text(tmp_path / "src", tmp_path / "out")
    out = tmp_path / "out"
    # The vision-only shard gives no output shard; each language shard gives one.
    assert report.shards_in == 3 and report.shards_out == 2
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    keys = set()
    for s in shards:
        with safe_open(str(out / s), framework="numpy") as f:
            keys |= set(f.keys())
    assert keys == set(index["weight_map"]) and len(keys) == report.kept
    assert all(k.startswith(("model.", "lm_head.")) for k in keys)
    assert "model.layers.1.post_norm2.weight" in keys and "lm_head.weight" in keys
    assert report.dropped == {"model.vision_model": 3, "model.vision_projector": 2}

    model, tok = mlx_lm.load(str(out))
    assert model.model.embed_tokens.weight.dtype == mx.bfloat16
    text = mlx_lm.generate(model, tok, "Alia built", max_tokens=4)
    assert isinstance(text, str)


def test_plain_text_checkpoint_is_copied_as_is(tmp_path, tiny_model_dir):
    import mlx_lm

    report = extract_text(tiny_model_dir, tmp_path / "copy")
    assert report.dropped == {} and report.source_type == "llama" and report.notes == []
    src_cfg = json.loads((tiny_model_dir / "config.json").read_text())
    out_cfg = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert out_cfg == src_cfg
    a, _ = mlx_lm.load(str(tiny_model_dir))
    b, _ = mlx_lm.load(str(tmp_path / "copy"))
    ids = np.array([[1, 2, 3, 4]])
    assert np.array_equal(_logits(a, ids), _logits(b, ids))


def test_unsupported_text_type_is_named(tmp_path, tokenizer):
    _write_checkpoint(tmp_path / "src", "transformers-v2", tokenizer)
    cfg_file = tmp_path / "src" / "config.json"
    config = json.loads(cfg_file.read_text())
    config["text_config"]["model_type"] = "qwen9_omni_talker"
    cfg_file.write_text(json.dumps(config))
    with pytest.raises(UserError, match="text_config.model_type: 'qwen9_omni_talker'"):
        extract_text(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    config = {"model_type": "siglip_vision_model", "hidden_size": 32}
    cfg_file.write_text(json.dumps(config))
    with pytest.raises(UserError, match="model_type: 'siglip_vision_model' is not supported"):
        extract_text(tmp_path / "src", tmp_path / "out")


def test_unknown_layout_and_missing_parts_fail_clearly(tmp_path, tokenizer):
    import mlx.core as mx

    _write_checkpoint(tmp_path / "src", "transformers-v2", tokenizer)
    src = tmp_path / "src"
    # Weights under a prefix no layout knows: the error lists what was found.
    mx.save_safetensors(str(src / "model.safetensors"),
                        {"backbone.decoder.embed.weight": mx.zeros((4, 4))})
    with pytest.raises(UserError, match="prefixes found: backbone"):
        extract_text(src, tmp_path / "out")
    for f in src.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(UserError, match="no \\*.safetensors"):
        extract_text(src, tmp_path / "out")
    with pytest.raises(UserError, match="no config.json"):
        extract_text(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer_leaves_nothing(tmp_path, tokenizer):
    _write_checkpoint(tmp_path / "src", "seed-hub-vlm", tokenizer)
    (tmp_path / "src" / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="no tokenizer.json"):
        extract_text(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    shutil.rmtree(tmp_path / "src")


def test_cli_extract_quantize_bench(cli, workspace, tmp_path, tokenizer):
    """The SEED workflow through the model commands: extract, quantize to 8 and 4 bits, bench."""
    import mlx_lm

    _write_checkpoint(tmp_path / "seed", "seed-hub-vlm", tokenizer, shards=3)
    ws = ["-w", workspace.name]
    r = cli(*ws, "model", "extract-text", str(tmp_path / "seed"), "seed-text")
    assert r.exit_code == 0, r.output
    assert "model.vision_model (3)" in r.output and "<think>" in r.output
    again = cli(*ws, "model", "extract-text", str(tmp_path / "seed"), "seed-text")
    assert again.exit_code == 1 and "already exists" in again.output

    for bits in ("8", "4"):
        r = cli(*ws, "model", "quantize", "seed-text", "--bits", bits, "--group-size", "32")
        assert r.exit_code == 0, r.output
        path = workspace.models_dir / f"seed-text-q{bits}"
        assert json.loads((path / "config.json").read_text())["quantization"]["bits"] == int(bits)
        model, tok = mlx_lm.load(str(path))
        assert model.model_type == "hyperclovax"
        assert type(model.layers[0].self_attn.q_proj).__name__ == "QuantizedLinear"
        assert isinstance(mlx_lm.generate(model, tok, "Alia built", max_tokens=3), str)
    # the seeds' comparison: one table for the three variants at once
    names = ("seed-text", "seed-text-q8", "seed-text-q4")
    r = cli(*ws, "model", "bench", *names, "--prompt-tokens", "16", "--generation-tokens", "4",
            "--trials", "1", "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["name"] for row in rows] == list(names)
    assert [row["quantization"] is None for row in rows] == [True, False, False]
    assert all(row["generation_tokens_per_second"] > 0 and row["peak_memory_gb"] > 0
               for row in rows)
    sizes = [row["weights_bytes"] for row in rows]
    assert sizes[0] > sizes[1] > sizes[2]
    table = cli(*ws, "model", "bench", *names, "--prompt-tokens", "16", "--generation-tokens",
                "4", "--trials", "1").output
    assert all(n in table for n in names) and "GEN tok/s" in table and "SIZE" in table


def test_cli_unsupported_type_is_one_line(cli, workspace, tmp_path):
    src = tmp_path / "audio"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "whisper_xyz",
                                                 "architectures": ["WhisperXForConditionalGeneration"]}))
    r = cli("-w", workspace.name, "model", "extract-text", str(src), "audio-text")
    assert r.exit_code == 1 and "'whisper_xyz' is not supported" in r.output
    assert "Traceback" not in r.output
    assert not (workspace.models_dir / "audio-text").exists()


def test_dropped_tensors_are_never_read(tmp_path, tokenizer):
    """Memory stays bounded: dropped tensors are never loaded, even in a shard that is read."""
    LAYOUTS["big-vision"] = (LAYOUTS["seed-hub-vlm"][0], "text_config",
                             "model.language_model.model.", "model.language_model.lm_head.",
                             {"model.vision_model.huge.weight": (4096, 2048)})  # 32 MiB float32
    try:
        _write_checkpoint(tmp_path / "src", "big-vision", tokenizer)  # one shard with both
    finally:
        del LAYOUTS["big-vision"]
    # in a process of its own: the suite's other MLX work (threads of earlier tests) would count
    # towards a peak read in this one
    code = ("import sys, mlx.core as mx; from clara.models.extract import extract_text; "
            "r = extract_text(sys.argv[1], sys.argv[2]); "
            "print(dict(r.dropped), mx.get_peak_memory())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "src"), str(tmp_path / "out")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["{'model.vision_model':", "1}"], out
    assert int(out[-1]) < 8 * 2**20, out


def test_mup_keys_on_another_type_are_flagged(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "logits_scaling": 0.125}))
    report = extract_text(src, tmp_path / "out")
    assert any("logits_scaling" in n and "'llama' ignores" in n for n in report.notes)
