"""`clara model`: register, build, list, quantize and benchmark base models."""

from __future__ import annotations

import json

import click

from clara.cli.common import AppContext, emit_record, emit_rows, format_option, pass_app
from clara.errors import UserError
from clara.io import human_size

_COLUMNS = [("name", "NAME"), ("kind", "KIND"), ("model_type", "TYPE"), ("layers", "LAYERS"),
            ("hidden_size", "HIDDEN"), ("vocab_size", "VOCAB"), ("quantization", "QUANT"),
            ("bytes", "SIZE", human_size), ("source", "SOURCE")]


@click.group("model")
def model_group():
    """Base models: add existing ones, build tiny ones, quantize, benchmark."""


@model_group.command("add")
@click.argument("name")
@click.argument("source")
@pass_app
def model_add(app: AppContext, name: str, source: str):
    """Register SOURCE (a local mlx-lm model folder or a Hugging Face id) as model NAME.

    It is loaded once through mlx-lm to check it.

    Example: clara model add qwen ~/models/Qwen3-0.6B-mlx
    """
    from clara.models.registry import add_model

    info = add_model(app.workspace(), name, source)
    click.echo(f"added model {name} ({info.get('model_type')}, {info.get('layers')} layers) "
               f"-> {info.get('source')}")


@model_group.command("list")
@format_option
@pass_app
def model_list(app: AppContext, fmt: str):
    """List the workspace's models.

    Example: clara model list --format json
    """
    from clara.models.registry import list_models

    emit_rows(list_models(app.workspace()), _COLUMNS, fmt,
              empty="no models (add one: clara model add, or build one: clara model init-tiny)")


@model_group.command("init-tiny")
@click.argument("name")
@click.option("--from-data", "dataset", required=True,
              help="Dataset (workspace name or folder with train.jsonl) to train the tokenizer on.")
@click.option("--hidden", default=128, show_default=True, help="Hidden size.")
@click.option("--layers", default=4, show_default=True, help="Transformer blocks.")
@click.option("--heads", default=4, show_default=True, help="Attention heads.")
@click.option("--kv-heads", default=None, type=int, help="Key/value heads (default: --heads).")
@click.option("--vocab", default=1024, show_default=True, help="BPE vocabulary size.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@pass_app
def model_init_tiny(app: AppContext, name, dataset, hidden, layers, heads, kv_heads, vocab, seed):
    """Build a small Llama from scratch: a BPE tokenizer trained on a dataset (chat template and
    special tokens included) and random weights, in mlx-lm's format.

    Example: clara model init-tiny tiny --from-data notes-text --hidden 128 --layers 4
    """
    from clara.train.launch import resolve_data
    from clara.models.tiny import TinyConfig, build_tiny_model, dataset_texts

    ws = app.workspace()
    cfg = TinyConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     num_key_value_heads=kv_heads, vocab_size=vocab, seed=seed).validate()
    out = ws.child("models", name)
    if out.exists():
        raise UserError(f"model {name!r} already exists in workspace {ws.name}")
    texts = dataset_texts(resolve_data(ws, dataset))
    if not texts:
        raise UserError(f"dataset {dataset!r} has no text to train a tokenizer on")
    build_tiny_model(out, texts, cfg)
    info = json.loads((out / "clara_tiny.json").read_text())
    click.echo(f"built model {name}: {info['parameters']:,} parameters, vocab {info['vocab_size']}"
               f" -> {out}")


@model_group.command("quantize")
@click.argument("name")
@click.option("--bits", type=click.Choice(["4", "8"]), default="4", show_default=True)
@click.option("--group-size", default=64, show_default=True, help="Weights per scale.")
@click.option("--out", "out_name", default=None, help="New model name (default: NAME-qBITS).")
@pass_app
def model_quantize(app: AppContext, name, bits, group_size, out_name):
    """Quantize model NAME into a new workspace model through mlx-lm's conversion. Quantized
    models are fast on Metal and CUDA; on a Linux CPU float32 is faster.

    Example: clara model quantize tiny --bits 4 --group-size 32
    """
    from pathlib import Path

    from clara.models.quantize import quantize_folder
    from clara.models.registry import model_source

    ws = app.workspace()
    src = Path(model_source(ws, name))
    out_name = out_name or f"{name}-q{bits}"
    dst = quantize_folder(src, ws.child("models", out_name), int(bits), group_size)
    click.echo(f"quantized {name} to {bits}-bit (group size {group_size}) -> model {out_name} "
               f"({human_size(sum(p.stat().st_size for p in dst.glob('*.safetensors')))})")


@model_group.command("fuse")
@click.argument("name")
@click.option("--run", "run_ref", default=None, help="Run whose adapter to fuse (its best, else last).")
@click.option("--adapter", "adapter", default=None, help="Or an adapter folder.")
@click.option("--base", default=None, help="Base model (default: the run's model).")
@click.option("--dequantize", is_flag=True, help="Write float weights even from a quantized base.")
@pass_app
def model_fuse(app: AppContext, name, run_ref, adapter, base, dequantize):
    """Merge a trained adapter into its base as new model NAME: a LoRA run becomes a model of its
    own, and the pretraining of a model built from scratch becomes its weights.

    Example: clara model fuse tiny-pretrained --run pretrain-20261121-101500-ab12
    """
    from clara.models.fuse import fuse_adapter
    from clara.models.registry import model_source
    from clara.refs import LORA, resolve

    ws = app.workspace()
    if bool(run_ref) == bool(adapter):
        raise UserError("give exactly one of --run RUN or --adapter FOLDER")
    found = resolve(ws, run_ref or adapter, want=LORA)
    folder = found.path
    if base is None:
        if not run_ref:
            raise UserError("--base is needed with --adapter")
        base = found.base
    dst = fuse_adapter(model_source(ws, base), folder, ws.child("models", name), dequantize)
    click.echo(f"fused {folder} into {base} -> model {name} ({dst})")


@model_group.command("bench")
@click.argument("names", nargs=-1, required=True)
@click.option("--adapter", default=None, help="Adapter folder, or run id (its best, else last).")
@click.option("--prompt-tokens", default=128, show_default=True)
@click.option("--generation-tokens", default=64, show_default=True)
@click.option("--trials", default=2, show_default=True)
@format_option
@pass_app
def model_bench(app: AppContext, names, adapter, prompt_tokens, generation_tokens, trials, fmt):
    """Measure size, load time, prompt and generation tokens/s and peak memory of one or more
    models, one after another, as one comparison table (e.g. a model and its 8- and 4-bit
    variants).

    Example: clara model bench seed-text seed-text-q8 seed-text-q4 --format json
    """
    import gc

    import mlx.core as mx

    from clara.models.bench import bench_model
    from clara.models.registry import model_source
    from clara.refs import LORA, resolve

    ws = app.workspace()
    adapter = str(resolve(ws, adapter, want=LORA).path) if adapter else None
    results = []
    for name in names:
        result = bench_model(model_source(ws, name), adapter, prompt_tokens, generation_tokens,
                             trials).to_dict()
        results.append({"name": name, **result})
        gc.collect()  # free this model before measuring the next one's peak
        mx.clear_cache()
    if fmt == "json":
        emit_record(results[0] if len(results) == 1 else results, fmt)
        return
    emit_rows(results, [("name", "MODEL"), ("dtype", "DTYPE"), ("quantization", "QUANT"),
                        ("weights_bytes", "SIZE", human_size), ("load_seconds", "LOAD s"),
                        ("prompt_tokens_per_second", "PROMPT tok/s"),
                        ("generation_tokens_per_second", "GEN tok/s"),
                        ("peak_memory_gb", "PEAK GB"), ("adapter", "ADAPTER")], fmt)


COMMANDS = [model_group]
