"""`clara model`: add, list, init-tiny, quantize, bench; loading errors are one clear line."""

from __future__ import annotations

import json
import shutil

import pytest

from clara import io
from clara.errors import UserError
from clara.models.loading import load_model
from conftest import corpus_sentences


@pytest.fixture
def text_ws(workspace):
    io.write_jsonl(workspace.datasets_dir / "notes" / "train.jsonl",
                   [{"text": s} for s in corpus_sentences(200)])
    return workspace


def test_init_tiny_builds_a_model_mlx_lm_loads_and_generates(cli, text_ws):
    import mlx_lm

    res = cli("-w", "test", "model", "init-tiny", "tiny", "--from-data", "notes", "--hidden", "64",
              "--layers", "2", "--heads", "4", "--vocab", "300")
    assert res.exit_code == 0, res.output
    folder = text_ws.models_dir / "tiny"
    model, tok = mlx_lm.load(str(folder))
    assert tok.has_chat_template and len(tok._tokenizer) <= 300
    assert isinstance(mlx_lm.generate(model, tok, "Alia", max_tokens=3), str)
    rows = json.loads(cli("-w", "test", "model", "list", "--format", "json").output)
    assert rows[0]["name"] == "tiny" and rows[0]["layers"] == 2 and rows[0]["kind"] == "local"
    res = cli("-w", "test", "model", "init-tiny", "tiny", "--from-data", "notes")
    assert res.exit_code == 1 and "already exists" in res.output


def test_add_references_a_folder_and_refuses_broken_ones(cli, workspace, tiny_model_dir, tmp_path):
    res = cli("-w", "test", "model", "add", "base", str(tiny_model_dir))
    assert res.exit_code == 0, res.output
    meta = io.read_toml(workspace.models_dir / "base" / "model.toml")
    assert meta["source"] == str(tiny_model_dir) and meta["model_type"] == "llama"
    res = cli("-w", "test", "model", "list")
    assert "base" in res.output and "reference" in res.output

    missing = cli("-w", "test", "model", "add", "gone", str(tmp_path / "missing"))
    assert missing.exit_code == 4 and "does not exist" in missing.output
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text('{"model_type": "llama", ')
    res = cli("-w", "test", "model", "add", "broken", str(broken))
    assert res.exit_code == 4 and "config.json:1: invalid JSON" in res.output
    (broken / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(UserError, match="model_type: missing"):
        load_model(str(broken))
    shutil.copy2(tiny_model_dir / "config.json", broken / "config.json")
    for f in broken.glob("model*.safetensors"):
        f.write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="cannot load model"):
        load_model(str(broken))
    with pytest.raises(UserError, match="adapter folder does not exist"):
        load_model(str(tiny_model_dir), adapter_path=tmp_path / "no-adapter")
    assert not (workspace.models_dir / "broken").exists()


def test_quantize_and_bench(cli, workspace, tiny_model_dir):
    import mlx_lm

    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    res = cli("-w", "test", "model", "quantize", "tiny", "--bits", "8", "--group-size", "32")
    assert res.exit_code == 0, res.output
    qdir = workspace.models_dir / "tiny-q8"
    cfg = json.loads((qdir / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 8 and cfg["quantization"]["group_size"] == 32
    model, tok = mlx_lm.load(str(qdir))
    assert isinstance(mlx_lm.generate(model, tok, "Alia", max_tokens=2), str)
    res = cli("-w", "test", "model", "bench", "tiny", "--prompt-tokens", "16",
              "--generation-tokens", "8", "--trials", "1", "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["prompt_tokens"] == 16 and out["generation_tokens"] == 8
    assert out["generation_tokens_per_second"] > 0 and out["peak_memory_gb"] > 0
    assert out["dtype"] == "float32"
    res = cli("-w", "test", "model", "bench", "tiny-q8", "--prompt-tokens", "8",
              "--generation-tokens", "4", "--trials", "1")
    assert res.exit_code == 0 and "8-bit gs32" in res.output and "GEN tok/s" in res.output
    res = cli("-w", "test", "model", "quantize", "tiny-q8")
    assert res.exit_code == 1 and "already quantized" in res.output


def test_dtype_policy_casts_floating_weights(tiny_model_dir):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    loaded = load_model(str(tiny_model_dir), dtype="bfloat16")
    assert {v.dtype for _, v in tree_flatten(loaded.model.parameters())} == {mx.bfloat16}
    assert load_model(str(tiny_model_dir)).dtype == "float32"  # the CPU default


def test_full_pretraining_from_scratch_fuses_into_a_model(cli, root, tiny_model_dir, tmp_path):
    """A full fine-tune with num_layers -1 trains every weight (embeddings included), and
    `clara model fuse` turns the run into a model that mlx-lm loads with those weights."""
    import shutil

    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    from tests.conftest import corpus_sentences

    assert cli("ws", "create", "w").exit_code == 0
    ws_dir = root / "w"
    shutil.copytree(tiny_model_dir, ws_dir / "models" / "scratch")
    data = ws_dir / "datasets" / "text"
    data.mkdir(parents=True)
    lines = [f'{{"text": "{s}"}}' for s in corpus_sentences(60)]
    (data / "train.jsonl").write_text("\n".join(lines[:50]) + "\n")
    (data / "valid.jsonl").write_text("\n".join(lines[50:]) + "\n")
    r = cli("-w", "w", "train", "lora", "-m", "scratch", "-d", "text", "--mode", "cpt",
            "--fine-tune-type", "full", "--iters", "6", "--batch-size", "4",
            "--learning-rate", "1e-3", "--name", "pre")
    assert r.exit_code == 0, r.output
    r = cli("-w", "w", "model", "fuse", "pretrained", "--run", "pre")
    assert r.exit_code == 0, r.output
    base, _ = mlx_lm.load(str(tiny_model_dir))
    fused, tok = mlx_lm.load(str(ws_dir / "models" / "pretrained"))
    before, after = dict(tree_flatten(base.parameters())), dict(tree_flatten(fused.parameters()))
    assert set(before) == set(after)
    changed = {k for k in before if not mx.array_equal(before[k], after[k])}
    assert "model.embed_tokens.weight" in changed and "model.norm.weight" in changed
    assert len(changed) == len(before)
    assert tok.has_chat_template
    r = cli("-w", "w", "model", "fuse", "again", "--run", "pre", "--adapter", "x")
    assert r.exit_code == 1 and "exactly one" in r.output
