"""CLaRa pipelines: stage 1 -> stage 2 -> stage 3 as three ordinary runs, chained by the
hand-off rules of clara-method §1.7 (stage 2 keeps stage 1's compressor and starts a fresh
generator; stage 3 loads both and creates the query reasoner as a copy of the compressor).

A pipeline is a folder `runs/<pipeline-id>/` holding `pipeline.toml` (no run.toml, so run
listings skip it):

    id, kind = "clara-pipeline", created, workspace, model (resolved), status, driver pid,
    config       the shared ClaraTrainConfig settings
    [stages.stageN]  data (resolved folder), overrides (iters / epochs / learning_rate /
                     top_k of that stage), run (the stage's run id, once created), status

Each stage is a normal run `<pipeline-id>-stageN` (the same engine, metrics, early stopping,
stop and resume as any run); stages 2 and 3 record `from_run` and `pipeline` in run.toml and
start from the previous run's best checkpoint (else its last). A stage run is created only when
the previous one has completed, so its `init_from` names a finished checkpoint.

The driver (`drive`) runs the unfinished stages in order, in the foreground or as a detached
process (`python -m clara.method.pipeline PIPELINE_DIR`); a stage that ends stopped, failed or
interrupted stops the pipeline, and driving it again resumes that stage, then continues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from clara import io, refs
from clara.errors import UserError
from clara.runs import (
    ACTIVE,
    Run,
    _proc_start,
    create_run,
    new_run_id,
    pid_alive,
    request_stop,
)
from clara.workspace import Workspace, now_iso, validate_name

PIPELINE_FILE = "pipeline.toml"
STOP_FILE = "stop.request"
KIND = "clara-pipeline"
STAGES = ("stage1", "stage2", "stage3")
STAGE_OVERRIDES = ("iters", "epochs", "learning_rate", "top_k")
# Stage 3's learning rate, unless given (--stage3-lr), is the shared one times this: it trains
# the query reasoner from a copy of a trained compressor, which the shared rate of stages 1-2
# walks away from (bench/clara_stage3_study.py)
STAGE3_LR_SCALE = 0.1


def docs_per_row(data_dir: str | Path) -> int | None:
    """Documents in the first row of a dataset's train.jsonl (stage 2 needs top_k to match)."""
    from clara.data.formats import DOC_KEYS

    for _, row in io.iter_jsonl(Path(data_dir) / "train.jsonl"):
        for key in DOC_KEYS:
            if isinstance(row, dict) and isinstance(row.get(key), list):
                return len(row[key])
        return None
    return None


class Pipeline:
    """A pipeline folder; every read of its status looks at its runs and its driver."""

    def __init__(self, ws: Workspace, path: Path):
        self.ws, self.path = ws, Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def file(self) -> Path:
        return self.path / PIPELINE_FILE

    @property
    def stop_file(self) -> Path:
        return self.path / STOP_FILE

    @property
    def exists(self) -> bool:
        return self.file.is_file()

    def doc(self) -> dict:
        return io.read_toml(self.file)

    def update(self, **changes) -> dict:
        doc = {**self.doc(), **changes, "updated": now_iso()}
        io.write_toml(self.file, doc)
        return doc

    def update_stage(self, stage: str, **changes) -> dict:
        doc = self.doc()
        doc["stages"][stage] = {**doc["stages"][stage], **changes}
        doc["updated"] = now_iso()
        io.write_toml(self.file, doc)
        return doc

    def run_of(self, stage: str) -> Run | None:
        rid = self.doc()["stages"][stage].get("run")
        return Run(self.ws.runs_dir / rid) if rid else None

    def driver_alive(self) -> bool:
        doc = self.doc()
        return bool(doc.get("driver_pid")) and pid_alive(doc["driver_pid"],
                                                         doc.get("driver_start") or None)

    def status(self) -> dict:
        """{"id", "status", "stage" (the current one), "stages": [{stage, run, status, step,
        total_steps}]}, computed from the runs (a dead driver or worker shows as interrupted)."""
        doc = self.doc()
        stages, current = [], None
        for s in STAGES:
            run = self.run_of(s)
            st = run.status() if run is not None and run.exists else {}
            last = (run.last_metric("train_loss") or {}) if run is not None and run.exists else {}
            stages.append({"stage": s, "run": run.id if run else None,
                           "status": st.get("status", "pending"), "step": last.get("step", 0),
                           "total_steps": st.get("total_steps"),
                           "data": doc["stages"][s]["data"]})
            if current is None and st.get("status") != "completed":
                current = s
        states = [x["status"] for x in stages]
        if all(x == "completed" for x in states):
            overall = "completed"
        elif any(x in ACTIVE for x in states) or self.driver_alive():
            overall = "running"
        else:
            cur = next(x for x in stages if x["stage"] == current)["status"]
            if cur in ("stopped", "failed", "interrupted"):
                overall = cur
            elif doc.get("status") in ACTIVE and doc.get("driver_pid"):
                overall = "interrupted"  # the driver died between two stages
            else:
                overall = doc.get("status", "queued")
        return {"id": self.id, "status": overall, "stage": current, "stages": stages,
                "model": doc.get("model"), "created": doc.get("created"),
                "message": doc.get("message"), "report": doc.get("report") or {},
                "warnings": doc.get("warnings") or []}

    def current_run(self) -> Run | None:
        for s in STAGES:
            run = self.run_of(s)
            if run is None or run.status().get("status") != "completed":
                return run
        return None


# ---------------------------------------------------------------------------- create / find
def create_pipeline(ws: Workspace, config: dict, model: str, data: dict[str, str],
                    overrides: dict[str, dict] | None = None, name: str | None = None) -> Pipeline:
    """Write the pipeline folder: shared config (a ClaraTrainConfig dict), resolved model, the
    resolved data folder and overrides of each stage. No run is made yet."""
    pid = validate_name(name, "pipeline") if name else new_run_id("clara-pipeline")
    path = ws.child("runs", pid)
    if path.exists():
        raise UserError(f"{pid!r} already exists in workspace {ws.name}")
    for s in STAGES:
        if s not in data:
            raise UserError(f"pipeline: no data for {s}")
    overrides = overrides or {}
    bad = [k for o in overrides.values() for k in o if k not in STAGE_OVERRIDES]
    if bad:
        raise UserError(f"pipeline: {bad[0]}: not a per-stage setting "
                         f"({', '.join(STAGE_OVERRIDES)})")
    stages = {}
    for s in STAGES:
        o = {k: v for k, v in (overrides.get(s) or {}).items() if v is not None}
        stages[s] = {"data": str(data[s]), "overrides": o, "run": "", "status": "pending"}
    path.mkdir(parents=True)
    io.write_toml(path / PIPELINE_FILE, {
        "id": pid, "kind": KIND, "created": now_iso(), "updated": now_iso(),
        "workspace": ws.name, "model": model, "status": "queued", "message": "",
        "driver_pid": 0, "driver_start": "",
        "config": {k: v for k, v in config.items() if v is not None}, "stages": stages})
    return Pipeline(ws, path)


def list_pipelines(ws: Workspace) -> list[Pipeline]:
    out = [Pipeline(ws, p) for p in ws.items("runs") if (p / PIPELINE_FILE).is_file()]
    return sorted(out, key=lambda p: (p.doc().get("created", ""), p.id))


def find_pipeline(ws: Workspace, ref: str) -> Pipeline:
    """A pipeline by id, unique id prefix, or `last`; also by the id of one of its runs."""
    items = list_pipelines(ws)
    if ref == "last":
        if not items:
            raise UserError(f"no pipelines in workspace {ws.name}")
        return items[-1]
    for p in items:
        if p.id == ref:
            return p
    matches = [p for p in items if p.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"pipeline {ref!r} is ambiguous: {', '.join(p.id for p in matches[:5])}")
    for p in items:
        if ref in [st.get("run") for st in p.doc()["stages"].values()]:
            return p
    raise UserError(f"no pipeline {ref!r} in workspace {ws.name} (see: clara pipelines list)")


# ---------------------------------------------------------------------------- the driver
def stage_config(pipe: Pipeline, stage: str, init_from: Path | None) -> dict:
    """The ClaraTrainConfig dict of a stage run of this pipeline."""
    return effective_stage_config(pipe.doc(), stage, init_from)


def effective_stage_config(doc: dict, stage: str, init_from: Path | None,
                           check_rows: bool = True) -> dict:
    """The ClaraTrainConfig dict of a stage run from a pipeline's {"config", "stages"}: shared
    settings, the stage's overrides, its data, its starting checkpoint; stage 2's top_k
    defaults to its rows' document count and stage 3's to stage 2's (check_rows=False: the
    datasets are not read, the defaults stay)."""
    from clara.method.config import ClaraTrainConfig

    entry = doc["stages"][stage]
    values = {**doc["config"], **entry["overrides"], "data": entry["data"],
              "init_from": str(init_from) if init_from else None}
    if "iters" in entry["overrides"] and "epochs" not in entry["overrides"]:
        values["epochs"] = None  # the stage's own step count beats shared epochs
    if stage == "stage3" and "learning_rate" not in entry["overrides"]:
        values["learning_rate"] = values.get("learning_rate", ClaraTrainConfig.learning_rate) \
            * STAGE3_LR_SCALE
    rows = docs_per_row if check_rows else (lambda _: None)
    if stage == "stage1":
        values["top_k"] = 1
    elif "top_k" not in entry["overrides"]:
        if stage == "stage2":
            values["top_k"] = rows(entry["data"]) or values.get("top_k")
        else:
            s2 = doc["stages"]["stage2"]
            values["top_k"] = s2["overrides"].get("top_k") or \
                rows(s2["data"]) or values.get("top_k")
    cfg = ClaraTrainConfig(**values)
    cfg.validate()
    return asdict(cfg)


def _make_stage_run(pipe: Pipeline, stage: str) -> Run:
    i = STAGES.index(stage)
    prev = pipe.run_of(STAGES[i - 1]) if i else None
    init_from = refs.run_checkpoint(prev).path if prev is not None else None
    config = stage_config(pipe, stage, init_from)
    doc = pipe.doc()
    resolved = {"model": doc["model"], "data": doc["stages"][stage]["data"]}
    extra = {"pipeline": pipe.id}
    if prev is not None:
        resolved["init_from"] = str(init_from)
        extra["from_run"] = prev.id
    run = create_run(pipe.ws, f"clara-{stage}", config, resolved=resolved,
                     name=f"{pipe.id}-{stage}", extra=extra)
    pipe.update_stage(stage, run=run.id)
    return run


# ---------------------------------------------------------------------------- quality report
REPORT_KEYS = (("em_gold", "EM, gold documents"), ("em", "EM, own top-k"),
               ("recall@1", "recall@1"))


def truncation_warnings(pipe: Pipeline, limit: int = 2000) -> list[str]:
    """One line per stage whose training documents doc_max_tokens cuts, in the base's tokens."""
    from itertools import islice

    from clara.data.chunking import load_tokenizer
    from clara.data.stats import doc_truncation, truncation_warning

    doc = pipe.doc()
    try:
        tok = load_tokenizer(doc["model"], pipe.ws)
    except UserError:
        return []  # no tokenizer to count with: the stage runs log it with the model's own
    n = int(doc["config"].get("doc_max_tokens", 256))
    out = []
    for s in STAGES:
        rows = (r for _, r in islice(io.iter_jsonl(Path(doc["stages"][s]["data"]) /
                                                   "train.jsonl"), limit))
        line = truncation_warning(doc_truncation(rows, tok, n), Path(doc["model"]).name)
        if line:
            out.append(f"{s}: {line}")
    return out


def stage3_report(run: Run) -> dict:
    """Stage 2 against stage 3 on stage 3's validation rows: the validation at stage 3's start
    (stage 2's generator, the query reasoner a copy of the compressor) and at the checkpoint
    stage 3 hands over (its best, chosen by exact answers + recall). Empty without them."""
    rows = [r for r in io.read_jsonl(run.path / "metrics.jsonl")
            if "val_loss" in r] if (run.path / "metrics.jsonl").is_file() else []
    best_file = run.adapters / "best" / "best.json"
    start = next((r for r in rows if r["step"] == 0), None)
    if start is None or "val_em" not in start:
        return {}
    step = io.read_json(best_file)["step"] if best_file.is_file() else rows[-1]["step"]
    end = next((r for r in rows if r["step"] == step), rows[-1])

    def pick(r):
        return {k: round(float(r[f"val_{k}"]), 4) for k, _ in REPORT_KEYS if f"val_{k}" in r}

    report = {"stage2": pick(start), "stage3": pick(end), "stage3_step": int(end["step"])}
    worse = [k for k in report["stage2"] if report["stage3"].get(k, 0) < report["stage2"][k]]
    report["worse"] = worse
    # how many questions each validation scored: what size of change it can tell from noise
    rows = next((e for e in run.events() if e.get("event") == "start"), {}).get("valid_rows")
    cfg = run.config().get("config", {}) if (run.path / "run.toml").is_file() else {}
    if rows:
        vb = cfg.get("val_batches", -1)
        report["questions"] = int(rows if vb is None or vb < 0
                                  else min(rows, vb * cfg.get("batch_size", 1)))
    return report


def run_center(run: Run | None) -> dict:
    """The retrieval_center decision a stage run recorded in its start event ({} if none)."""
    if run is None or not run.exists:
        return {}
    start = next((e for e in run.events() if e.get("event") == "start"), {})
    return start.get("retrieval_center") or {}


def report_lines(report: dict) -> list[str]:
    from clara.method.retrieval import center_line

    out = [f"  retrieval_center: {center_line(report['retrieval_center'])}"] \
        if report.get("retrieval_center") else []
    if "stage2" not in report:
        return out
    out += [f"  quality on stage 3's validation rows: stage 2 -> stage 3 (step "
            f"{report['stage3_step']})"]
    for k, label in REPORT_KEYS:
        if k in report["stage2"]:
            a, b = report["stage2"][k], report["stage3"].get(k, 0.0)
            out.append(f"    {label:<20} {100 * a:6.1f} -> {100 * b:6.1f}"
                       + ("   WORSE" if k in report["worse"] else ""))
    if report.get("questions"):  # two sd of a share near 0.5: 1 / sqrt(n)
        q = report["questions"]
        out.append(f"    ({q} validation questions: a change under {100 / q ** 0.5:.0f} points "
                   "may be noise)")
    return out


Follow = Callable[[str, Run, subprocess.Popen], dict]


def _wait(stage: str, run: Run, proc: subprocess.Popen) -> dict:
    proc.wait()
    return run.status()


def drive(pipe: Pipeline, follow: Follow = _wait,
          stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Run the pipeline's unfinished stages in order; return its final status. `follow(stage,
    run, proc)` waits for a stage's worker (and may show progress); a stage that does not
    complete stops the pipeline there."""
    from clara.runs import start_worker, wait_until_done

    if pipe.stop_file.exists():
        pipe.stop_file.unlink()
    pipe.update(status="running", message="", driver_pid=os.getpid(),
                driver_start=_proc_start(os.getpid()) or "")
    try:
        if "warnings" not in pipe.doc():
            pipe.update(warnings=truncation_warnings(pipe))
            for line in pipe.doc()["warnings"]:
                print(f"warning: documents cut: {line}", file=sys.stderr, flush=True)
        for stage in STAGES:
            run = pipe.run_of(stage)
            st = run.status() if run is not None else {}
            if st.get("status") == "completed":
                continue
            if stop_requested() or pipe.stop_file.exists():
                pipe.update(status="stopped", message=f"stopped before {stage}")
                return pipe.status()
            if run is None:
                run = _make_stage_run(pipe, stage)
            pipe.update_stage(stage, status="running")
            if st.get("status") in ACTIVE and st.get("pid"):
                st = wait_until_done(run)  # already running (a driver died): wait for it
            else:
                st = follow(stage, run, start_worker(run))
            pipe.update_stage(stage, status=st.get("status"))
            if st.get("status") != "completed":
                pipe.update(status=st.get("status"),
                            message=f"{stage} ({run.id}) {st.get('status')}: "
                                    f"{st.get('message') or ''}".rstrip(": "))
                return pipe.status()
        # stage 2 against stage 3, said plainly when stage 3 hands over something worse
        report = stage3_report(pipe.run_of("stage3"))
        center = run_center(pipe.run_of("stage2"))  # auto's decision, which stage 3 kept
        if center:
            report["retrieval_center"] = center
        message = ""
        if report.get("worse"):
            s2 = refs.run_checkpoint(pipe.run_of("stage2")).path
            message = (f"stage 3 is worse than stage 2 on {', '.join(report['worse'])} (its "
                       f"best validation, step {report['stage3_step']}); stage 2's checkpoint "
                       f"answers better: {s2}")
        pipe.update(status="completed", message=message, report=report)
    except BaseException as e:  # Ctrl-C between stages, or a stage that cannot be made
        pipe.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                    message=str(e) or type(e).__name__)
        raise
    finally:
        pipe.update(driver_pid=0, driver_start="")
    return pipe.status()


def stop_pipeline(pipe: Pipeline) -> bool:
    """Ask the pipeline to stop: its running stage saves and stops, no later stage starts."""
    io.write_text(pipe.stop_file, now_iso() + "\n")
    run = pipe.current_run()
    stopped = bool(run is not None and run.exists and request_stop(run))
    # the driver (detached or a foreground `clara train pipeline`) sees the stage end stopped,
    # or the stop file before its next stage, and exits by itself
    return stopped or pipe.driver_alive()


def start_driver(pipe: Pipeline) -> subprocess.Popen:
    """The detached driver: `python -m clara.method.pipeline DIR` in its own session."""
    from clara.platform import env_with_blas

    if pipe.driver_alive():
        raise UserError(f"pipeline {pipe.id} is already running (driver pid "
                         f"{pipe.doc()['driver_pid']})")
    env = env_with_blas()
    env["PYTHONUNBUFFERED"] = "1"
    pipe.update(status="queued", message="")
    with open(pipe.path / "pipeline.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clara.method.pipeline", str(pipe.path)],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m clara.method.pipeline PIPELINE_DIR", file=sys.stderr)
        return 2
    path = Path(argv[0]).resolve()
    if not (path / PIPELINE_FILE).is_file():
        print(f"{path}: not a pipeline folder (no {PIPELINE_FILE})", file=sys.stderr)
        return 2
    ws = Workspace(path.parent.parent.parent, path.parent.parent.name)
    pipe = Pipeline(ws, path)
    asked = {"stop": False}
    current: dict = {}

    def on_signal(signum, frame):
        asked["stop"] = True
        run = current.get("run")
        if run is not None:
            request_stop(run)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def follow(stage, run, proc):
        current["run"] = run
        print(f"{now_iso()} {stage}: run {run.id} (pid {proc.pid})", flush=True)
        proc.wait()
        current.pop("run", None)
        st = run.status()
        print(f"{now_iso()} {stage}: {st.get('status')} {st.get('message') or ''}", flush=True)
        return st

    try:
        st = drive(pipe, follow, lambda: asked["stop"])
    except UserError as e:
        pipe.update(status="failed", message=str(e))
        print(f"failed: {e}", flush=True)
        return 1
    print(json.dumps(st), flush=True)
    return 0 if st["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
