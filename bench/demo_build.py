"""How long the demo takes to build, step by step: the build with its steps side by side
(DemoConfig.parallel 2, the default) against the same build one step at a time (parallel 1),
each from scratch in a fresh root, by the builder `clara demo` and the app run. The figures of the
two builds must be the same (every step is a process of its own, deterministic on the CPU).

    python bench/demo_build.py                      # parallel 2 then 1, in /tmp
    python bench/demo_build.py --parallel 2 --config '{"hrm": false}'

Prints a table (wall and CPU seconds of the whole build, seconds of each step as
`.demo-build.json` records them) and writes bench/results/demo_build-DATE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build(root: Path, parallel: int, config: dict) -> dict:
    """One build from scratch: wall, CPU of the build and every process it waited for."""
    from clara.platform import env_with_blas

    cfg = json.dumps({**config, "parallel": parallel})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.monotonic()
    # the builder `clara demo` and the app run, with the BLAS preload the CLI gives itself
    out = subprocess.run([sys.executable, "-m", "clara.demo", str(root), "--config", cfg],
                         capture_output=True, text=True, env=env_with_blas())
    wall = time.monotonic() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"build failed ({out.returncode}): {out.stdout[-2000:]}"
                         f"{out.stderr[-2000:]}")
    ws = root / "demo"
    doc = json.loads((ws / ".demo-build.json").read_text())
    # the HRM run the build leaves training: stop it, it is not the build's
    subprocess.run([sys.executable, "-m", "clara", "--root", str(root), "runs", "stop",
                    "demo-sudoku"], capture_output=True)
    return {"parallel": parallel, "wall_s": round(wall, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "took_s": doc.get("took_s", {}),
            "report": (ws / "report.md").read_text() if (ws / "report.md").is_file() else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parallel", default="2,1", help="builds to run, by DemoConfig.parallel")
    ap.add_argument("--config", default="{}", help="DemoConfig fields (JSON) for every build")
    ap.add_argument("--root", default=None, help="folder for the builds (default: a temp dir)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    config = json.loads(a.config)
    base = Path(a.root or tempfile.mkdtemp(prefix="demo-build-"))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(a.out or REPO / "bench" / "results" / f"demo_build-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in [int(x) for x in a.parallel.split(",")]:
        rows.append(build(base / f"p{p}-{len(rows)}", p, config))
        load = os.getloadavg()[0]
        rows[-1]["load_after"] = round(load, 2)
        out.write_text(json.dumps({"config": config, "cpus": os.cpu_count(), "builds": rows},
                                  indent=1))
    steps = list(dict.fromkeys(k for r in rows for k in r["took_s"]))
    print(f"{'parallel':>8} {'wall s':>7} {'CPU s':>7} {'load':>5}  " + " ".join(
        f"{s.replace('eval-demo-', 'eval '):>18}" for s in steps))
    for r in rows:
        print(f"{r['parallel']:>8} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} {r['load_after']:>5.1f}  "
              + " ".join(f"{r['took_s'].get(s, 0):>18.1f}" for s in steps))
    if len(rows) > 1:
        same = all(r["report"] == rows[0]["report"] for r in rows)
        print(f"the same figures in every build's report.md: {'yes' if same else 'NO'}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
