"""SIGKILL during every command that writes several files (import, build, synth, init-tiny,
quantize, fuse, compress), at seeded moments late in its run (where it writes): what is in sight
afterwards is whole or absent, never half."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from clara import io
from clara.workspace import Workspace
from conftest import DATA

pytestmark = pytest.mark.slow
KILLS_PER_COMMAND = 2


@pytest.fixture(scope="module")
def kw(tmp_path_factory, tiny_model_dir):
    """Workspace `k`: a model, imported sources, a synthetic set, a LoRA run and a CLaRa run."""
    from click.testing import CliRunner

    from clara.cli import cli
    from clara.data.sources import import_files
    from clara.data.synth import build_synth
    from clara.method import synthetic

    base = tmp_path_factory.mktemp("kills")
    root = base / "workspaces"
    ws = Workspace(root, "k").create()
    shutil.copytree(tiny_model_dir, ws.models_dir / "tiny")
    import_files(ws, [DATA / "sample" / "karsholm_observatory_handbook.md"])
    build_synth(ws, "toy", entities=12)
    for i in range(3):
        io.write_text(base / f"note{i}.md", f"# Note {i}\n\n" + "Alia built the mill. " * 400)
    facts = synthetic.facts(4, seed=2)
    io.write_jsonl(base / "docs.jsonl", [{"id": f"f{i}", "text": f["doc"]}
                                         for i, f in enumerate(facts)])
    io.write_jsonl(base / "s1" / "train.jsonl", synthetic.stage1_rows(facts))
    runner = CliRunner()
    for args in (("train", "lora", "-m", "tiny", "-d", "toy-sft", "--iters", "1",
                  "--batch-size", "2", "--max-seq-length", "32", "--name", "lr"),
                 ("train", "stage1", "-m", "tiny", "-d", str(base / "s1"), "--iters", "1",
                  "--doc-max-tokens", "16", "--compression-rate", "4", "--batch-size", "2",
                  "--max-len", "256", "--name", "s1", "--val-every", "0")):
        r = runner.invoke(cli, ["--root", str(root), "-w", "k", *args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    return ws


def _sources_whole(ws, name):
    from clara.data.sources import list_sources

    for s in list_sources(ws):  # every source in sight reads whole
        assert (s.path / "text.txt").is_file() and s.pages
    return True


def _dataset_whole(ws, name):
    from clara.data import validate

    folder = ws.datasets_dir / name
    if not folder.exists():
        return False
    assert not validate.validate_dataset(folder, "auto")[2]
    return True


def _synth_whole(ws, name):
    from clara.data.datasets import recover

    recover(ws)  # what the next build does first: finish a committed group, drop dead ones
    parts = [p for p in ws.items("datasets") if p.name.startswith(name + "-")]
    assert len(parts) in (0, 7), [p.name for p in parts]
    for p in parts:
        _dataset_whole(ws, p.name)
    assert not [p for p in ws.datasets_dir.iterdir() if p.name.startswith(f".{name}-")]
    return bool(parts)


def _model_whole(ws, name):
    from clara.models.loading import check_model_folder, load_model

    folder = ws.models_dir / name
    if not folder.exists():
        return False
    check_model_folder(folder)
    load_model(str(folder), lazy=True)
    return True


def _store_whole(ws, name):
    from clara.method.inference import CompressedStore

    folder = ws.path.parent.parent / name
    if not folder.exists():
        return False
    CompressedStore.open(folder)
    return True


COMMANDS = {
    "import": (lambda n, b: ["data", "import", *(str(b / f"note{i}.md") for i in range(3))],
               _sources_whole),
    "build": (lambda n, b: ["data", "build", "cpt", n, "--chunk-tokens", "16", "--overlap", "4"],
              _dataset_whole),
    "synth": (lambda n, b: ["data", "synth", n, "--entities", "40"], _synth_whole),
    "init-tiny": (lambda n, b: ["model", "init-tiny", n, "--from-data", "toy-cpt", "--hidden",
                                "32", "--layers", "1", "--heads", "2", "--vocab", "300"],
                  _model_whole),
    "quantize": (lambda n, b: ["model", "quantize", "tiny", "--bits", "4", "--group-size",
                               "32", "--out", n], _model_whole),
    "fuse": (lambda n, b: ["model", "fuse", n, "--base", "tiny", "--adapter", "lr"],
             _model_whole),
    "compress": (lambda n, b: ["compress", "-c", "s1", "--docs-file", str(b / "docs.jsonl"),
                               "--out", str(b / n)], _store_whole),
}


def _clara(root, args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clara", "--root", str(root), "-w", "k",
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_kill_leaves_the_output_whole_or_absent(kw, command):
    make_args, whole = COMMANDS[command]
    root, base = kw.root, kw.root.parent
    if command == "import":  # a later attempt would find the files already imported
        for s in kw.items("sources"):
            if s.name.startswith("note"):
                shutil.rmtree(s)
    tic = time.monotonic()
    proc = _clara(root, make_args(f"{command}-full", base))
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    took = time.monotonic() - tic
    assert whole(kw, f"{command}-full")
    rng = random.Random(f"{command}-kills")
    for i in range(KILLS_PER_COMMAND):
        if command == "import":
            for s in kw.items("sources"):
                if s.name.startswith("note"):
                    shutil.rmtree(s)
        proc = _clara(root, make_args(f"{command}-{i}", base))
        time.sleep(rng.uniform(0.6, 1.0) * took)  # late: past the imports, in the writing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        whole(kw, f"{command}-{i}")  # asserts inside: whole or absent
