"""Make mlx-lm find the model types `clara` ships (today: `hyperclovax`).

mlx-lm picks an architecture with `importlib.import_module(f"mlx_lm.models.{model_type}")`.
Importing this module (which `import clara.models` does) installs a small import hook that answers
that import with `clara.models.hyperclovax`, without importing MLX or mlx-lm now: the CLI stays
quick to start, and the model module is loaded only when a checkpoint needs it.

To run one of mlx-lm's own tools with these types available:
`python -m clara.models.architectures generate --model PATH --prompt hi` (same arguments as `mlx_lm`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# mlx-lm module name -> the clara module that implements it.
ALIASES = {"mlx_lm.models.hyperclovax": "clara.models.hyperclovax"}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target
        self._own_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system stamped the alias spec on the module; give it back its own so that the
        # module keeps one identity (same classes under both names).
        if self._own_spec is not None:
            module.__spec__ = self._own_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    clara_aliases = True  # marks it across module copies (`python -m` runs this file twice)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ALIASES:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(ALIASES[fullname]))


def install() -> None:
    """Install the import hook once (idempotent)."""
    if not any(getattr(f, "clara_aliases", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


def supported_model_types() -> list[str]:
    """The model types clara adds to mlx-lm."""
    return [name.rsplit(".", 1)[1] for name in ALIASES]


install()


if __name__ == "__main__":
    from mlx_lm import cli

    cli.main()
