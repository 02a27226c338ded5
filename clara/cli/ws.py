"""`clara ws`: create, list and show workspaces."""

from __future__ import annotations

import click

from clara.cli.common import AppContext, emit_record, emit_rows, format_option, pass_app
from clara.io import human_size
from clara.workspace import SUBDIRS, Workspace, list_workspaces

_COLUMNS = [("name", "NAME"), *[(s, s.upper()) for s in SUBDIRS],
            ("bytes", "SIZE", human_size), ("created", "CREATED")]


@click.group("ws")
def ws_group():
    """Workspaces: one folder per study, readable without the app."""


@ws_group.command("create")
@click.argument("name")
@click.option("--description", default="", help="A line saying what the workspace is for.")
@pass_app
def ws_create(app: AppContext, name: str, description: str):
    """Create workspace NAME under the root.

    Example: clara ws create contracts -d "Fine-tuning on our contract templates"
    """
    ws = Workspace(app.root_path, name).create(description=description)
    click.echo(f"created workspace {ws.name} at {ws.path}")


@ws_group.command("list")
@format_option
@pass_app
def ws_list(app: AppContext, fmt: str):
    """List the workspaces under the root with counts and sizes.

    Example: clara ws list --format json
    """
    rows = [w.summary() for w in list_workspaces(app.root_path)]
    emit_rows(rows, _COLUMNS, fmt, empty=f"no workspaces under {app.root_path}")


@ws_group.command("show")
@click.argument("name", required=False)
@format_option
@pass_app
def ws_show(app: AppContext, name: str | None, fmt: str):
    """Show one workspace (default: the selected one): what it holds and how big it is.

    Example: clara ws show demo
    """
    if name:
        app.workspace_name = name
    ws = app.workspace()
    summary = ws.summary()
    if fmt == "json":
        summary["items"] = {sub: [p.name for p in ws.items(sub)] for sub in SUBDIRS}
        emit_record(summary, fmt)
        return
    click.echo(f"workspace {ws.name}  ({ws.path})")
    if summary.get("description"):
        click.echo(summary["description"])
    click.echo(f"created {summary.get('created', '-')}, {human_size(summary['bytes'])} in all")
    for sub in SUBDIRS:
        names = [p.name for p in ws.items(sub)]
        shown = ", ".join(names[:8]) + (f", ... (+{len(names) - 8})" if len(names) > 8 else "")
        click.echo(f"  {sub:<9} {len(names):>3}  {human_size(summary[sub + '_bytes']):>9}  {shown}")


COMMANDS = [ws_group]
