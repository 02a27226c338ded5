"""Key-to-render latency of the workbench app while a real training runs on the same machine.

The app runs in a real terminal (tmux, 120x40). The benchmark sends keys with `tmux send-keys`
and polls `tmux capture-pane` until the key's effect is on screen: a mode switch (F2..F9) until
the header names the new mode, a typed character until it shows in a text field. Three phases
in one run, the first being the reference:

  idle       no training
  nice 10    a tiny LoRA training in the background, started as the app starts it (niced)
  nice 0     the same training at the app's own priority (how it was before)

Then quitting: a Chat reply is started (the model loads and generates in a thread worker) and
ctrl+q is sent at once; the time until the process has exited is measured.

Writes bench/results/tui_latency-DATE.json (git-ignored) and prints a table.
Needs tmux. Example: python bench/tui_latency.py --switches 40

Figures (2 shared CPU cores, other sessions' tests running: load 7-13; `--switches 35
--typed 15`; before = commit 00bc9b4, after = the branch app5 of 2026-11-30, run back to back):

  before                  what      n  median ms   p90 ms   p99 ms   max ms
  idle                    switch   35      207.6   2868.5   7927.4   7927.4
  idle                    typing   15       30.7     48.9     56.2     56.2
  training, nice 10       switch   35      360.3   1648.9   6300.9   6300.9
  training, nice 10       typing   15       44.6     64.1     76.8     76.8
  training, nice 0        switch   35      305.3   1000.2   5607.7   5607.7
  training, nice 0        typing   15       46.1     68.9     85.6     85.6
  quit during a chat reply, with a training running: 5.34 s

  after                   what      n  median ms   p90 ms   p99 ms   max ms
  idle                    switch   35      156.3   1483.5   6821.0   6821.0
  idle                    typing   15       90.9    157.0    440.0    440.0
  training, nice 10       switch   35      126.6    233.5    287.1    287.1
  training, nice 10       typing   15       78.1    176.4   2486.1   2486.1
  training, nice 0        switch   35      141.8    287.7    349.6    349.6
  training, nice 0        typing   15       82.0    180.6    183.8    183.8
  quit during a chat reply, with a training running: 0.65 s

  after, on a quiet machine (load 1; the same command, main of 2026-11-30 10:17)
  idle                    switch   35       72.3    622.1   2258.4   2258.4
  idle                    typing   15       14.9     37.2     73.8     73.8
  training, nice 10       switch   35      101.4    181.7    197.8    197.8
  training, nice 10       typing   15      113.7    159.9    188.0    188.0
  training, nice 0        switch   35      138.7    195.2    263.1    263.1
  training, nice 0        typing   15       95.3    198.4    436.1    436.1
  quit during a chat reply, with a training running: 0.45 s

With the app's own training (nice 10) on a quiet machine every p99 is under 250 ms, but the
medians sit at the 100 ms target (switch) or above it (typing: 114 ms against 45 ms before the
one-key-at-a-time hand-on; its cost under a training is not yet separated).

The idle phase's p90/p99 are each mode's first visit (its screen built then; the bench starts
switching 2 s after the app starts, before any is built in the background). Once a mode is
built, a switch with a training running took 80-290 ms here (median 127 ms): the target, median
100 ms and p99 250 ms, is met on a quiet machine (idle switches 70-90 ms in an earlier run at
load 6) but not under this load. The one 2.5 s typing outlier is a key that came while a mode
screen was being built in the background (that happens only after 3 s without a key).
Where the time went before: Textual's Footer rebuilt all its keys on every switch; a form
looked each field up with a DOM query on every keystroke; the Train preview planned (files
read) on the event loop; every mode refilled its tables and Selects on each visit; the Data
mode read its QA and source lists on the event loop; a hidden Runs mode redrew its plot every
0.5 s; and a mode's first visit reparsed every stylesheet three times.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SESSION = "clara-bench"
MODES = [("f2", "Workspaces"), ("f3", "Data"), ("f4", "Train"), ("f5", "Runs"), ("f7", "Chat"),
         ("f8", "Eval"), ("f9", "Models")]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def wait_screen(predicate, timeout: float = 30.0, poll: float = 0.004) -> float:
    """Seconds until predicate(screen text) holds (inf on timeout)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate(screen()):
            return time.perf_counter() - t0
        time.sleep(poll)
    return float("inf")


def key_latency(key: str, predicate) -> float:
    t0 = time.perf_counter()
    tmux("send-keys", "-t", SESSION, key)
    waited = wait_screen(predicate)
    return waited if waited == float("inf") else time.perf_counter() - t0


def header_says(title: str):
    return lambda text: f" clara  {title} " in (text.splitlines() or [""])[0]


def build_workspace(root: Path):
    """A workspace with a tiny model (hidden 64, 2 layers) and a small text dataset."""
    from clara.data.datasets import write_dataset
    from clara.models.tiny import TinyConfig, build_tiny_model
    from clara.workspace import Workspace

    ws = Workspace(root, "bench").create(description="tui latency benchmark")
    words = ("mill harbour bell river tower glass Alia Borun Cetra painted built repaired "
             "rang in the a of and 1801 1812 1790").split()
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(40)) for i in range(80)]
    build_tiny_model(ws.models_dir / "tiny", texts,
                     TinyConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=512, seed=0))
    write_dataset(ws, "notes", "cpt", {"train": [{"text": t} for t in texts[:70]],
                                       "valid": [{"text": t} for t in texts[70:]]})
    return ws


def start_training(ws, nice: int):
    """A long tiny LoRA run, launched as the Train screen launches one."""
    import clara.runs as runs
    from clara.train.launch import lora_run

    run = lora_run(ws, {"model": "tiny", "data": "notes", "mode": "cpt", "iters": 100000,
                        "batch_size": 4, "max_seq_length": 64, "val_every": 200,
                        "save_every": 100000})
    saved, runs.WORKER_NICE = runs.WORKER_NICE, nice
    try:
        proc = runs.start_worker(run, detach=True)
    finally:
        runs.WORKER_NICE = saved
    deadline = time.monotonic() + 300
    metrics = run.path / "metrics.jsonl"
    while not (metrics.is_file() and metrics.stat().st_size > 0):  # training has begun
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"training did not start: see {run.path / 'log.txt'}")
        time.sleep(0.5)
    return run, proc


def stop_training(run, proc) -> None:
    from clara.runs import request_stop

    request_stop(run)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_app(root: Path, marker: Path) -> None:
    tmux("kill-session", "-t", SESSION)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from tui.app import run_app; run_app(Path({str(root)!r}), 'bench')")
    cmd = f"{sys.executable} -c \"{code}\"; date +%s.%N > {marker}"
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", cmd)
    if wait_screen(header_says("Workspaces"), timeout=120) == float("inf"):
        raise SystemExit("the app did not start:\n" + screen())
    time.sleep(2.0)  # the first screen's workers settle


def phase(switches: int, typed: int) -> dict:
    """Mode switches round the F-keys, then characters typed into the Data build name."""
    times = []
    i = 0
    while len(times) < switches:
        key, title = MODES[i % len(MODES)]
        i += 1
        times.append(key_latency(key.upper(), header_says(title)))
    key_latency("F3", header_says("Data"))
    tmux("send-keys", "-t", SESSION, "C-n")
    time.sleep(0.5)
    typing = []
    text = ""
    for n in range(typed):
        ch = "abcdefghij"[n % 10]
        text += ch
        want = text[-12:]
        typing.append(key_latency(ch, lambda s, w=want: w in s))
    tmux("send-keys", "-t", SESSION, "C-u")  # clear the field
    return {"switch_s": times, "typing_s": typing}


def stats(values: list[float]) -> dict:
    vals = sorted(values)
    p = lambda q: vals[min(len(vals) - 1, int(round(q * (len(vals) - 1))))]  # noqa: E731
    return {"n": len(vals), "median_ms": 1000 * statistics.median(vals),
            "p90_ms": 1000 * p(0.9), "p99_ms": 1000 * p(0.99), "max_ms": 1000 * vals[-1]}


def quit_time(marker: Path) -> float:
    """Seconds from ctrl+q to the process's end, right after a Chat reply was started."""
    key_latency("F7", header_says("Chat"))
    time.sleep(1.0)
    tmux("send-keys", "-t", SESSION, *"hello there", "Enter")
    time.sleep(0.3)  # the model is loading or generating in its thread worker now
    t0 = time.time()
    tmux("send-keys", "-t", SESSION, "C-q")
    deadline = time.monotonic() + 60
    while not marker.is_file() or not marker.read_text().strip():
        if time.monotonic() > deadline:
            return float("inf")
        time.sleep(0.01)
    return float(marker.read_text()) - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--switches", type=int, default=35, help="mode switches per phase")
    p.add_argument("--typed", type=int, default=20, help="characters typed per phase")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed (apt-get install tmux)")

    from clara import io
    from clara.platform import describe

    result = {"platform": describe(), "settings": vars(args), "phases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "workspaces"
        ws = build_workspace(root)
        marker = Path(tmp) / "quit-marker"
        start_app(root, marker)
        try:
            for name, nice in (("idle", None), ("training, nice 10", 10),
                               ("training, nice 0", 0)):
                training = start_training(ws, nice) if nice is not None else None
                try:
                    print(f"  phase {name} …", file=sys.stderr)
                    raw = phase(args.switches, args.typed)
                finally:
                    if training:
                        stop_training(*training)
                result["phases"][name] = {"switch": stats(raw["switch_s"]),
                                          "typing": stats(raw["typing_s"]), "raw": raw}
            training = start_training(ws, 10)
            try:
                result["quit_s"] = quit_time(marker)
            finally:
                stop_training(*training)
        finally:
            tmux("kill-session", "-t", SESSION)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    io.write_json(Path(args.out) / f"tui_latency-{stamp}.json", result)
    print(f"{'phase':<20} {'what':<12} {'n':>4} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}")
    for name, ph in result["phases"].items():
        for what in ("switch", "typing"):
            s = ph[what]
            print(f"{name:<20} {what:<12} {s['n']:>4} {s['median_ms']:>10.1f} "
                  f"{s['p90_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f}")
    print(f"quit during a chat reply, with a training running: {result['quit_s']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
