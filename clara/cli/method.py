"""CLaRa commands: `clara train stage1|stage2|stage3` (one stage run), `clara train pipeline`
(stages 1 -> 2 -> 3 chained by the hand-off rules), `clara pipelines list|show|stop|resume`,
`clara compress` (a reusable store of compressed documents) and `clara ask` (answer from
documents, or by stage-3 retrieval over a store)."""

from __future__ import annotations

from pathlib import Path

import click

from clara.cli.common import AppContext, emit_record, emit_rows, format_option, pass_app
from clara.cli.train import _SKIP, config_options, run_options, train_group
from clara.errors import UserError, DataError
from clara.refs import CLARA, GRAMMAR, resolve
from clara.method.pipeline import STAGES
from clara.method.config import ClaraTrainConfig

_from_option = click.option(
    "--from", "--init-from", "from_ref", default=None, metavar="RUN",
    help=f"Start from an earlier stage ({GRAMMAR}; a run: its best, else last checkpoint). "
         "The run keeps that checkpoint's geometry. Stage 2 keeps its compressor and starts a "
         "fresh generator; stage 3 loads both and copies the compressor into the query "
         "reasoner.")


def _stage_command(stage: str, example: str):
    @click.option("--model", "-m", "model", default=None,
                  help="Base model: workspace model name, local mlx-lm folder or HF id.")
    @click.option("--data", "-d", "data", default=None,
                  help=f"Dataset in the {stage} row format (name or folder with train.jsonl).")
    @_from_option
    @run_options("clara-STAGE")
    @config_options(ClaraTrainConfig, skip=_SKIP | {"init_from"})
    @pass_app
    def command(app: AppContext, model, data, from_ref, config_file, name, detach,
                estimate_only=False, **flags):
        from clara.cli.runs import launch
        from clara.method.launch import stage_run

        overrides = {k: v for k, v in flags.items() if v not in (None, (), [])}
        overrides.update({"model": model, "data": data, "init_from": from_ref})
        if estimate_only:
            from clara.cli.train import echo_estimate

            return echo_estimate(app, stage, overrides, config_file)
        from clara.cli.train import say_auto_fit

        run = stage_run(app.workspace(), stage, overrides, config_file, name)
        say_auto_fit(run)
        launch(run, detach)

    command.__doc__ = (f"Train CLaRa {stage} ({_STAGE_HELP[stage]}).\n\n"
                       "Runs in its own process; checkpoints (adapters + memory rows + "
                       "clara_config.json) go to runs/ID/adapters/{best,last,step-N}; metrics "
                       "log ce, mse (and in stage 3 recall@k / precision@k) as separate series."
                       f"\n\nExample: {example}")
    return train_group.command(stage, context_settings={"max_content_width": 110})(command)


_STAGE_HELP = {"stage1": "compressor pretraining: QA and paraphrase from one compressed document",
               "stage2": "instruction tuning: answer from top_k compressed documents, fresh "
                         "generator",
               "stage3": "end-to-end: the query reasoner picks top_k of the candidates, "
                         "compressor frozen"}
_stage_command("stage1", "clara train stage1 -m tiny -d toy-stage1 --compression-rate 4 "
                         "--doc-max-tokens 64 --iters 300")
_stage_command("stage2", "clara train stage2 -m tiny -d toy-stage2 --from clara-stage1-20250101-1200-ab12")
_stage_command("stage3", "clara train stage3 -m tiny -d toy-stage3 --from RUN_ID --top-k 5")


# ---------------------------------------------------------------------------- pipeline
def _stage_options(fn):
    for n in (3, 2, 1):
        fn = click.option(f"--stage{n}-lr", f"stage{n}_lr", type=float, default=None,
                          help=f"Learning rate of stage {n} (default: --learning-rate).")(fn)
        fn = click.option(f"--stage{n}-epochs", f"stage{n}_epochs", type=float, default=None,
                          help=f"Epochs of stage {n} (default: --epochs).")(fn)
        fn = click.option(f"--stage{n}-iters", f"stage{n}_iters", type=int, default=None,
                          help=f"Optimizer steps of stage {n} (default: --iters).")(fn)
        fn = click.option(f"--stage{n}", f"stage{n}_data", default=None, metavar="DATASET",
                          help=f"Stage-{n} dataset (default: PREFIX-stage{n} of --data).")(fn)
    return fn


def _follow_stage(stage: str, run, proc) -> dict:
    from clara.cli.runs import follow_run

    n = STAGES.index(stage) + 1
    src = run.config().get("from_run")
    click.echo(f"[{n}/3] {stage}: run {run.id}" + (f" (from {src})" if src else ""), err=True)
    st = follow_run(run, proc)
    line = f"[{n}/3] {stage}: {st.get('status')}"
    if st.get("reason") == "early_stop":
        line += " (early stop)"
    if st.get("best_step"):
        line += f", best step {st['best_step']} val loss {st.get('best_val_loss'):.4f}"
    click.echo(line, err=True)
    return st


def _run_pipeline(pipe, detach: bool) -> None:
    from clara.method.pipeline import drive, start_driver

    if detach:
        start_driver(pipe)
        click.echo(pipe.id)
        return
    click.echo(f"pipeline {pipe.id}  (folder {pipe.path}; Ctrl-C stops the running stage, "
               f"resume with: clara pipelines resume {pipe.id})", err=True)
    st = drive(pipe, _follow_stage)
    _echo_pipeline(st)
    if st["status"] != "completed":
        from clara.runs import outcome_code

        run = pipe.current_run()
        raise UserError(f"pipeline {pipe.id} {st['status']}: {st.get('message') or ''}"
                         .rstrip(": ") + f" (resume with: clara pipelines resume {pipe.id})",
                         exit_code=outcome_code(run.status() if run is not None else st))


def _echo_pipeline(st: dict) -> None:
    from clara.method.pipeline import report_lines

    click.echo(f"pipeline {st['id']}: {st['status']}")
    for s in st["stages"]:
        click.echo(f"  {s['stage']}  {s['status']:<11} {s['run'] or '-'}"
                   + (f"  step {s['step']}/{s['total_steps']}" if s["total_steps"] else ""))
    for line in report_lines(st.get("report") or {}):
        click.echo(line)
    if st["status"] == "completed" and st.get("message"):
        click.echo(f"warning: {st['message']}", err=True)


@train_group.command("pipeline", context_settings={"max_content_width": 110})
@click.option("--model", "-m", "model", default=None,
              help="Base model: workspace model name, local mlx-lm folder or HF id.")
@click.option("--data", "-d", "data", default=None, metavar="PREFIX",
              help="Dataset prefix: uses PREFIX-stage1, PREFIX-stage2, PREFIX-stage3 (as made by "
                   "clara data synth PREFIX).")
@_stage_options
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML file of shared settings; flags override it.")
@click.option("--name", default=None, help="Pipeline id (default: clara-pipeline-DATE-TIME-XXXX);"
                                           " its runs are ID-stage1, ID-stage2, ID-stage3.")
@click.option("--detach", is_flag=True, help="Run in the background and print the pipeline id.")
@config_options(ClaraTrainConfig, skip=_SKIP | {"init_from"})
@pass_app
def train_pipeline(app: AppContext, model, data, config_file, name, detach, **flags):
    """Train CLaRa stage 1, then stage 2 from stage 1's best (else last) checkpoint, then stage 3
    from stage 2's: three normal runs (runs/ID-stageN) and a pipeline record
    (runs/ID/pipeline.toml). Shared flags apply to every stage; --stageN-iters/-epochs/-lr to
    one. Stage 2's documents per question come from its rows; --top-k is how many candidates
    stage 3 selects (default: as many as stage 2 had).

    Example: clara train pipeline -m tiny --data toy --compression-rate 4 --doc-max-tokens 64 --stage1-iters 300 --stage2-iters 200 --stage3-iters 150
    """
    from clara.method.launch import pipeline
    from clara.plan import split_pipeline_values

    shared, per_stage, _, explicit = split_pipeline_values(flags)
    overrides = {k: v for k, v in shared.items() if v not in (None, (), [])}
    overrides["model"] = model
    pipe = pipeline(app.workspace(), overrides, per_stage, data, explicit, config_file, name)
    _run_pipeline(pipe, detach)


@click.group("pipelines")
def pipelines_group():
    """CLaRa pipelines (stage 1 -> 2 -> 3): list, show, stop, resume."""


@pipelines_group.command("list")
@format_option
@pass_app
def pipelines_list(app: AppContext, fmt):
    """List the pipelines of the workspace with the status of each stage.

    Example: clara pipelines list --format json
    """
    from clara.method.pipeline import list_pipelines

    rows = []
    for p in list_pipelines(app.workspace()):
        st = p.status()
        rows.append({**{k: st[k] for k in ("id", "status", "stage", "model", "created")},
                     **{s["stage"]: s["status"] for s in st["stages"]}, "stages": st["stages"]})
    emit_rows(rows, [("id", "PIPELINE"), ("status", "STATUS"), ("stage1", "STAGE1"),
                     ("stage2", "STAGE2"), ("stage3", "STAGE3"), ("model", "MODEL"),
                     ("created", "CREATED")], fmt,
              empty="no pipelines (start one with: clara train pipeline ...)")


@pipelines_group.command("show")
@click.argument("ref", metavar="PIPELINE")
@format_option
@pass_app
def pipelines_show(app: AppContext, ref, fmt):
    """Show a pipeline (id, prefix, last, or one of its run ids): its stages, runs and steps.

    Example: clara pipelines show last
    """
    from clara.method.pipeline import find_pipeline

    st = find_pipeline(app.workspace(), ref).status()
    if fmt == "json":
        emit_record(st, fmt)
    else:
        _echo_pipeline(st)


@pipelines_group.command("stop")
@click.argument("ref", metavar="PIPELINE")
@pass_app
def pipelines_stop(app: AppContext, ref):
    """Stop a pipeline: its running stage saves a checkpoint and stops; no later stage starts.

    Example: clara pipelines stop last
    """
    from clara.method.pipeline import find_pipeline, stop_pipeline

    pipe = find_pipeline(app.workspace(), ref)
    if not stop_pipeline(pipe):
        raise UserError(f"pipeline {pipe.id} is not running ({pipe.status()['status']})")
    click.echo(f"asked pipeline {pipe.id} to stop")


@pipelines_group.command("resume")
@click.argument("ref", metavar="PIPELINE")
@click.option("--detach", is_flag=True, help="Run in the background and print the pipeline id.")
@pass_app
def pipelines_resume(app: AppContext, ref, detach):
    """Resume a stopped, interrupted or failed pipeline: its unfinished stage continues from its
    last checkpoint, then the later stages run.

    Example: clara pipelines resume last --detach
    """
    from clara.method.pipeline import find_pipeline

    pipe = find_pipeline(app.workspace(), ref)
    st = pipe.status()
    if st["status"] == "completed":
        raise UserError(f"pipeline {pipe.id} is completed: nothing to resume")
    if st["status"] == "running":
        raise UserError(f"pipeline {pipe.id} is running")
    _run_pipeline(pipe, detach)


# ---------------------------------------------------------------------------- compress / ask
def _doc_files(files: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(ids, texts): a .jsonl file gives one document per line ({"id", "text"} or a string);
    any other file is one document."""
    from clara import io

    ids, texts = [], []
    for name in files:
        path = Path(name)
        if path.suffix == ".jsonl":
            for line, row in io.iter_jsonl(path):
                text = row.get("text") if isinstance(row, dict) else row
                if not isinstance(text, str) or not text.strip():
                    raise DataError(path, line, "text",
                                    "must be a non-empty string (or the line a string)")
                ids.append(str(row.get("id", f"{path.name}:{line}")) if isinstance(row, dict)
                           else f"{path.name}:{line}")
                texts.append(text)
        else:
            text = path.read_text(encoding="utf-8")
            if not text.strip():
                raise UserError(f"{path}: empty document")
            ids.append(path.name)
            texts.append(text)
    return ids, texts


_run_option = click.option(
    "--run", "-c", "--checkpoint", "ckpt", required=True, metavar="RUN",
    help=f"CLaRa checkpoint: {GRAMMAR} (a run: its best, else last checkpoint; a pipeline: "
         "its newest stage).")


@click.command("compress")
@_run_option
@click.option("--docs", "--docs-file", "docs_files", required=True, multiple=True,
              type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help='Documents: a JSONL file ({"id", "text"} per line) or a text file (one '
                   'document); repeat for several.')
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Store folder to write (vectors.safetensors + index.json).")
@click.option("--batch-size", default=8, show_default=True, help="Documents per forward.")
@format_option
@pass_app
def compress_cmd(app: AppContext, ckpt, docs_files, out, batch_size, fmt):
    """Compress documents once into a reusable store for `clara ask --store`.

    Example: clara compress --run clara-pipeline-20250101-1200-ab12 --docs toy-docs.jsonl --out store
    """
    from clara.method import checkpoint, inference

    ids, texts = _doc_files(docs_files)
    model = checkpoint.load(resolve(app.workspace(), ckpt, want=CLARA).path, inference=True)
    store = inference.CompressedStore.build(model, texts, out, ids=ids, batch_size=batch_size)
    emit_record({"store": str(store.path), "documents": len(texts),
                 "n_mem": store.meta["n_mem"], "hidden_size": store.meta["hidden_size"]}, fmt)


@click.command("ask")
@click.argument("question")
@_run_option
@click.option("--docs", "--docs-file", "docs_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Documents to compress and answer from: a JSONL file or a text file; repeat "
                   "for several. A stage-3 model given more than top-k picks its top-k.")
@click.option("--doc", "doc_texts", multiple=True, help="A document text (repeat for several).")
@click.option("--store", type=click.Path(exists=True, file_okay=False), default=None,
              help="Store from `clara compress`: retrieve its top-k with the query reasoner.")
@click.option("--top-k", type=int, default=None, help="Documents retrieved (default: the model's).")
@click.option("--max-tokens", default=64, show_default=True, help="Longest answer.")
@click.option("--temp", default=0.0, show_default=True, help="Sampling temperature (0: greedy).")
@format_option
@pass_app
def ask_cmd(app: AppContext, question, ckpt, docs_files, doc_texts, store, top_k, max_tokens,
            temp, fmt):
    """Answer a question with a CLaRa model from compressed documents; with retrieval (--store,
    or a stage-3 model given more documents than its top-k) also print the chosen documents.

    Example: clara ask --run clara-pipeline-20250101-1200-ab12 --store store "Who invented the tidal loom?"
    """
    from clara.chat.engine import ChatEngine, ChatSettings

    ids, texts = _doc_files(docs_files)  # bad input is refused before the model loads
    ids += [f"doc{i}" for i in range(len(doc_texts))]
    texts += list(doc_texts)
    if store and texts:
        raise UserError("give documents (--docs/--doc) or --store, not both")
    if not store and not texts:
        raise UserError("no documents: give --docs FILE, --doc TEXT or --store STORE")
    settings = ChatSettings(temperature=temp, max_tokens=max_tokens, top_k=top_k).validate()
    ws = app.workspace()
    engine = ChatEngine(ws, log=False)
    # a chat session over the checkpoint: it compresses the documents (or opens the store) and
    # lets a stage-3 model pick its top-k (clara.method.inference.select)
    session = engine.session(None, resolve(ws, ckpt, want=CLARA), settings,
                             documents=texts or None, doc_ids=ids or None, store=store)
    if store and "query_reasoner" not in session.entry.model.adapter_names():
        raise UserError("this model has no query reasoner (retrieval from a store needs a "
                         "stage-3 model)")
    if fmt == "json":
        reply = session.ask(question)
    else:
        for delta in session.stream(question):
            click.echo(delta.text, nl=False)
        click.echo()
        reply = session.last
    chosen = None
    if reply.retrieved is not None:
        if store:
            from clara.method.inference import CompressedStore

            texts = [d.get("text") for d in CompressedStore.open(store).docs]
        chosen = [{"rank": r + 1, "id": doc_id, "score": score, "text": texts[i]}
                  for r, (i, doc_id, score) in enumerate(zip(reply.retrieved, reply.documents,
                                                             reply.scores))]
    if fmt == "json":
        emit_record({"question": question, "answer": reply.text.strip(), "documents": chosen},
                    fmt)
        return
    if chosen:
        click.echo("documents:")
        for d in chosen:
            text = (d["text"] or "").replace("\n", " ")
            click.echo(f"  {d['rank']}. {d['id']} ({d['score']:.3f})"
                       + (f"  {text[:100]}" + ("..." if len(text) > 100 else "") if text else ""))


COMMANDS = [compress_cmd, ask_cmd, pipelines_group]
