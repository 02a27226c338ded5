"""The models of a workspace: `models/NAME/` is either an mlx-lm model folder itself (built here:
init-tiny, quantize, extract) or holds a `model.toml` that points at a local folder or a Hugging
Face id elsewhere (added with `clara model add`).
"""

from __future__ import annotations

from pathlib import Path

from clara import io
from clara.errors import ClaraError
from clara.workspace import Workspace


def model_source(ws: Workspace | None, name_or_path: str) -> str:
    """What to hand `mlx_lm.load` for a workspace model name, a local folder or a HF id."""
    if ws is not None and "/" not in name_or_path and (ws.models_dir / name_or_path).is_dir():
        folder = ws.models_dir / name_or_path
        if (folder / "config.json").is_file():
            return str(folder)
        meta_file = folder / "model.toml"
        if meta_file.is_file():
            return str(io.read_toml(meta_file)["source"])
        raise ClaraError(f"{folder}: neither config.json nor model.toml: not a model folder")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ClaraError(f"{path}: no config.json: not an mlx-lm / Hugging Face model folder")
        return str(path)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path  # a Hugging Face id
    where = f" in workspace {ws.name}" if ws is not None else ""
    raise ClaraError(f"no model {name_or_path!r}{where} (see: clara model list)")
