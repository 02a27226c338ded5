"""`clara train`: start training runs. Each run is its own process (`python -m clara.worker`)."""

from __future__ import annotations

import dataclasses

import click

from clara.cli.common import AppContext, pass_app
from clara.train.config import TrainConfig

# The flags below are made from TrainConfig's fields, so a new setting is a flag at once.
_SKIP = {"model", "data"}


def _click_type(annotation: str):
    a = annotation.replace(" ", "")
    if a.startswith("int"):
        return int
    if a.startswith("float"):
        return float
    return str


def config_options(cls, skip=frozenset()):
    def decorate(fn):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            flag = "--" + f.name.replace("_", "-")
            help_ = f.metadata.get("help", "")
            default = f.default if f.default is not dataclasses.MISSING else None
            if str(f.type) == "bool":
                neg = "--no-" + f.name.replace("_", "-")
                opt = click.option(f"{flag}/{neg}", f.name, default=None,
                                   help=f"{help_} [default: {'on' if default else 'off'}]")
            elif str(f.type).startswith("list"):
                opt = click.option(flag, f.name, multiple=True, metavar="KEY",
                                   help=f"{help_} (repeat the flag for several)")
            else:
                opt = click.option(flag, f.name, type=_click_type(str(f.type)), default=None,
                                   help=f"{help_} [default: {default}]")
            fn = opt(fn)
        return fn
    return decorate


@click.group("train")
def train_group():
    """Train models: LoRA/DoRA/full fine-tuning (and the CLaRa stages)."""


def run_options(prefix: str):
    """The options every training command shares: a settings file, the run id, detaching and
    the pre-flight estimate."""
    def wrap(f):
        for opt in reversed([
            click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                         default=None, help="TOML file of settings; flags override it."),
            click.option("--name", default=None,
                         help=f"Run id (default: {prefix}-DATE-TIME-XXXX)."),
            click.option("--detach", is_flag=True,
                         help="Start in the background and print the run id."),
            click.option("--estimate", "estimate_only", is_flag=True,
                         help="Print the estimated peak memory and time per step, and exit "
                              "(no run)."),
        ]):
            f = opt(f)
        return f
    return wrap


@train_group.command("lora", context_settings={"max_content_width": 110})
@click.option("--model", "-m", "model", default=None,
              help="Base model: workspace model name, local mlx-lm folder or HF id.")
@click.option("--data", "-d", "data", default=None,
              help="Dataset: workspace dataset name or a folder with train.jsonl/valid.jsonl.")
@run_options("lora")
@config_options(TrainConfig, skip=_SKIP)
@pass_app
def train_lora(app: AppContext, model, data, config_file, name, detach, estimate_only=False,
               **flags):
    """Fine-tune a model with LoRA, DoRA or full fine-tuning on text (cpt) or chat (sft) data.

    Runs in its own process; the run folder (runs/ID) has run.toml, status.json, metrics.jsonl,
    events.jsonl, adapters/{best,last,step-N}, log.txt and, at the end, report.md.

    Example: clara train lora -m tiny -d notes-chat --mode sft --iters 200 --batch-size 4
    """
    from clara.cli.runs import launch
    from clara.train.launch import lora_run

    overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    overrides = {k: v for k, v in overrides.items() if v not in (None, [])}
    overrides.update({"model": model, "data": data})
    if estimate_only:
        echo_estimate(app, "lora", overrides, config_file)
        return
    run = lora_run(app.workspace(), overrides, config_file, name)
    say_auto_fit(run)
    launch(run, detach)


def say_auto_fit(run) -> None:
    """The line of what the run's creation switched on to fit the device (lora_run and
    stage_run record it in run.toml: clara.train.estimate.auto_fit), on stderr."""
    note = run.config().get("auto_fit")
    if note:
        click.echo(note, err=True)


def echo_estimate(app: AppContext, kind: str, overrides: dict, config_file) -> None:
    """--estimate: one line on stdout (of the run as it would start, switches auto_fit turns
    on included), a warning on stderr when over the device's budget."""
    from clara.train.estimate import auto_fit, estimate_request

    overrides, line = auto_fit(app.workspace(), kind, overrides, config_file)
    if line:
        click.echo(line, err=True)
    est = estimate_request(app.workspace(), kind, overrides, config_file)
    click.echo(est.line())
    if est.over_budget:
        click.echo(f"warning: the estimated peak passes 90% of {est.budget_what} "
                   f"({est.budget_bytes / 1e9:.1f} GB)", err=True)


COMMANDS = [train_group]
