"""`clara data build|synth|validate|show|list`: make datasets, check them, look at them."""

from __future__ import annotations

import json

import click

from clara.cli.common import AppContext, emit_record, emit_rows, format_option, pass_app
from clara.cli.data import data_group
from clara.data import validate as V
from clara.data.formats import CHOICES
from clara.errors import UserError, ExitCode

TOKENIZER_HELP = ("Workspace model name or local model folder whose tokenizer counts tokens "
                  "(default: the regex tokenizer, one token per word or punctuation mark).")


def _sources(values: tuple[str, ...]) -> list[str]:
    return [s for v in values for s in v.split(",") if s.strip()]


def _done(path) -> None:
    from clara.data.datasets import read_meta

    rows = read_meta(path).get("rows", {})
    counts = ", ".join(f"{k} {v}" for k, v in rows.items())
    click.echo(f"built dataset {path.name} ({counts}) at {path}")


force_option = click.option("--force", is_flag=True, help="Replace an existing dataset.")
seed_option = click.option("--seed", default=0, show_default=True, help="Seed of the split.")
valid_option = click.option("--valid-share", default=0.1, show_default=True,
                            help="Share of rows held out for valid.jsonl.")


@data_group.group("build")
def build_group():
    """Build a dataset from the workspace's sources and QA files."""


@build_group.command("cpt")
@click.argument("name")
@click.option("--sources", "sources", multiple=True, metavar="ID",
              help="Source to use (repeat, or comma-separate); default: all imported.")
@click.option("--tokenizer", default=None, metavar="MODEL", help=TOKENIZER_HELP)
@click.option("--chunk-tokens", default=256, show_default=True, help="Most tokens per chunk.")
@click.option("--overlap", default=32, show_default=True,
              help="Tokens shared by consecutive chunks.")
@valid_option
@seed_option
@force_option
@pass_app
def build_cpt_cmd(app: AppContext, name, sources, tokenizer, chunk_tokens, overlap, valid_share,
                  seed, force):
    """Continued-pretraining chunks {"text"} of the sources, cut at paragraph or sentence ends.

    Chunks never cross documents; each row keeps its source and pages. Without --tokenizer,
    tokens are counted by a regex (words and punctuation marks), about one token per word.

    Example: clara data build cpt handbook-cpt --chunk-tokens 128 --overlap 16
    """
    from clara.data.builders import CptConfig, build_cpt

    cfg = CptConfig(_sources(sources), tokenizer, chunk_tokens, overlap, valid_share, seed)
    _done(build_cpt(app.workspace(), name, cfg, force=force))


@build_group.command("sft")
@click.argument("name")
@click.option("--qa", required=True, metavar="FILE|DATASET",
              help="QA JSONL file (rows {question, answer}) or a QA dataset (data build qa).")
@click.option("--golden", default=None, metavar="FILE|DATASET",
              help="QA JSONL file or dataset whose rows always go to train, never valid.")
@click.option("--general", type=click.Path(dir_okay=False), default=None,
              help="General-purpose QA to mix in (default: the shipped data/general_qa.jsonl).")
@click.option("--no-general", is_flag=True, help="Mix in no general-purpose QA.")
@click.option("--general-share", default=0.2, show_default=True,
              help="Fraction of the final train set that is general QA.")
@click.option("--system", default=None, metavar="PROMPT", help="System prompt of every chat.")
@click.option("--memory-k", default=0, show_default=True, metavar="K",
              help="Also one row per train pair answering from the top K pairs BM25 ranks "
                   "for its question (its memory: clara chat --memory QA --top-k K).")
@valid_option
@seed_option
@force_option
@pass_app
def build_sft_cmd(app: AppContext, name, qa, golden, general, no_general, general_share, system,
                  memory_k, valid_share, seed, force):
    """Chat rows {"messages": [system?, user, assistant]} from question/answer pairs.

    With --memory-k K, each train pair also gets a row whose prompt holds the K pairs of the QA
    data that BM25 ranks first for its question (its own among them): the model learns to
    answer from a memory of the pairs, which `clara chat --memory` and `clara eval --memory`
    give it the same way (clara.chat.memory).

    Example: clara data build sft handbook-sft --qa data/sample_qa.jsonl --general-share 0.2
    """
    from clara.data.builders import GENERAL_QA, SftConfig, build_sft

    if no_general and general:
        raise UserError("give --general FILE or --no-general, not both")
    cfg = SftConfig(qa, golden, None if no_general else (general or str(GENERAL_QA)),
                    general_share, system, valid_share, seed, memory_k)
    _done(build_sft(app.workspace(), name, cfg, force=force))


@build_group.command("qa")
@click.argument("name")
@click.option("--sources", "sources", multiple=True, metavar="ID",
              help="Source id or file name (repeat, or comma-separate); default: all imported.")
@click.option("--model", "-m", default=None, metavar="MODEL",
              help="Chat model that writes the questions (workspace model, folder or HF id); "
                   "default: the rule-based generator (no model).")
@click.option("--per-chunk", default=3, show_default=True, help="Most pairs kept per chunk.")
@click.option("--chunk-tokens", default=128, show_default=True,
              help="Most tokens per chunk (regex tokens, about one per word).")
@click.option("--golden", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="QA JSONL file whose rows are always kept.")
@click.option("--temperature", default=0.0, show_default=True,
              help="Sampling temperature of the model (0: greedy).")
@click.option("--max-tokens", default=384, show_default=True,
              help="Most tokens of one model reply.")
@click.option("--preview", default=0, metavar="N",
              help="Print the pairs of the first N chunks and write nothing.")
@seed_option
@force_option
@pass_app
def build_qa_cmd(app: AppContext, name, sources, model, per_chunk, chunk_tokens, golden,
                 temperature, max_tokens, preview, seed, force):
    """Question/answer pairs generated from the sources, with provenance (source, page, chunk).

    With --model, a chat model writes questions about each chunk; without one, a rule-based
    generator writes template and cloze ("Fill in the blank") questions about sentences with
    names, numbers, dates and quantities. Every answer must appear in its chunk (the answer or
    all its key terms), else the pair is dropped; duplicates are dropped; golden rows are
    always kept. The dataset feeds `data build sft|stage1|stage2|stage3 --qa NAME`.

    Example: clara data build qa handbook-qa --per-chunk 4 --golden data/sample_qa.jsonl
    """
    from clara.data.qa import QAGenConfig, build_qa, generate_qa

    cfg = QAGenConfig(sources=_sources(sources), model=model, per_chunk=per_chunk,
                      chunk_tokens=chunk_tokens, golden=golden, temperature=temperature,
                      max_tokens=max_tokens, seed=seed)
    ws = app.workspace()
    if preview:
        result = generate_qa(ws, cfg, limit_chunks=preview)
        for row in result.rows:
            where = f"{row.get('source', '?')} p{row.get('page', '?')} #{row.get('chunk', '-')}"
            click.echo(f"[{row['origin']}] {where}\n  Q: {row['question']}\n  A: {row['answer']}")
        click.echo(result.report.line())
        return
    path, report = build_qa(ws, name, cfg, force=force)
    click.echo(report.line())
    _done(path)


@data_group.command("read")
@click.argument("source")
@click.option("--find", "query", default=None, metavar="TEXT",
              help="Print only the lines holding TEXT (case-insensitive), with their page.")
@pass_app
def read_cmd(app: AppContext, source, query):
    """A source's full extracted text, page by page under `── page N ──` lines.

    Example: clara data read karsholm_observatory_handbook.pdf --find ferry
    """
    from clara.data.reading import find_all, page_marked_text
    from clara.data.sources import read_source

    text = page_marked_text(read_source(app.workspace(), source).pages)
    if query is None:
        click.echo(text)
        return
    lines = text.split("\n")
    matches = find_all(text, query)
    for line in dict.fromkeys(m.line for m in matches):
        page = next(m.page for m in matches if m.line == line)
        click.echo(f"p{page}:{line + 1}: {lines[line]}")
    click.echo(f"{len(matches)} match(es) of {query!r}")


def _stage_command(stage: int):
    doc = {
        1: "CLaRa stage 1 (compressor pretraining) rows: per document chunk, a `qa` row with every "
           "QA pair located in it and a `paraphrase` row.\n\n    The paraphrases are simple "
           "rewrites (sentences rotated, phrases moved, synonyms), a weak stand-in for ORIG's "
           "LLM paraphrases.\n\n    Example: clara data build stage1 hb-s1 --qa data/sample_qa.jsonl",
        2: "CLaRa stage 2 (instruction tuning) rows: question, exactly k documents (the gold "
           "chunk and BM25 hard negatives, shuffled), answer.\n\n    Example: clara data build "
           "stage2 hb-s2 --qa data/sample_qa.jsonl --k 5",
        3: "CLaRa stage 3 (end-to-end) rows: question, N candidates (the same N for every row), "
           "answer, pos_index of the gold ones.\n\n    Example: clara data build stage3 hb-s3 "
           "--qa data/sample_qa.jsonl --candidates 20",
    }[stage]

    @click.argument("name")
    @click.option("--qa", required=True, metavar="FILE|DATASET",
                  help="QA JSONL (question, answer, optional keywords, source, doc: the gold "
                       "chunk) or a QA dataset (data build qa).")
    @click.option("--sources", "sources", multiple=True, metavar="ID",
                  help="Source to use (repeat, or comma-separate); default: all imported.")
    @click.option("--tokenizer", default=None, metavar="MODEL", help=TOKENIZER_HELP)
    @click.option("--doc-tokens", default=256, show_default=True,
                  help="Most tokens per document chunk.")
    @valid_option
    @seed_option
    @force_option
    @pass_app
    def command(app: AppContext, name, qa, sources, tokenizer, doc_tokens, valid_share, seed,
                force, **extra):
        from clara.data.builders import StageConfig, build_stage

        cfg = StageConfig(stage=stage, qa=qa, sources=_sources(sources), tokenizer=tokenizer,
                          doc_tokens=doc_tokens, valid_share=valid_share, seed=seed, **extra)
        _done(build_stage(app.workspace(), name, cfg, force=force))

    command.__doc__ = doc
    if stage == 1:
        command = click.option("--paraphrase/--no-paraphrase", default=True, show_default=True,
                               help="Add a paraphrase row per chunk.")(command)
        command = click.option("--paraphrase-model", default=None, metavar="MODEL",
                               help="Chat model that writes the paraphrases (default: simple "
                                    "rewrites, no model).")(command)
    if stage == 2:
        command = click.option("--k", default=5, show_default=True,
                               help="Documents per row.")(command)
    if stage == 3:
        command = click.option("--candidates", default=20, show_default=True,
                               help="Candidates per row (capped by the chunks available).")(
            command)
    return build_group.command(f"stage{stage}")(command)


for _stage in (1, 2, 3):
    _stage_command(_stage)


@data_group.command("synth")
@click.argument("name")
@click.option("--seed", default=0, show_default=True, help="Seed of everything generated.")
@click.option("--entities", default=60, show_default=True,
              help="Made-up cities, firms and people.")
@click.option("--test-share", default=0.2, show_default=True,
              help="Share of entities held out for the test splits.")
@force_option
@pass_app
def synth_cmd(app: AppContext, name, seed, entities, test_share, force):
    """A synthetic knowledge benchmark: NAME-docs, -qa, -cpt, -sft, -stage1, -stage2, -stage3.

    Made-up entities rendered into short documents; single-fact, two-hop and paraphrased
    questions; test splits only about entities never seen in training. Same seed, same bytes.

    Example: clara data synth toy --entities 60 --seed 0
    """
    from clara.data.synth import build_synth

    for path in build_synth(app.workspace(), name, seed, entities, test_share, force):
        _done(path)


@data_group.command("validate")
@click.argument("path")
@click.option("--kind", type=click.Choice(CHOICES), default="auto", show_default=True,
              help="Row format to check; auto: from dataset.toml, else the first row.")
@pass_app
def validate_cmd(app: AppContext, path, kind):
    """Check every row of a JSONL file, a dataset folder or a workspace dataset.

    Prints each problem as `file:line: field: problem` (exit code 3), else `ok: N rows`.

    Example: clara data validate toy-stage2
    """
    from clara.data.datasets import resolve

    ws = _maybe_workspace(app)
    target = resolve(ws, path)
    if target.is_dir() and (target / "train.safetensors").is_file():
        from clara.hrm.data import validate as validate_puzzles  # HRM's grids, not JSONL rows

        meta = validate_puzzles(target)
        click.echo(f"ok: {sum(meta.get('rows', {}).values())} puzzles (puzzles)")
        return
    if target.is_dir():
        kind, counts, errors = V.validate_dataset(target, kind)
        n = sum(counts.values())
    else:
        kind = V.detect_kind(target) if kind == "auto" else V.canonical_kind(kind)
        errors = V.validate_file(target, kind)
        from clara.data.datasets import count_rows

        n = count_rows(target)
    if errors:
        for e in errors:
            click.echo(e.location())
        raise click.exceptions.Exit(ExitCode.BAD_DATA)
    click.echo(f"ok: {n} rows ({kind})")


def _maybe_workspace(app: AppContext):
    try:
        return app.workspace()
    except UserError:
        return None


@data_group.command("show")
@click.argument("dataset")
@click.option("--tokenizer", default=None, metavar="MODEL", help=TOKENIZER_HELP)
@click.option("--max-length", type=int, default=None,
              help="Report the share of rows longer than this many tokens.")
@click.option("--samples", default=3, show_default=True, help="Sample rows to print.")
@click.option("--kind", type=click.Choice(CHOICES), default="auto", show_default=True,
              help="Row format; auto: from dataset.toml, else the first row.")
@click.option("--doc-max-tokens", type=int, default=256, show_default=True,
              help="CLaRa stage datasets: report how much of each document this cuts.")
@format_option
@pass_app
def show_cmd(app: AppContext, dataset, tokenizer, max_length, samples, kind, doc_max_tokens,
             fmt):
    """Rows per split, token-length percentiles, truncation share and sample rows.

    Example: clara data show toy-sft --tokenizer tiny --max-length 64
    """
    from clara.data.chunking import load_tokenizer
    from clara.data.datasets import resolve
    from clara.data.stats import dataset_report

    ws = _maybe_workspace(app)
    report = dataset_report(resolve(ws, dataset), load_tokenizer(tokenizer, ws), max_length,
                            samples, kind, doc_max_tokens)
    if fmt == "json":
        emit_record(report, fmt)
        return
    emit_record(report, fmt, [("name", "name"), ("kind", "kind"), ("format", "format"),
                              ("path", "path"),
                              ("created", "created"), ("tokenizer", "tokenizer")])
    click.echo("")
    rows = [{"split": s, **v} for s, v in report["splits"].items()]
    columns = [("split", "SPLIT"), ("rows", "ROWS"), ("min", "MIN"), ("mean", "MEAN"),
               ("p50", "P50"), ("p90", "P90"), ("max", "MAX")]
    if max_length:
        columns.append(("truncated", f"OVER {max_length}", lambda v: f"{100 * v:.1f}%"))
    emit_rows(rows, columns, fmt, empty="(no splits)")
    docs = [{"split": s, **v["documents"]} for s, v in report["splits"].items()
            if v.get("documents", {}).get("rows")]
    if docs:
        from clara.data.stats import truncation_warning

        pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
        click.echo(f"\ndocuments ({report['tokenizer']} tokens; CLaRa keeps the first "
                   f"{doc_max_tokens}):")
        emit_rows(docs, [("split", "SPLIT"), ("rows", "DOCS"), ("p50", "P50"), ("max", "MAX"),
                         ("cut_docs", "CUT", pct), ("cut_tokens_mean", "LOST MEAN", pct),
                         ("cut_tokens_max", "LOST MAX", pct)], fmt)
        for d in docs:
            line = truncation_warning(d, report["tokenizer"])
            if line:
                click.echo(f"warning: {d['split']}: {line}", err=True)
    for i, row in enumerate(report["samples"]):
        click.echo(f"\nsample {i + 1}:")
        text = json.dumps(row, ensure_ascii=False)
        click.echo(text if len(text) <= 600 else text[:600] + " ...")


@data_group.command("list")
@format_option
@pass_app
def list_cmd(app: AppContext, fmt):
    """The datasets of the workspace: name, kind, rows per split, created.

    Example: clara data list --format json
    """
    from clara.data.datasets import list_datasets

    ws = app.workspace()
    emit_rows(list_datasets(ws), [("name", "NAME"), ("kind", "KIND"), ("train", "TRAIN"),
                                  ("valid", "VALID"), ("test", "TEST"), ("created", "CREATED")],
              fmt, empty=f"no datasets in workspace {ws.name}")


COMMANDS: list = []
