"""The demo workspace: built from data/ through the real steps, in the background while the app
opens at once, resumable, and with a real before/after measured by `clara eval`.

The fast tests build it with tiny step counts; the slow ones build it at its real size once per
session (the one full build of the suite: about 5 minutes on two idle cores, over 20 on a
loaded one) and assert its figures, with margins, and every example of the README's
first-session section."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clara import io
from clara.demo import (DONE_MARK, DemoConfig, build_demo, demo_is_built,
                        figures, read_progress, start_background_build)
from clara.runs import Run

from conftest import REPO

# The fast tests' demo: its first steps at tiny size (the build's bookkeeping, resume and banner);
# the CLaRa, eval and HRM steps run in the one full build below.
SMALL = DemoConfig(qa_per_chunk=2, sft_iters=3, sft_batch_size=4, clara=False, evaluate=False,
                   hrm=False)


def _words(question: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", question.lower()))


def test_the_paraphrased_set_asks_trained_facts_in_other_words():
    """The split stays honest: every evaluation question's keywords are in some golden training
    answer (a closed-book adapter can know them), and no evaluation question is a training
    question, normalised or with a word or two swapped (under 60 % of words shared)."""
    from clara.demo import EVAL_QA, SAMPLE_QA

    train, evals = io.read_jsonl(SAMPLE_QA), io.read_jsonl(EVAL_QA)
    answers = [r["answer"].lower() for r in train]
    for e in evals:
        assert any(all(k.lower() in a for k in e["keywords"]) for a in answers), e["id"]
        mine = _words(e["question"])
        for t in train:
            theirs = _words(t["question"])
            overlap = len(mine & theirs) / len(mine | theirs)
            assert overlap < 0.6, (e["id"], t["question"], round(overlap, 2))


def _builder(root: Path, cfg: DemoConfig) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clara.demo", str(root), "--config",
                             __import__("json").dumps(__import__("dataclasses").asdict(cfg))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_an_interrupted_build_resumes_where_it_stopped(root):
    from clara.workspace import Workspace

    ws = Workspace(root, "demo")
    proc = _builder(root, SMALL)
    deadline = time.monotonic() + 240
    while (doc := read_progress(ws) if ws.exists else None) is None or doc.get("id") != "sft":
        assert proc.poll() is None and time.monotonic() < deadline, "never reached the SFT step"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_progress(ws)["state"] == "interrupted"
    assert not demo_is_built(ws)
    made = (ws.datasets_dir / "handbook-qa" / "dataset.toml").stat().st_mtime_ns
    messages: list[str] = []
    build_demo(root, progress=messages.append, cfg=SMALL)
    assert demo_is_built(ws)
    # the finished steps were not redone
    assert (ws.datasets_dir / "handbook-qa" / "dataset.toml").stat().st_mtime_ns == made
    assert not any("rules:" in m for m in messages)
    # handbook-sft's memory rows: one per golden pair, answering from its top pair of handbook-qa
    memory = [r for r in io.read_jsonl(ws.datasets_dir / "handbook-sft" / "train.jsonl")
              if r["origin"] == "memory"]
    assert len(memory) == 113
    assert all(r["messages"][0]["content"].startswith("Context:\n[1] ") for r in memory)


def test_the_app_opens_at_once_while_the_demo_builds(root):
    from tests.tui_helpers import make_app, settle, wait_for
    from tui.widgets.demo_banner import DemoBanner

    tic = time.monotonic()
    pid = start_background_build(root, SMALL)
    assert pid and start_background_build(root, SMALL) is None  # one builder at a time
    from clara.workspace import Workspace

    ws = Workspace(root, "demo")

    async def go():
        app = make_app(root, "demo", start_mode="runs")
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            await wait_for(pilot, lambda: app.screen.query(DemoBanner), timeout=15,
                           what="the Runs screen")
            banner = app.screen.query_one(DemoBanner)
            await wait_for(pilot, lambda: "building the demo" in str(banner.render()),
                           timeout=10, what="the build banner")
            opened = time.monotonic() - tic
            assert not demo_is_built(ws) and opened < 20
            assert "ETA" in str(banner.render())
            await pilot.press("f3")  # other modes work meanwhile
            await settle(pilot)
            await wait_for(pilot, lambda: demo_is_built(ws), timeout=400, what="the build")
            await pilot.pause(1.5)
            assert app.screen.query_one(DemoBanner).has_class("hidden") is False
            assert "demo ready" in str(app.screen.query_one(DemoBanner).render())
            assert app.errors == []

    try:
        asyncio.run(go())
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert read_progress(ws)["state"] == "done"


# -- the demo at its real size (slow) --------------------------------------------------------------
@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """The demo at its default size, built once for the suite: (workspace, progress lines)."""
    root = tmp_path_factory.mktemp("demo-root")
    tic = time.monotonic()
    messages: list[str] = []

    def progress(m: str) -> None:
        messages.append(m)
        print(m, flush=True)

    ws = build_demo(root, progress=progress)
    print(f"demo built in {time.monotonic() - tic:.0f} s")
    # The build leaves its HRM run training in the background, for the user to watch; the suite
    # stops it rather than pay for it beside the other tests (tests/test_hrm.py trains that model)
    from clara.hrm.demo import RUN
    from clara.runs import request_stop

    request_stop(Run(ws.runs_dir / RUN))
    return ws, messages


@pytest.fixture(scope="session")
def built_demo(demo_build):
    return demo_build[0]


@pytest.mark.slow
def test_demo_builds_every_part_then_is_left_alone(demo_build):
    """The one full build of the suite (the fixture) holds every part; a second build redoes
    nothing."""
    from click.testing import CliRunner

    from clara.cli import cli

    ws, messages = demo_build
    assert demo_is_built(ws) and (ws.path / DONE_MARK).is_file()
    assert any("[1/" in m for m in messages) and "ready" in messages[-1]

    sources = list(ws.sources_dir.iterdir())
    assert len(sources) == 1 and (sources[0] / "pages.jsonl").is_file()
    for name in ("handbook-qa", "handbook-cpt", "handbook-sft",
                 "handbook-stage1", "handbook-stage2", "handbook-stage3"):
        assert (ws.datasets_dir / name / "train.jsonl").is_file(), name
    qa = io.read_toml(ws.datasets_dir / "handbook-qa" / "dataset.toml")
    assert qa["generator"] == "rules" and qa["report"]["golden"] == 113
    assert (ws.models_dir / "reader" / "model.safetensors").is_file()
    # CLaRa's base: the reader with the SFT run fused in
    assert (ws.models_dir / "reader-handbook" / "model.safetensors").is_file()
    assert Run(ws.runs_dir / "demo-clara-stage2").config()["resolved"]["model"].endswith(
        "reader-handbook")
    for run_id in ("demo-handbook-sft", "demo-clara-stage1", "demo-clara-stage2",
                   "demo-clara-stage3"):
        assert Run(ws.runs_dir / run_id).status()["status"] == "completed", run_id
    assert Run(ws.runs_dir / "demo-handbook-sft").config()["resolved"]["model"].endswith("reader")
    figs = figures(ws)
    assert set(figs) == {"demo-trained", "demo-paraphrased"}
    assert {"closed", "closed=demo-handbook-sft",
            "clara-retrieval=demo-clara-stage3"} <= set(figs["demo-trained"])
    # CLaRa stage 2 (BM25's chunks) on the paraphrased set only: the trained set cost a fifth
    # of the build's evaluation for a row that stage 3's shows as well
    assert "clara=demo-clara-stage2" not in figs["demo-trained"]
    assert {"rag", "clara=demo-clara-stage2"} <= set(figs["demo-paraphrased"])
    # the SFT run closed-book and with its memory (handbook-qa's pairs) on both sets
    for data in figs.values():
        assert {"closed=demo-handbook-sft", "memory=demo-handbook-sft"} <= set(data)
    report = (ws.path / "report.md").read_text()
    assert "| memory=demo-handbook-sft |" in report and "handbook-qa" in report
    # the demo's chunks fit its doc_max_tokens: no documents-cut warning in a first session
    assert io.read_toml(ws.runs_dir / "demo-clara" / "pipeline.toml")["warnings"] == []
    doc = read_progress(ws)
    assert doc["state"] == "done" and "chat: demo-handbook-sft" in doc["ready"]

    again: list[str] = []
    build_demo(ws.root, progress=again.append)
    assert again == []  # already built: nothing redone
    # `clara demo` finds it built and shows what it holds, and the report
    r = CliRunner().invoke(cli, ["--root", str(ws.root), "demo"])
    assert r.exit_code == 0, r.output
    assert "workspace demo" in r.output and "before and after" in r.output



def _fig(ws, data: str, config: str, metric: str) -> float:
    return figures(ws)[data][config][metric]


@pytest.mark.slow
def test_demo_before_and_after(built_demo):
    """The figures of a default build (report.md, 2026-12-01, session 12), with margins; the
    memory bounds fail on session 11's demo (it had no memory), the CLaRa bounds on session 8's
    (its chunks cut at 96 tokens: stage 2 14.3 % on the paraphrased questions).
    Measured: the base 0 % closed-book and with 2 BM25 chunks; the SFT run closed-book 99.4 %
    on the 113 questions it trained on and 28.6 % on the 21 paraphrased ones, with its memory
    (the top pair of handbook-qa) 96.5 % and 71.4 % (57.1-71.4 at SFT seeds 0-2); CLaRa stage
    2 from BM25's top-2 compressed chunks 28.6 % on the paraphrased ones, stage 3 from its own
    33.8 % (the first 40 trained questions) and 21.4 %; BM25's top 2 hold the gold chunk for
    81 %, stage 3's own retrieval for 30.0 % (chance: 2 of 73 chunks, 2.7 %)."""
    from clara.evaluation.rag import ChunkIndex

    ws = built_demo
    print((ws.path / "report.md").read_text())
    trained, para = "demo-trained", "demo-paraphrased"
    sft, clara = "closed=demo-handbook-sft", "clara=demo-clara-stage2"
    memory = "memory=demo-handbook-sft"
    # the base knows nothing about the handbook, and cannot read it
    for data in (trained, para):
        assert _fig(ws, data, "closed", "keyword") <= 0.05
    assert _fig(ws, para, "rag", "keyword") <= 0.05
    assert _fig(ws, para, "rag", "recall") >= 0.7  # BM25 top 2 holds the gold chunk
    # the fine-tuned reader answers the questions it trained on, and some asked otherwise
    assert _fig(ws, trained, sft, "keyword") >= 0.9
    assert _fig(ws, trained, sft, "em") >= 0.85
    assert _fig(ws, para, sft, "keyword") >= 0.2
    # with its memory it answers most of the paraphrased ones (the 50 %)
    assert _fig(ws, trained, memory, "keyword") >= 0.85
    assert _fig(ws, para, memory, "keyword") >= 0.5
    # CLaRa answers from the compressed chunks, far above the base closed-book, and its own
    # retrieval finds the gold chunk many times as often as chance
    assert _fig(ws, para, clara, "keyword") >= 0.2
    retrieval = "clara-retrieval=demo-clara-stage3"
    assert _fig(ws, trained, retrieval, "keyword") >= 0.2
    assert _fig(ws, para, retrieval, "keyword") >= 0.1
    chance = 2 / len(ChunkIndex.from_workspace(ws, 32, 0).chunks)
    assert chance < 0.03 and _fig(ws, trained, retrieval, "recall") >= 0.2
    assert _fig(ws, trained, retrieval, "n") == 40  # clara_eval_limit


def _readme_examples() -> list[tuple[str, str | None]]:
    """(command, expected text) of the README's first-session block: `# -> TEXT` expects TEXT
    in the output."""
    text = (REPO / "README.md").read_text()
    section = text.split("## First session", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        line = line.strip()
        if not line.startswith("clara "):
            continue
        cmd, _, expect = line.partition("# ->")
        out.append((cmd.split("  #")[0].strip(), expect.strip() or None))
    return out


@pytest.mark.slow
def test_readme_first_session_examples_answer_sensibly(built_demo):
    import shlex

    from click.testing import CliRunner

    from clara.cli import cli

    examples = _readme_examples()
    assert len(examples) >= 4
    for cmd, expect in examples:
        args = shlex.split(cmd)[1:]
        if args and args[0] == "demo":
            continue  # the build itself: the fixture ran it
        r = CliRunner().invoke(cli, ["--root", str(built_demo.root), *args])
        assert r.exit_code == 0, f"{cmd}\n{r.output}"
        if expect:
            assert expect.lower() in r.output.lower(), f"{cmd}: expected {expect!r}\n{r.output}"
