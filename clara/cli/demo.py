"""`clara demo`, and what a bare `clara` does: open the app at once on the demo workspace, which
builds in the background (the app shows its progress) until it is ready."""

from __future__ import annotations

import click

from clara.cli.common import AppContext, pass_app
from clara.demo import DEMO_NAME, build_demo, demo_is_built, demo_workspace


def _progress(message: str) -> None:
    click.echo(message, err=True)


def open_app(app: AppContext) -> None:
    """Open the workbench. On the demo workspace, a build that is not finished goes on (or
    resumes) in a background process while the app opens at once and shows its progress."""
    name = app.workspace_name or DEMO_NAME
    try:
        from tui.app import run_app
    except ImportError:
        # The app is not installed (library-only install): build, then show what it holds.
        if name == DEMO_NAME:
            build_demo(app.root_path, progress=_progress)
        from clara.cli.ws import ws_show

        click.get_current_context().invoke(ws_show, name=name, fmt="table")
        return
    if name == DEMO_NAME and not demo_is_built(demo_workspace(app.root_path)):
        from clara.demo import start_background_build

        start_background_build(app.root_path)
    run_app(root=app.root_path, workspace=name)


@click.command("demo")
@click.option("--rebuild", is_flag=True, help="Delete the demo workspace and build it again.")
@click.option("--background", is_flag=True,
              help="Build in a detached process (progress in .demo-build.json / .log).")
@pass_app
def demo(app: AppContext, rebuild: bool, background: bool):
    """Build the demo workspace from the material in data/ and show what it holds.

    The build imports the sample handbook, generates QA pairs from it, fine-tunes the tiny
    reader model on them, trains CLaRa on the compressed handbook chunks and evaluates both
    against the base (figures in the workspace's report.md). An interrupted build resumes.

    Example: clara demo --rebuild
    """
    if background:
        import shutil

        from clara.demo import start_background_build

        ws = demo_workspace(app.root_path)
        if rebuild:
            shutil.rmtree(ws.path)
        pid = start_background_build(app.root_path)
        click.echo(f"building the demo in the background (pid {pid})" if pid else
                   "the demo is built or being built already")
        return
    ws = build_demo(app.root_path, progress=_progress, rebuild=rebuild)
    from clara.cli.ws import ws_show

    click.get_current_context().invoke(ws_show, name=ws.name, fmt="table")
    report = ws.path / "report.md"
    if report.is_file():
        click.echo("")
        click.echo(report.read_text(encoding="utf-8").rstrip())


COMMANDS = [demo]
