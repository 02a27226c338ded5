"""Does the demo's CLaRa read its chunks, or answer from its base's memory?

On a built demo workspace, the first N trained questions (data/sample_qa.jsonl) are answered by
CLaRa stage 2 (`clara eval`, config clara=demo-clara-stage2, on reader-handbook) with ONE
compressed chunk given: the gold chunk, BM25's best-ranked chunk that is not gold ("wrong"), or
a chunk from the lower half of BM25's ranking ("far"). A model that reads scores well above on
gold; one that answers from memory scores about the same on all three.

    python bench/demo_reads.py ROOT [--n 60]      # ROOT holds the built demo (clara demo)

Prints a table and writes bench/results/demo_reads-DATE.json. Measured (60 questions):
session 8's build gold 44.2 / wrong 30.0 / far 23.9 % keyword match (15 answers the same with
gold and wrong); session 9's (chunks compressed whole at 104 tokens) 27.2 / 32.2 / 22.8 % (12).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="the root that holds the built demo workspace")
    ap.add_argument("--n", type=int, default=60, help="trained questions probed")
    args = ap.parse_args(argv)

    from clara import demo, io
    from clara.evaluation.rag import ChunkIndex
    from clara.evaluation.runner import EvalConfig, run_eval
    from clara.workspace import Workspace

    ws = Workspace(Path(args.root), demo.DEMO_NAME)
    if not demo.demo_is_built(ws):
        print(f"error: no built demo under {args.root} (run clara demo)", file=sys.stderr)
        return 2
    idx = ChunkIndex.from_workspace(ws, demo.DemoConfig().doc_tokens, 0)
    rng = random.Random(0)
    sets: dict[str, list[dict]] = {"gold": [], "wrong": [], "far": []}
    for i, r in enumerate(io.read_jsonl(demo.SAMPLE_QA)[:args.n]):
        gold = idx.gold(r["question"], r["answer"], r.get("keywords", []), r.get("source"))
        if not gold:
            continue
        ranked = [j for j in idx.search(r["question"], len(idx.texts)) if j not in gold]
        row = {"id": f"q{i}", "question": r["question"], "answer": r["answer"],
               "keywords": r["keywords"]}
        for name, chunk in (("gold", gold[0]), ("wrong", ranked[0]),
                            ("far", rng.choice(ranked[len(ranked) // 2:]))):
            sets[name].append({**row, "docs": [idx.texts[chunk]],
                               "pos_index": [0] if name == "gold" else []})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in sets.items():
            path = Path(tmp) / f"{name}.jsonl"
            io.write_jsonl(path, rows)
            r = run_eval(ws, EvalConfig(
                data=str(path), configs=[f"clara={demo.clara_run(ws, 2)}"],
                model=demo.CLARA_BASE, top_k=1, max_tokens=demo.DemoConfig().eval_max_tokens,
                chunk_tokens=demo.DemoConfig().doc_tokens, chunk_overlap=0,
                name=f"reads-{stamp}-{name}"), kind="bench")
            out[name] = {"keyword": r.summary[0]["keyword"], "em": r.summary[0]["em"],
                         "answers": [x["answer"] for x in r.results]}
    same = {k: sum(a == b for a, b in zip(out["gold"]["answers"], out[k]["answers"]))
            for k in ("wrong", "far")}
    print(f"{'chunk given':<12} {'keyword %':>9} {'EM %':>6} {'same answer as gold':>20}")
    for name in sets:
        print(f"{name:<12} {100 * out[name]['keyword']:>9.1f} {100 * out[name]['em']:>6.1f} "
              f"{same.get(name, len(sets[name])):>20}")
    print(f"questions: {len(sets['gold'])}")
    res = Path(__file__).resolve().parent / "results" / f"demo_reads-{stamp}.json"
    io.write_json(res, {"root": str(args.root), "questions": len(sets["gold"]),
                        "same_as_gold": same, **out})
    print(f"wrote {res}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
