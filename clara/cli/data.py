"""`clara data`: import documents and prepare datasets.

The group lives here; commands are added by `clara.cli.data_*` modules and this one.
"""

from __future__ import annotations

import click


@click.group("data")
def data_group():
    """Documents and datasets: import, build, validate, inspect."""


COMMANDS = [data_group]
