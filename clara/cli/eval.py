"""`clara eval`: score configurations (closed book, adapters, raw-text RAG, CLaRa) on a QA set;
`clara eval compare`: models side by side plus the forgetting probe; `list` and `show`."""

from __future__ import annotations

import click

from clara.cli.common import AppContext, emit_record, emit_rows, format_option, pass_app
from clara.errors import UserError


def _progress(fmt: str):
    """A counter rewritten in place on a terminal; without one (a log file, a pipe), a line
    per tenth of the questions, so the output stays readable."""
    if fmt == "json":
        return None
    import sys

    tty = sys.stderr.isatty()

    def show(label: str, done: int, total: int) -> None:
        if tty:
            click.echo(f"\r{label}: {done}/{total}", nl=done == total, err=True)
        elif done == total or done % max(1, total // 10) == 0:
            click.echo(f"{label}: {done}/{total}", err=True)

    return show


def _summary_columns(rows):
    from clara.evaluation.runner import SUMMARY_COLUMNS

    return [c for c in SUMMARY_COLUMNS if any(r.get(c[0]) is not None for r in rows)]


def _emit_result(result, fmt: str, side_by_side: bool = False) -> None:
    from clara.evaluation.runner import _md

    if fmt == "json":
        emit_record({"id": result.id, "path": str(result.path), "summary": result.summary},
                    "json")
        return
    emit_rows(result.summary, _summary_columns(result.summary), "table")
    if side_by_side:
        configs = list(dict.fromkeys(r["config"] for r in result.results))
        by_q: dict = {}
        for r in result.results:
            by_q.setdefault(r["id"], {})[r["config"]] = r
        rows = []
        for rs in by_q.values():
            first = next(iter(rs.values()))
            row = {"question": _md(first["question"], 40), "gold": _md(first["gold"], 30)}
            for c in configs:
                row[c] = (f"{_md(rs[c]['answer'], 30) or '(empty)'} F1 {rs[c]['f1']:.2f}"
                          if c in rs else "-")
            rows.append(row)
        click.echo()
        emit_rows(rows, [("question", "question"), ("gold", "gold")] + [(c, c) for c in configs],
                  "table")
    click.echo(f"\nwritten to {result.path}")


common_options = [
    click.option("--data", "-d", default=None,
                 help="QA file (JSONL) or dataset name/folder (its test, else valid split)."),
    click.option("--model", "-m", default=None,
                 help="Base model (default: the base of the first adapter)."),
    click.option("--split", default=None, help="Dataset split to read."),
    click.option("--limit", type=int, default=None, help="Only the first N questions."),
    click.option("--top-k", type=int, default=3, show_default=True,
                 help="Chunks retrieved for rag / clara."),
    click.option("--max-tokens", type=int, default=64, show_default=True),
    click.option("--system", default=None, help="System prompt."),
    click.option("--think/--no-think", default=False, show_default=True,
                 help="Allow the reasoning block (off: its tokens are banned; faster)."),
    click.option("--name", default=None, help="Evaluation id (default: eval-DATE-TIME-XXXX)."),
    click.option("--memory", default=None, metavar="DATASET",
                 help="QA dataset or file whose BM25 top-k pairs memory configurations get."),
]


def with_options(fn):
    for opt in reversed(common_options):
        fn = opt(fn)
    return fn


@click.group("eval", invoke_without_command=True, context_settings={"max_content_width": 110})
@with_options
@click.option("--config", "-c", "configs", multiple=True,
              help="closed | closed=ADAPTER | rag | rag=ADAPTER | clara=RUN | "
                   "clara-retrieval=RUN | memory=ADAPTER (repeat; default: closed).")
@click.option("--retention", type=int, default=0, show_default=True,
              help="Also ask N bundled general questions per configuration (forgetting).")
@click.option("--chunk-tokens", type=int, default=128, show_default=True,
              help="Words per source chunk for rag / clara retrieval.")
@click.option("--chunk-overlap", type=int, default=16, show_default=True,
              help="Words shared by consecutive source chunks.")
@format_option
@click.pass_context
def eval_group(ctx, data, model, split, limit, top_k, max_tokens, system, think, name, memory,
               configs, retention, chunk_tokens, chunk_overlap, fmt):
    """Evaluate configurations on a QA set: EM, F1, cover-EM, keyword match, recall@k,
    latency and prompt tokens; results in evals/ID/.

    Example: clara eval -d data/eval_questions.jsonl -m tiny -c closed -c closed=RUN -c rag
    """
    if ctx.invoked_subcommand is not None:
        return
    from clara.evaluation.runner import EvalConfig, run_eval

    if not data:
        raise click.UsageError("--data is required (or use a subcommand: compare, list, show)")
    app: AppContext = ctx.find_object(AppContext)
    ws = app.workspace()
    cfg = EvalConfig(data=data, configs=list(configs) or ["closed"], model=model, split=split,
                     limit=limit, top_k=top_k, max_tokens=max_tokens, system=system,
                     ban_thinking=not think, retention=retention, name=name,
                     chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, memory=memory)
    result = run_eval(ws, cfg, progress=_progress(fmt))
    _emit_result(result, fmt, side_by_side=len(cfg.configs) > 1)


@eval_group.command("compare", context_settings={"max_content_width": 110})
@with_options
@click.option("--adapter", "-a", "adapters", multiple=True,
              help="An adapter to compare with the bare base (repeat).")
@click.option("--config", "-c", "configs", multiple=True, help="More configurations to add.")
@click.option("--retention", type=int, default=20, show_default=True,
              help="General questions per model for the forgetting probe (0: off).")
@format_option
@pass_app
def eval_compare(app: AppContext, data, model, split, limit, top_k, max_tokens, system, think,
                 name, memory, adapters, configs, retention, fmt):
    """The bare base and each adapter on the same questions, answers side by side, and the
    retention probe on the bundled general QA set (F1 lost = forgetting).

    Example: clara eval compare -d data/eval_questions.jsonl -m tiny -a RUN_CPT -a RUN_SFT
    """
    from clara.evaluation.runner import compare

    if not data:
        raise click.UsageError("--data is required")
    if not adapters and not configs:
        raise UserError("nothing to compare: give --adapter (repeat) or --config")
    ws = app.workspace()
    result = compare(ws, data, list(adapters), model=model, configs=list(configs),
                     retention=retention, progress=_progress(fmt), split=split, limit=limit,
                     top_k=top_k, max_tokens=max_tokens, system=system,
                     ban_thinking=not think, name=name, memory=memory)
    _emit_result(result, fmt, side_by_side=True)


@eval_group.command("list")
@format_option
@pass_app
def eval_list(app: AppContext, fmt):
    """List the evaluations of the workspace.

    Example: clara eval list --format json
    """
    from clara.evaluation.runner import list_evals

    emit_rows(list_evals(app.workspace()),
              [("id", "id"), ("kind", "kind"), ("questions", "questions"),
               ("configs", "configurations"), ("created", "created")], fmt,
              empty="(no evaluations)")


@eval_group.command("show")
@click.argument("eval_id", default="last")
@click.option("--answers", is_flag=True, help="Also print every answer.")
@format_option
@pass_app
def eval_show(app: AppContext, eval_id, answers, fmt):
    """Show an evaluation's summary (and answers).

    Example: clara eval show last --answers
    """
    from clara.evaluation.runner import read_eval

    doc = read_eval(app.workspace(), eval_id)
    if fmt == "json":
        emit_record(doc if answers else {k: v for k, v in doc.items() if k != "results"}, "json")
        return
    click.echo(f"{doc['id']} ({doc.get('kind')}): {doc['questions']} questions from "
               f"{doc['data_path']}, model {doc['config'].get('model')}")
    emit_rows(doc["summary"], _summary_columns(doc["summary"]), "table")
    if answers:
        click.echo()
        emit_rows(doc["results"], [("set", "set"), ("config", "config"), ("id", "id"),
                                   ("answer", "answer"), ("gold", "gold"), ("f1", "F1")], "table")


COMMANDS = [eval_group]
