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
from clara.errors import UserError, ExitCode, os_error_message


class CliGroup(click.Group):
    """Turns every error into a one-line message and its `ExitCode`, never a traceback.

    `UserError`s carry their code; an OS error (a full disk, a folder where a file was wanted)
    names its file; anything unexpected prints one line and leaves the traceback in a log file.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # click prints usage and a hint: one line says the same
            hint = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
            fail(e.format_message() + hint, ExitCode.USAGE)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except UserError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", ExitCode.INTERRUPTED)
        except OSError as e:
            fail(os_error_message(e), ExitCode.FAILURE)
        except Exception as e:  # a bug: one line here, the traceback in a file
            fail(f"internal error: {type(e).__name__}: {e} (traceback in {crash_log()})",
                 ExitCode.FAILURE)


def fail(message: str, code: int) -> None:
    """Print `Error: message` on stderr (one line per line of the message) and exit with `code`."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(int(code))


def crash_log() -> str:
    """Write the current traceback to a log file (outside any workspace); return its path."""
    import os
    import tempfile
    import time
    import traceback

    text = traceback.format_exc()
    for folder in (os.path.join(os.path.expanduser("~"), ".cache", "clara"),
                   tempfile.gettempdir()):
        path = os.path.join(folder, f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return "(no log: nowhere to write)"


@click.group(cls=CliGroup, invoke_without_command=True,
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
