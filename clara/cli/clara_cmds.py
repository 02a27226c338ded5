"""CLaRa commands: `clara train stage1|stage2|stage3` (runs of the CLaRa stages), `clara compress`
(a reusable store of compressed documents) and `clara ask` (answer from documents, a store, or
by stage-3 retrieval over a store)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from clara.cli.common import AppContext, format_option, emit_record, pass_app
from clara.cli.train import _SKIP, config_options, resolve_data, train_group
from clara.errors import ClaraError
from clara.method.tasks import ClaraTrainConfig


def _checkpoint_dir(ws, ref: str) -> Path:
    """A CLaRa checkpoint folder, or a run id of the workspace (its best, else last)."""
    path = Path(ref).expanduser()
    if (path / "clara_config.json").is_file():
        return path.resolve()
    from clara.runs import find_run

    adapters = find_run(ws, ref).adapters
    for sub in ("best", "last"):
        if (adapters / sub / "clara_config.json").is_file():
            return (adapters / sub).resolve()
    raise ClaraError(f"{ref}: no CLaRa checkpoint (clara_config.json) there")


def _stage_command(stage: str, example: str):
    @click.option("--model", "-m", "model", default=None,
                  help="Base model: workspace model name, local mlx-lm folder or HF id.")
    @click.option("--data", "-d", "data", default=None,
                  help=f"Dataset in the {stage} row format (name or folder with train.jsonl).")
    @click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                  default=None, help="TOML file of settings; flags override it.")
    @click.option("--name", default=None, help="Run id (default: clara-STAGE-DATE-TIME-XXXX).")
    @click.option("--detach", is_flag=True, help="Start in the background and print the run id.")
    @config_options(ClaraTrainConfig, skip=_SKIP)
    @pass_app
    def command(app: AppContext, model, data, config_file, name, detach, **flags):
        from clara.cli.runs import launch
        from clara.models.registry import model_source
        from clara.runs import create_run
        from clara.train.config import merge_config

        ws = app.workspace()
        overrides = {k: v for k, v in flags.items() if v not in (None, (), [])}
        overrides.update({"model": model, "data": data})
        cfg = merge_config(ClaraTrainConfig, config_file, overrides)
        if not cfg.model and not cfg.init_from:
            raise ClaraError("model: is required (or --init-from an earlier stage)")
        if not cfg.data:
            raise ClaraError("data: is required")
        resolved = {"data": str(resolve_data(ws, cfg.data))}
        if cfg.init_from:
            cfg.init_from = str(_checkpoint_dir(ws, cfg.init_from))
            resolved["init_from"] = cfg.init_from
        if cfg.model:
            resolved["model"] = model_source(ws, cfg.model)
        run = create_run(ws, f"clara-{stage}", asdict(cfg), resolved=resolved, name=name)
        launch(run, detach)

    command.__doc__ = (f"Train CLaRa {stage} ({_STAGE_HELP[stage]}).\n\n"
                       "Runs in its own process; checkpoints (adapters + memory rows + "
                       "clara_config.json) go to runs/ID/adapters/{best,last,step-N}.\n\n"
                       f"Example: {example}")
    return train_group.command(stage, context_settings={"max_content_width": 110})(command)


_STAGE_HELP = {"stage1": "compressor pretraining: QA and paraphrase from one compressed document",
               "stage2": "instruction tuning: answer from top_k compressed documents, fresh "
                         "generator",
               "stage3": "end-to-end: the query reasoner picks top_k of the candidates, "
                         "compressor frozen"}
_stage_command("stage1", "clara train stage1 -m tiny -d facts-s1 --compression-rate 32 --iters 300")
_stage_command("stage2", "clara train stage2 -d facts-s2 --init-from clara-stage1-20250101-1200-ab12")
_stage_command("stage3", "clara train stage3 -d facts-s3 --init-from RUN_ID --top-k 5")


def _read_docs(docs: tuple[str, ...], docs_file: str | None) -> list[str]:
    out = list(docs)
    if docs_file:
        from clara import io

        for line, row in io.iter_jsonl(docs_file):
            text = row.get("text") if isinstance(row, dict) else row
            if not isinstance(text, str):
                from clara.errors import DataError

                raise DataError(docs_file, line, "text", "must be a string (or the line a string)")
            out.append(text)
    return out


@click.command("compress")
@click.option("--checkpoint", "-c", "ckpt", required=True, help="CLaRa checkpoint folder or run id.")
@click.option("--docs-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help='JSONL of documents: {"id": ..., "text": ...} per line (or plain strings).')
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Store folder to write (vectors.safetensors + index.json).")
@click.option("--batch-size", default=8, show_default=True, help="Documents per forward.")
@format_option
@pass_app
def compress_cmd(app: AppContext, ckpt, docs_file, out, batch_size, fmt):
    """Compress documents once into a reusable store for `clara ask --store`.

    Example: clara compress -c clara-stage3-20250101-1200-ab12 --docs-file docs.jsonl --out store
    """
    from clara import io
    from clara.method import checkpoint, inference

    model = checkpoint.load(_checkpoint_dir(app.workspace(), ckpt), inference=True)
    rows = [(line, r) for line, r in io.iter_jsonl(docs_file)]
    texts = _read_docs((), docs_file)
    ids = [str(r.get("id", line)) if isinstance(r, dict) else str(line) for line, r in rows]
    store = inference.CompressedStore.build(model, texts, out, ids=ids, batch_size=batch_size)
    emit_record({"store": str(store.path), "documents": len(texts),
                 "n_mem": store.meta["n_mem"], "hidden_size": store.meta["hidden_size"]}, fmt)


@click.command("ask")
@click.argument("question")
@click.option("--checkpoint", "-c", "ckpt", required=True, help="CLaRa checkpoint folder or run id.")
@click.option("--doc", "docs", multiple=True, help="A document text (repeat for several).")
@click.option("--docs-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSONL of documents to compress and answer from.")
@click.option("--store", type=click.Path(exists=True, file_okay=False), default=None,
              help="Store from `clara compress`: retrieve its top-k with the query reasoner.")
@click.option("--top-k", type=int, default=None, help="Documents retrieved from the store.")
@click.option("--max-tokens", default=128, show_default=True, help="Longest answer.")
@click.option("--temp", default=0.0, show_default=True, help="Sampling temperature (0: greedy).")
@pass_app
def ask_cmd(app: AppContext, question, ckpt, docs, docs_file, store, top_k, max_tokens, temp):
    """Answer a question with a CLaRa model, streaming the answer.

    Example: clara ask -c clara-stage2-20250101-1200-ab12 --doc "Acme was founded in 1931." "When was Acme founded?"
    """
    from clara.method import checkpoint, inference

    model = checkpoint.load(_checkpoint_dir(app.workspace(), ckpt), inference=True)
    texts = _read_docs(docs, docs_file)
    if store and texts:
        raise ClaraError("give documents or --store, not both")
    if store:
        pool = inference.CompressedStore.open(store)
        pool.check(model)
        idx, scores = inference.retrieve(model, question, pool.vectors, top_k)
        click.echo("retrieved: " + ", ".join(f"{pool.docs[i]['id']} ({s:.3f})"
                                             for i, s in zip(idx, scores)), err=True)
        compressed = pool.vectors[__import__("mlx.core").core.array(idx)]
    elif texts:
        compressed = inference.compress_documents(model, texts)
    else:
        raise ClaraError("no documents: give --doc, --docs-file or --store")
    for r in inference.stream_answer(model, question, compressed, max_tokens=max_tokens,
                                     temp=temp):
        click.echo(r.text, nl=False)
    click.echo()


COMMANDS = [compress_cmd, ask_cmd]
