"""`clara data import` and `clara data sources`: bring documents into a workspace, list them."""

from __future__ import annotations

import sys

import click

from clara.cli.common import AppContext, emit_rows, format_option, pass_app
from clara.cli.data import data_group
from clara.data.sources import import_files, list_sources

_COLUMNS = [("id", "ID"), ("name", "NAME"), ("kind", "KIND"), ("pages", "PAGES"),
            ("characters", "CHARACTERS"), ("sha256", "SHA256", lambda s: s[:12]),
            ("imported_at", "IMPORTED")]


@data_group.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@format_option
@pass_app
def data_import(app: AppContext, files: tuple[str, ...], fmt: str):
    """Copy PDF, .txt and .md FILES into the workspace as page-tracked text.

    Importing a file whose content is already there changes nothing. One call is all or nothing:
    if any file cannot be read, nothing is imported and each bad file is named.

    Example: clara data import handbook.pdf notes.md
    """
    ws = app.workspace()
    # Progress only for people watching: piped or captured stderr keeps just the error line.
    progress = (lambda m: click.echo(m, err=True)) if sys.stderr.isatty() else None
    results = import_files(ws, files, progress=progress)
    if fmt == "json":
        rows = [{"file": str(r.path), "status": r.status, "id": r.id, "message": r.message,
                 **({"source": r.source.summary()} if r.source else {})} for r in results]
        emit_rows(rows, [], fmt)
        return
    for r in results:
        s = r.source
        if r.status == "imported" and s is not None:
            click.echo(f"imported   {r.path} -> {r.id}  ({s.kind}, {len(s.pages)} page(s), "
                       f"{s.characters:,} characters)")
            for w in s.warnings:
                click.echo(f"           note: {w}")
        else:
            click.echo(f"unchanged  {r.path}: {r.message}")


@data_group.command("sources")
@format_option
@pass_app
def data_sources(app: AppContext, fmt: str):
    """List the documents imported into the workspace.

    Example: clara data sources --format json
    """
    rows = [s.summary() for s in list_sources(app.workspace())]
    emit_rows(rows, _COLUMNS, fmt, empty="no sources yet (add some with: clara data import FILE)")


COMMANDS = []
