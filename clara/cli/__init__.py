"""The `clara` command: a click group whose bare call opens the workbench app.

Each module of this package adds its commands by exposing `COMMANDS` (a list of click commands or
groups); the group below collects them, so areas of the CLI live in their own modules.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from clara import __version__
from clara.cli.common import AppContext
from clara.errors import ClaraError


class ClaraGroup(click.Group):
    """Turns every `ClaraError` into a one-line message and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ClaraError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=ClaraGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--root", envvar="CLARA_HOME", type=click.Path(file_okay=False), default=None,
              help="Folder that holds the workspaces (env CLARA_HOME, default ./workspaces).")
@click.option("--workspace", "-w", envvar="CLARA_WORKSPACE", default=None,
              help="Workspace to work in (env CLARA_WORKSPACE, default 'demo').")
@click.version_option(__version__, prog_name="clara")
@click.pass_context
def cli(ctx: click.Context, root: str | None, workspace: str | None):
    """clara: train and study small language models on your own documents with MLX.

    Run without a command to open the workbench app.
    """
    ctx.obj = AppContext(root=root, workspace_name=workspace)
    if ctx.invoked_subcommand is None:
        from clara.cli.demo import open_app

        open_app(ctx.obj)


def _register() -> None:
    package = sys.modules[__name__]
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_register()


def main() -> None:
    """Console entry point: restart with the fast BLAS preloaded where it applies, then run."""
    from clara.platform import reexec_with_blas

    reexec_with_blas()
    cli(prog_name="clara")
