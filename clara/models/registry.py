"""The models of a workspace: `models/NAME/` is either an mlx-lm model folder itself (built here:
init-tiny, quantize, extract) or holds a `model.toml` that points at a local folder or a Hugging
Face id elsewhere (added with `clara model add`).
"""

from __future__ import annotations

from pathlib import Path

from clara import io
from clara.errors import UserError, ModelError
from clara.workspace import Workspace, is_valid_name


def model_source(ws: Workspace | None, name_or_path: str) -> str:
    """What to hand `mlx_lm.load` for a workspace model name, a local folder or a HF id."""
    if ws is not None and is_valid_name(name_or_path) and \
            ws.child("models", name_or_path).is_dir():
        folder = ws.child("models", name_or_path)
        if (folder / "config.json").is_file():
            return str(folder)
        meta_file = folder / "model.toml"
        if meta_file.is_file():
            return str(io.read_toml(meta_file)["source"])
        raise ModelError(f"{folder}: neither config.json nor model.toml: not a model folder")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json: not an mlx-lm / Hugging Face model folder")
        return str(path)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path  # a Hugging Face id
    where = f" in workspace {ws.name}" if ws is not None else ""
    raise ModelError(f"no model {name_or_path!r}{where} (see: clara model list)")


def model_folder(ws: Workspace, name: str) -> Path:
    folder = ws.child("models", name)
    if not folder.is_dir():
        raise ModelError(f"no model {name!r} in workspace {ws.name} (see: clara model list)")
    return folder


def add_model(ws: Workspace, name: str, source: str, check: bool = True) -> dict:
    """Register `source` (a local model folder or a HF id) as workspace model `name`.

    The model is loaded once through mlx-lm (lazily: config, tokenizer and weight shapes), so a
    broken folder or an unknown id is refused here rather than at training time.
    """
    from clara.models.loading import load_model
    from clara.workspace import now_iso

    folder = ws.child("models", name)
    if folder.exists():
        raise UserError(f"model {name!r} already exists in workspace {ws.name}")
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        source = str(path.resolve())
    elif source.count("/") != 1:
        raise UserError(f"{source}: not a local folder nor a Hugging Face id (owner/name)")
    meta = {"name": name, "source": source, "added": now_iso()}
    if check:
        loaded = load_model(source, lazy=True)
        meta.update(_config_summary(loaded.config))
    io.write_toml(folder / "model.toml", meta)
    return model_info(ws, name)


def _config_summary(config: dict) -> dict:
    out = {"model_type": config.get("model_type"), "hidden_size": config.get("hidden_size"),
           "layers": config.get("num_hidden_layers"), "vocab_size": config.get("vocab_size")}
    q = config.get("quantization")
    if q:
        out["quantization"] = f"{q.get('bits')}-bit gs{q.get('group_size')}"
    return {k: v for k, v in out.items() if v is not None}


def model_info(ws: Workspace, name: str) -> dict:
    """One row for listings: name, kind (built here / reference), source, type, size."""
    import json

    folder = model_folder(ws, name)
    row: dict = {"name": name}
    if (folder / "config.json").is_file():
        row["kind"] = "local"
        row["source"] = str(folder)
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            row.update(_config_summary(config))
            row["dtype"] = config.get("torch_dtype")
        except (OSError, ValueError):
            row["error"] = "config.json unreadable"
        tiny = folder / "clara_tiny.json"
        if tiny.is_file():
            row["parameters"] = json.loads(tiny.read_text()).get("parameters")
        row["bytes"] = io.dir_size(folder)
    elif (folder / "model.toml").is_file():
        meta = io.read_toml(folder / "model.toml")
        row["kind"] = "reference"
        row.update({k: v for k, v in meta.items() if k != "name"})
        src = Path(str(meta.get("source", "")))
        row["bytes"] = io.dir_size(src) if src.is_dir() else None
    else:
        row["kind"] = "broken"
        row["error"] = "neither config.json nor model.toml"
    return row


def list_models(ws: Workspace) -> list[dict]:
    return [model_info(ws, p.name) for p in ws.items("models")]
