"""`clara runs export`: a run's metrics as TensorBoard event files, or to Weights & Biases."""

from __future__ import annotations

import click

from clara.cli.common import AppContext, pass_app
from clara.cli.runs import runs_group


@runs_group.command("export")
@click.argument("run_ref")
@click.option("--tensorboard", "tb_dir", default=None, metavar="DIR",
              help="Folder for the event files (default: RUN/tensorboard).")
@click.option("--wandb", "to_wandb", is_flag=True,
              help="Also log to Weights & Biases (offline unless logged in; needs wandb).")
@click.option("--project", default="clara", show_default=True, help="W&B project.")
@pass_app
def runs_export(app: AppContext, run_ref: str, tb_dir, to_wandb: bool, project: str):
    """Export a run's metrics (train/* and val/* scalars by step) for TensorBoard, and to W&B.

    Example: clara runs export lora-20261130-101500-ab12 && tensorboard --logdir runs/
    """
    from clara.export import export_tensorboard, export_wandb, require_wandb
    from clara.runs import find_run

    run = find_run(app.workspace(), run_ref)
    if to_wandb:
        require_wandb()  # said before anything is written
    click.echo(f"TensorBoard event files -> {export_tensorboard(run, tb_dir)}")
    if to_wandb:
        done = export_wandb(run, project)
        if done["mode"] == "offline":
            click.echo(f"W&B run {done['name']} logged offline in {done['folder']} "
                       f"(upload: wandb sync {done['folder']})")
        else:
            click.echo(f"W&B run {done['name']} logged (project {project})")


COMMANDS: list = []  # attached to `clara runs` above
