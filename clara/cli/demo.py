"""`clara demo`, and what a bare `clara` does: open the app on a ready demo workspace."""

from __future__ import annotations

import click

from clara.cli.common import AppContext, pass_app
from clara.demo import DEMO_NAME, build_demo


def _progress(message: str) -> None:
    click.echo(message, err=True)


def open_app(app: AppContext) -> None:
    """Open the workbench; build the demo workspace first when it is the one asked for."""
    name = app.workspace_name or DEMO_NAME
    if name == DEMO_NAME:
        build_demo(app.root_path, progress=_progress)
    try:
        from tui.app import run_app
    except ImportError:
        # The app is not installed (library-only install): show what the workspace holds.
        from clara.cli.ws import ws_show

        click.get_current_context().invoke(ws_show, name=name, fmt="table")
        return
    run_app(root=app.root_path, workspace=name)


@click.command("demo")
@click.option("--rebuild", is_flag=True, help="Delete the demo workspace and build it again.")
@pass_app
def demo(app: AppContext, rebuild: bool):
    """Build the demo workspace from the material in data/ and show what it holds.

    Example: clara demo --rebuild
    """
    ws = build_demo(app.root_path, progress=_progress, rebuild=rebuild)
    from clara.cli.ws import ws_show

    click.get_current_context().invoke(ws_show, name=ws.name, fmt="table")


COMMANDS = [demo]
