"""Shared fixtures: a temporary workspace root, a CLI runner, and a tiny real MLX model."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
# PyTorch (the parity tests' reference) and wandb live outside the venv's site-packages
# (scripts/env.sh says why): this process sees them, the clara processes the tests start do not.
sys.path.append(str(REPO / ".venv" / "reference"))


# The modules whose slow tests take minutes, longest first
LONGEST = ("test_demo", "test_method_quality", "test_method_retrieval_quality")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """The slow tests first, longest first, and those of one module on one worker
    (pytest-xdist's loadgroup, so a module's trained fixture is made once): they set the
    suite's length and must not start last."""
    def order(item):
        if not item.get_closest_marker("slow"):
            return len(LONGEST) + 1
        name = item.module.__name__
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)

    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=order)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An empty workspace root, also exported as CLARA_HOME for subprocesses."""
    r = tmp_path / "workspaces"
    r.mkdir()
    monkeypatch.setenv("CLARA_HOME", str(r))
    monkeypatch.delenv("CLARA_WORKSPACE", raising=False)
    return r


@pytest.fixture
def workspace(root):
    from clara.workspace import Workspace

    return Workspace(root, "test").create()


@pytest.fixture
def cli(root):
    """Invoke `clara` in-process against the temporary root: cli("ws", "list") -> Result."""
    from clara.cli import cli as clara_cli

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(clara_cli, ["--root", str(root), *args], input=input,
                             catch_exceptions=False)

    return invoke


def corpus_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """Plain sentences to train a tiny tokenizer and model on, made up here."""
    rng = random.Random(seed)
    names = ["Alia", "Borun", "Cetra", "Dovan", "Elsin", "Farol", "Gemma", "Hollis"]
    things = ["the river mill", "a glass tower", "the northern archive", "a salt mine",
              "the harbour bell", "an orchard of pears"]
    verbs = ["built", "repaired", "guarded", "painted", "discovered", "sold"]
    years = [str(y) for y in range(1790, 1830)]
    out = []
    for _ in range(n):
        out.append(f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)} in "
                   f"{rng.choice(years)}.")
    out += ["질문에 짧게 답하세요.", "The answer is short.", "Question: Who built it? Answer: Alia."]
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (vocab 512, 2 layers, hidden 64) with a trained BPE tokenizer."""
    from clara.models.tiny import TinyConfig, build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    cfg = TinyConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=512, seed=0)
    return build_tiny_model(out, corpus_sentences(), cfg)
