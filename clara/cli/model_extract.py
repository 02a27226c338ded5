"""`clara model extract-text`: the text backbone of a vision / omni checkpoint as a workspace model."""

from __future__ import annotations

import click

from clara.cli.common import AppContext, emit_record, format_option, pass_app
from clara.cli.model import model_group
from clara.io import human_size


@model_group.command("extract-text")
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("name")
@format_option
@pass_app
def model_extract_text(app: AppContext, src: str, name: str, fmt: str):
    """Extract the language model of SRC (a local Hugging Face folder of a HyperCLOVA X SEED
    vision/omni checkpoint, or any *ForConditionalGeneration whose text part mlx-lm supports) into
    workspace model NAME: its weights under mlx-lm's names, its text config and its tokenizer
    (chat template included). Vision and audio towers and projectors are dropped and counted.
    A plain text checkpoint is copied as it is.

    Example: clara model extract-text ~/hf/HyperCLOVAX-SEED-Think-32B seed-32b-text
    """
    from clara.errors import UserError
    from clara.models.extract import extract_text

    ws = app.workspace()
    dest = ws.child("models", name)
    if dest.exists():
        raise UserError(f"model {name!r} already exists in workspace {ws.name}")
    report = extract_text(src, dest).to_dict()
    report["name"] = name
    if fmt == "json":
        emit_record(report, fmt)
        return
    dropped = ", ".join(f"{k} ({v})" for k, v in report["dropped"].items()) or "nothing"
    thinking = report["thinking"]
    emit_record({
        "model": name, "from": f"{report['source_type']} -> {report['text_type']}",
        "kept": f"{report['kept']} tensors, {human_size(report['kept_bytes'])}, "
                f"{report['shards_out']} shard(s) from {report['shards_in']}",
        "dropped": dropped, "dropped files": ", ".join(report["dropped_files"]) or "none",
        "tied head": report["tie_word_embeddings"],
        "reasoning": (f"{thinking['start']!r} ... {thinking['end']!r} ({thinking['style']})"
                      if thinking else "none"),
        "notes": "; ".join(report["notes"]) or "none",
    }, fmt)


COMMANDS: list = []  # attached to `clara model` above
