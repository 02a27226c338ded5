"""Bad input, as a hostile user would give it: every case ends with its exit code, one line, no
traceback, and a workspace left byte for byte as it was (every file hashed before and after).

Cases run in-process through click's CliRunner (fast); a few run `clara` as a subprocess, the
way a user meets it (the console entry point, stderr, a real exit status).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from clara import io
from clara.errors import ExitCode
from clara.runs import create_run
from clara.workspace import Workspace

OK, FAIL, USAGE, DATA, MODEL = (ExitCode.OK, ExitCode.FAILURE, ExitCode.USAGE, ExitCode.BAD_DATA,
                                ExitCode.MODEL)


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, tiny_model_dir) -> Path:
    """A workspace `t` with a model, datasets, a finished run and files of every sort of bad."""
    from clara.data.synth import build_synth

    base = tmp_path_factory.mktemp("bad")
    root = base / "workspaces"
    ws = Workspace(root, "t").create()
    shutil.copytree(tiny_model_dir, ws.models_dir / "tiny")
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(8)]
    io.write_jsonl(ws.datasets_dir / "chat" / "train.jsonl", rows[:6])
    io.write_jsonl(ws.datasets_dir / "chat" / "valid.jsonl", rows[6:])
    build_synth(ws, "toy", entities=12)
    run = create_run(ws, "lora", {"model": "tiny", "data": "chat", "iters": 1}, name="done")
    run.write_status(status="completed", total_steps=1)
    # files outside the workspace
    files = base / "files"
    files.mkdir()
    (files / "bad-json.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    (files / "latin1.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    (files / "latin1-ds").mkdir()
    (files / "latin1-ds" / "train.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    (files / "qa-missing.jsonl").write_text('{"question": "Q?", "answer": "A"}\n'
                                           '{"question": "Q2?"}\n')
    (files / "qa-latin1.jsonl").write_bytes(b'{"question": "Q?", "answer": "A"}\n'
                                            b'{"question": "Q\xe9?", "answer": "B"}\n')
    (files / "notes.exe").write_bytes(b"MZ\x90\x00")
    (files / "fake.pdf").write_bytes(b"this is not a pdf at all\n")
    (files / "empty.pdf").write_bytes(b"")
    (files / "sft-as-text.jsonl").write_text('{"text": "plain"}\n')
    (files / "dir.jsonl").mkdir()  # a folder where a file is wanted: unreadable as a file
    broken = files / "broken-ds"  # a dataset folder whose train.jsonl cannot be read
    (broken / "train.jsonl").mkdir(parents=True)
    io.write_text(broken / "valid.jsonl", '{"text": "x"}\n')
    outside = base / "outside"
    (outside / "run-x").mkdir(parents=True)
    (outside / "ds-x").mkdir()
    io.write_text(outside / "ds-x" / "train.jsonl", '{"text": "x"}\n')
    io.write_text(outside / "run-x" / "run.toml", 'id = "escape"\nkind = "lora"\n')
    os.symlink(outside / "run-x", ws.runs_dir / "escape")
    os.symlink(outside / "ds-x", ws.datasets_dir / "escape")
    return root


def tree_hash(root: Path) -> dict[str, str]:
    """Every file, folder and link under `root` (hidden ones too), with a hash of its content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


F = "{files}"
LORA = ("-m", "tiny", "--iters", "1", "--batch-size", "1", "--max-seq-length", "64")
STAGE = ("-m", "tiny", "--doc-max-tokens", "16", "--compression-rate", "4", "--lora-rank", "2",
         "--iters", "1", "--batch-size", "1", "--max-len", "256")
CASES = [
    # names: one rule, matched in full
    (("ws", "create", "abc\n"), USAGE, "invalid workspace name"),
    (("ws", "create", "../evil"), USAGE, "invalid workspace name"),
    (("ws", "create", ".hidden"), USAGE, "may not start with '.'"),
    (("ws", "create", "a b"), USAGE, "invalid workspace name"),
    (("ws", "create", ""), USAGE, "it is empty"),
    (("ws", "create", "x" * 101), USAGE, "at most 100"),
    (("ws", "create", "a..b"), USAGE, "'..'"),
    (("ws", "create", "t"), FAIL, "already exists"),
    (("-w", "t\n", "ws", "show"), USAGE, "invalid workspace name"),
    (("-w", "missing", "ws", "show"), FAIL, "clara ws create missing"),
    (("-w", "t", "data", "synth", "bad\n"), USAGE, "invalid dataset name"),
    (("-w", "t", "data", "synth", "../x"), USAGE, "invalid dataset name"),
    (("-w", "t", "data", "synth", "toy"), FAIL, "already exists"),
    (("-w", "t", "data", "synth", "new", "--entities", "3"), USAGE, "--entities"),
    (("-w", "t", "data", "synth", "new", "--test-share", "0.9"), USAGE, "--test-share"),
    (("-w", "t", "data", "synth", "new", "--entities", "many"), USAGE, "many"),
    (("-w", "t", "model", "init-tiny", "t\n", "--from-data", "chat"), USAGE, "invalid model name"),
    (("-w", "t", "model", "init-tiny", "tiny", "--from-data", "chat"), FAIL, "already exists"),
    # init-tiny geometry
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--hidden", "0"), USAGE,
     "--hidden"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--hidden", "-8"), USAGE,
     "--hidden"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--heads", "3"), USAGE,
     "divisible"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--heads", "0"), USAGE,
     "--heads"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--layers", "0"), USAGE,
     "--layers"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--vocab", "10"), USAGE,
     "--vocab"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--kv-heads", "3"), USAGE,
     "--kv-heads"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--hidden", "36",
      "--heads", "4"), USAGE, "even"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "nope"), FAIL, "nope"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", F + "/latin1-ds"), DATA,
     "train.jsonl:2"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", F + "/latin1.jsonl"), DATA,
     "a dataset folder"),
    # runs
    (("-w", "t", "runs", "show", "nope"), FAIL, "no run 'nope'"),
    (("-w", "t", "runs", "tail", "nope"), FAIL, "no run 'nope'"),
    (("-w", "t", "runs", "stop", "nope"), FAIL, "no run 'nope'"),
    (("-w", "t", "runs", "resume", "nope"), FAIL, "no run 'nope'"),
    (("-w", "t", "runs", "delete", "nope", "--yes"), FAIL, "no run 'nope'"),
    (("-w", "t", "runs", "show", "escape"), FAIL, "no run 'escape'"),
    (("-w", "t", "runs", "delete", "escape", "--yes"), FAIL, "no run 'escape'"),
    (("-w", "t", "runs", "stop", "done"), FAIL, "not running"),
    (("-w", "t", "runs", "resume", "done"), FAIL, "completed"),
    (("-w", "t", "runs", "list", "--format", "xml"), USAGE, "xml"),
    (("-w", "t", "runs", "tail", "done", "-n", "many"), USAGE, "many"),
    # data files
    (("-w", "t", "data", "validate", F + "/bad-json.jsonl"), DATA, "bad-json.jsonl:2"),
    (("-w", "t", "data", "validate", F + "/latin1.jsonl"), DATA, "latin1.jsonl:2"),
    (("-w", "t", "data", "validate", F + "/dir.jsonl"), FAIL, "give --kind"),
    (("-w", "t", "data", "validate", F + "/broken-ds"), DATA, "train.jsonl"),
    (("-w", "t", "data", "validate", F + "/sft-as-text.jsonl", "--kind", "sft"), DATA,
     "sft-as-text.jsonl:1"),
    (("-w", "t", "data", "validate", "nope.jsonl"), FAIL, "nope.jsonl"),
    (("-w", "t", "data", "validate", "escape"), FAIL, "leaves the workspace"),
    (("-w", "t", "data", "validate", F + "/x.jsonl", "--kind", "poetry"), USAGE, "poetry"),
    (("-w", "t", "data", "show", "nope"), FAIL, "nope"),
    (("-w", "t", "data", "show", "escape"), FAIL, "leaves the workspace"),
    (("-w", "t", "data", "build", "sft", "x", "--qa", F + "/qa-missing.jsonl", "--no-general"),
     DATA, "qa-missing.jsonl:2: answer"),
    (("-w", "t", "data", "build", "sft", "x", "--qa", F + "/qa-latin1.jsonl", "--no-general"),
     DATA, "qa-latin1.jsonl:2"),
    (("-w", "t", "data", "build", "stage2", "x", "--qa", F + "/qa-missing.jsonl"), DATA,
     "qa-missing.jsonl:2: answer"),
    (("-w", "t", "data", "build", "sft", "x\n", "--qa", F + "/qa-missing.jsonl"), USAGE,
     "invalid dataset name"),
    (("-w", "t", "data", "import", F + "/notes.exe"), DATA, "unsupported extension"),
    (("-w", "t", "data", "import", F + "/fake.pdf"), DATA, "fake.pdf"),
    (("-w", "t", "data", "import", F + "/empty.pdf"), DATA, "empty.pdf"),
    (("-w", "t", "data", "import", F + "/none.pdf"), DATA, "none.pdf does not exist"),
    # models and adapters
    (("-w", "t", "model", "quantize", "nope"), MODEL, "no model 'nope'"),
    (("-w", "t", "model", "fuse", "f", "--base", "nope", "--adapter", "done"), MODEL,
     "no checkpoint yet"),
    (("-w", "t", "model", "fuse", "f", "--base", "tiny", "--adapter", "done:step-x"), USAGE,
     "not a checkpoint name"),
    (("-w", "t", "train", "lora", "-m", "nope", "-d", "chat"), MODEL, "no model 'nope'"),
    (("-w", "t", "train", "lora", "-m", "tiny", "-d", "nope"), FAIL, "nope"),
    (("-w", "t", "train", "lora", "-m", "tiny", "-d", "escape"), FAIL, "leaves the workspace"),
    (("-w", "t", "train", "lora", "-m", "tiny", "-d", "chat", "--iters", "x"), USAGE, "x"),
    (("-w", "t", "chat", "-m", "tiny", "-a", "nope", "-p", "hi"), FAIL, "nope"),
    (("-w", "t", "chat", "-m", "tiny", "-a", "escape", "-p", "hi"), FAIL, "leaves the workspace"),
    (("-w", "t", "model", "fuse", "f", "--base", "tiny", "--adapter", "escape:best"), FAIL,
     "leaves the workspace"),
    (("-w", "t", "ask", "--run", "nope", "--doc", "x", "Why?"), FAIL, "nope"),
    (("-w", "t", "eval", "-d", F + "/none.jsonl", "-m", "tiny"), FAIL, "none.jsonl"),
    # settings and rows checked before any run folder exists (clara.plan)
    (("-w", "t", "train", "lora", *LORA, "-d", "toy-sft", "--learning-rate", "inf"), USAGE,
     "learning_rate: inf is not a finite"),
    (("-w", "t", "train", "lora", *LORA, "-d", "toy-sft", "--learning-rate", "nan"), USAGE,
     "learning_rate: nan"),
    (("-w", "t", "train", "lora", *LORA, "-d", "toy-sft", "--lora-rank", "0"), USAGE,
     "lora_rank"),
    (("-w", "t", "train", "lora", *LORA, "-d", "toy-sft", "--num-layers", "99"), USAGE,
     "num_layers: 99, but model"),
    (("-w", "t", "train", "lora", *LORA, "-d", "toy-sft", "--batch-size", "0"), USAGE,
     "batch_size"),
    (("-w", "t", "train", "lora", *LORA, "-d", "toy-cpt", "--mode", "sft"), DATA,
     "--mode cpt"),
    (("-w", "t", "train", "lora", *LORA, "-d", "toy-stage1"), DATA, "clara train stage1"),
    (("-w", "t", "train", "lora", *LORA, "-d", F + "/latin1-ds", "--mode", "cpt"), DATA,
     "train.jsonl:2"),
    (("-w", "t", "train", "lora", *LORA, "-d", F + "/broken-ds", "--mode", "cpt"), DATA,
     "no train.jsonl"),
    (("-w", "t", "train", "stage1", *STAGE, "-d", "toy-stage1", "--compression-rate", "0"),
     USAGE, "compression_rate: 0 is outside"),
    (("-w", "t", "train", "stage1", *STAGE, "-d", "toy-stage1", "--compression-rate",
      "100000"), USAGE, "compression_rate: 100000"),
    (("-w", "t", "train", "stage1", *STAGE, "-d", "toy-stage1", "--doc-max-tokens", "0"), USAGE,
     "doc_max_tokens: 0"),
    (("-w", "t", "train", "stage1", *STAGE, "-d", "toy-stage1", "--tau", "inf"), USAGE,
     "tau: inf"),
    (("-w", "t", "train", "stage1", *STAGE, "-d", "toy-stage1", "--lora-dropout", "1.5"), USAGE,
     "lora_dropout"),
    (("-w", "t", "train", "stage3", *STAGE, "-d", "toy-stage3", "--top-k", "50"), DATA,
     "fewer than top_k = 50"),
    (("-w", "t", "train", "stage3", *STAGE, "-d", "toy-stage2"), DATA, "clara train stage2"),
    (("-w", "t", "train", "stage2", *STAGE, "-d", "toy-stage2", "--from", "nope"), FAIL,
     "no run 'nope'"),
    (("-w", "t", "train", "pipeline", *STAGE, "--data", "toy", "--stage2-lr", "inf"), USAGE,
     "learning_rate: inf"),
    (("-w", "t", "eval", "--data", "toy-qa", "-m", "tiny", "-c", "rag", "--top-k", "0"), USAGE,
     "top_k: 0"),
    # the group itself
    (("no-such-command",), USAGE, "no-such-command"),
    (("-w", "t", "ws", "show", "--format", "yaml"), USAGE, "yaml"),
]


def _id(case) -> str:
    return " ".join(a.replace("\n", "\\n") or "''" for a in case[0])[:60]


@pytest.mark.parametrize("args,code,needle", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line_with_its_code_and_changes_nothing(bad_root, args, code, needle):
    from clara.cli import cli

    files = bad_root.parent / "files"
    args = [a.replace(F, str(files)) for a in args]
    before = tree_hash(bad_root)
    r = CliRunner().invoke(cli, ["--root", str(bad_root), *args], catch_exceptions=False)
    lines = r.output.strip().splitlines()
    assert "Traceback" not in r.output
    assert r.exit_code == code, r.output
    assert len(lines) == 1, r.output
    assert needle in r.output, r.output
    assert tree_hash(bad_root) == before


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60


SUBPROCESS_CASES = [
    (("ws", "create", "abc\n"), USAGE, "invalid workspace name"),
    (("-w", "t", "model", "init-tiny", "t0", "--from-data", "toy-cpt", "--hidden", "0"), USAGE,
     "--hidden"),
    (("-w", "t", "data", "validate", F + "/latin1.jsonl"), DATA, "latin1.jsonl:2"),
    (("-w", "t", "runs", "show", "escape"), FAIL, "no run 'escape'"),
]


@pytest.mark.parametrize("args,code,needle", SUBPROCESS_CASES,
                         ids=[_id(c) for c in SUBPROCESS_CASES])
def test_bad_input_through_the_console_command(bad_root, args, code, needle):
    files = bad_root.parent / "files"
    args = [a.replace(F, str(files)) for a in args]
    before = tree_hash(bad_root)
    p = subprocess.run([sys.executable, "-m", "clara", "--root", str(bad_root), *args],
                       capture_output=True, text=True, timeout=120)
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == code, out
    assert "Traceback" not in out and len(out.splitlines()) == 1 and needle in out, out
    assert tree_hash(bad_root) == before


def test_an_unexpected_error_is_one_line_with_its_traceback_in_a_log(bad_root, tmp_path,
                                                                     monkeypatch):
    """The safety net: a bug (here a command that divides by zero) prints one line naming the
    log file, which holds the traceback."""
    monkeypatch.setenv("HOME", str(tmp_path))
    from clara.cli import cli

    @cli.command("boom-for-test", hidden=True)
    def boom():
        return 1 / 0

    try:
        r = CliRunner().invoke(cli, ["--root", str(bad_root), "boom-for-test"],
                               catch_exceptions=False)
    finally:
        cli.commands.pop("boom-for-test")
    assert r.exit_code == FAIL and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and "ZeroDivisionError" in r.output
    logs = list((tmp_path / ".cache" / "clara").glob("crash-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()
