"""The demo workspace builds from data/ through the real steps (tiny sizes here)."""

import json

from clara.demo import DONE_MARK, DemoConfig, build_demo, demo_is_built
from clara.runs import Run

SMALL = DemoConfig(hidden=32, layers=1, heads=2, vocab=512, synth_entities=12, pretrain_iters=4,
                   sft_iters=3, clara_iters=(3, 3, 3), batch_size=4, clara=False)


def test_demo_builds_every_part_then_is_left_alone(root, cli):
    messages: list[str] = []
    ws = build_demo(root, progress=messages.append, cfg=SMALL)
    assert demo_is_built(ws) and (ws.path / DONE_MARK).is_file()
    assert any("[1/" in m for m in messages) and "ready" in messages[-1]

    sources = list(ws.sources_dir.iterdir())
    assert len(sources) == 1 and (sources[0] / "pages.jsonl").is_file()
    for name in ("handbook-cpt", "handbook-sft", "handbook-stage1", "handbook-stage2",
                 "handbook-stage3", "synth-cpt", "synth-stage3", "demo-pretrain"):
        assert (ws.datasets_dir / name / "train.jsonl").is_file(), name
    # the pretrained model is a real mlx-lm folder, different from the random one
    for name in ("tiny-init", "tiny"):
        assert json.loads((ws.models_dir / name / "config.json").read_text())["model_type"] == "llama"
    for run_id in ("demo-pretrain", "demo-handbook-sft"):
        run = Run(ws.runs_dir / run_id)
        assert run.status()["status"] == "completed", run_id
        assert (run.adapters / "best" / "adapters.safetensors").is_file()
        assert (run.path / "report.md").is_file()
    assert Run(ws.runs_dir / "demo-handbook-sft").config()["resolved"]["model"].endswith("tiny")

    again: list[str] = []
    build_demo(root, progress=again.append, cfg=SMALL)
    assert again == []  # already built: nothing redone
    r = cli("demo")  # finds it built and shows what it holds
    assert r.exit_code == 0, r.output
    assert "workspace demo" in r.output and "handbook-sft" in r.output
