"""`clara chat`: talk to a base model with any adapter (LoRA run, mlx-lm adapter folder, CLaRa
run with documents). One answer with --prompt; an interactive loop without it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clara.cli.common import AppContext, format_option, pass_app
from clara.errors import UserError

HELP = """Commands: /reset (forget the conversation), /adapter REF|none (switch adapter, base
stays loaded), /think show|hide|ban, /temp T, /quit (or Ctrl-D)."""


def _stats_line(reply) -> str:
    return (f"[{reply.prompt_tokens} prompt + {reply.generation_tokens} tokens, "
            f"{reply.generation_tps:.1f} tok/s, ttft {reply.ttft:.2f}s, "
            f"{reply.latency:.2f}s, peak {reply.peak_memory:.3f} GB]")


def _print_stream(session, prompt: str, quiet: bool = False):
    shown_reasoning = False
    for d in session.stream(prompt):
        if d.reasoning:
            if not shown_reasoning:
                click.secho("[reasoning] ", fg="bright_black", nl=False)
                shown_reasoning = True
            click.secho(d.text, fg="bright_black", nl=False)
        else:
            if shown_reasoning:
                click.echo("\n[answer] ", nl=False)
                shown_reasoning = False
            click.echo(d.text, nl=False)
    click.echo()
    if not quiet:
        click.secho(_stats_line(session.last), fg="bright_black", err=True)
    return session.last


def _documents(ws, doc_files, sources: bool, chunk_tokens: int, memory: str | None = None):
    """(texts, ids) from files, the workspace's source chunks and/or a memory's pairs."""
    texts, ids = [], []
    for f in doc_files:
        p = Path(f)
        texts.append(p.read_text(encoding="utf-8"))
        ids.append(p.name)
    if sources:
        from clara.evaluation.rag import ChunkIndex

        index = ChunkIndex.from_workspace(ws, chunk_tokens)
        texts += index.texts
        ids += [c.id for c in index.chunks]
    if memory:
        from clara.chat.memory import read_memory

        entries, entry_ids = read_memory(ws, memory)
        texts += entries
        ids += entry_ids
    return texts, ids


@click.command("chat", context_settings={"max_content_width": 110})
@click.option("--model", "-m", default=None,
              help="Base model: workspace model name, local folder or HF id (default: the "
                   "adapter's base).")
@click.option("--adapter", "-a", default=None,
              help="RUN (its best, else last checkpoint), RUN:best|last|step-N, an mlx-lm "
                   "adapter folder or a CLaRa checkpoint folder.")
@click.option("--prompt", "-p", default=None, help="Answer this one prompt and exit.")
@click.option("--temperature", "--temp", "temperature", type=float, default=0.0,
              show_default=True, help="0 decodes greedily.")
@click.option("--top-p", type=float, default=1.0, show_default=True,
              help="Nucleus sampling (1: off).")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--system", "-s", default=None, help="System prompt.")
@click.option("--multi-turn/--single-turn", default=True, show_default=True,
              help="Send earlier turns with each prompt.")
@click.option("--show-reasoning", is_flag=True, help="Print the <think> block too.")
@click.option("--no-think", "ban", is_flag=True,
              help="Ban the reasoning tokens while generating (faster).")
@click.option("--seed", type=int, default=None, help="Sampler seed.")
@click.option("--doc", "docs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Attach a text file as a document (repeat; CLaRa compresses them, a plain "
                   "model gets the top-k of them as context).")
@click.option("--sources", is_flag=True, help="Attach the workspace's source chunks.")
@click.option("--store", type=click.Path(exists=True, file_okay=False), default=None,
              help="Attach a compressed-document store (CLaRa).")
@click.option("--memory", default=None, metavar="DATASET",
              help="Attach a QA dataset's pairs (or a QA .jsonl file's) as documents, one per "
                   "pair: a plain model gets the top-k BM25 ranks for each prompt (a model "
                   "fine-tuned with `data build sft --memory-k K` answers from them).")
@click.option("--top-k", type=int, default=None,
              help="Documents per prompt: a plain model's BM25 top-k of the attached ones "
                   "(default 3), a CLaRa stage-3 run's retrieved ones (default: the run's).")
@click.option("--chunk-tokens", type=int, default=128, show_default=True,
              help="Words per source chunk with --sources.")
@format_option
@pass_app
def chat(app: AppContext, model, adapter, prompt, temperature, top_p, max_tokens, system,
         multi_turn, show_reasoning, ban, seed, docs, sources, memory, top_k, store,
         chunk_tokens, fmt):
    """Chat with a model and an adapter; every exchange is logged in chats/ (JSONL and CSV).

    Example: clara chat -m tiny -a lora-20250101-120000-ab12:best -p "Who founded it?"

    Example: clara chat -a demo-handbook-sft --memory handbook-qa --top-k 2 -p "Who set it up?"
    """
    from clara.chat.engine import ChatEngine, ChatSettings

    ws = app.workspace()
    settings = ChatSettings(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                            system=system, multi_turn=multi_turn,
                            show_reasoning=show_reasoning, ban_thinking=ban, seed=seed,
                            top_k=top_k)
    texts, ids = _documents(ws, docs, sources, chunk_tokens, memory)
    engine = ChatEngine(ws)
    session = engine.session(model, adapter, settings, documents=texts or None,
                             doc_ids=ids or None, store=store)
    if prompt is not None:
        if fmt == "json":
            reply = session.ask(prompt)
            click.echo(json.dumps(session.record(prompt, reply), indent=2, ensure_ascii=False))
        else:
            _print_stream(session, prompt)
        return
    label = session.adapter.label if session.adapter else "no adapter"
    click.secho(f"{session.model_label} + {label}. {HELP}", fg="bright_black", err=True)
    while True:
        try:
            line = click.prompt(click.style("you", fg="cyan"), prompt_suffix="> ",
                                default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo()
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            arg = arg.strip()
            try:
                if cmd in ("/quit", "/exit", "/q"):
                    break
                elif cmd == "/reset":
                    session.reset()
                    click.echo("(conversation cleared)")
                elif cmd == "/adapter":
                    session.set_adapter(None if arg in ("", "none") else arg)
                    click.echo(f"(adapter: {session.adapter.label if session.adapter else 'none'})")
                elif cmd == "/think" and arg in ("show", "hide", "ban"):
                    session.settings.show_reasoning = arg == "show"
                    session.settings.ban_thinking = arg == "ban"
                elif cmd == "/temp":
                    session.settings.temperature = float(arg)
                    session.settings.validate()
                else:
                    click.echo(HELP)
            except (UserError, ValueError) as e:
                click.secho(f"error: {e}", fg="red", err=True)
            continue
        try:
            _print_stream(session, line)
        except UserError as e:
            click.secho(f"error: {e}", fg="red", err=True)


COMMANDS = [chat]
