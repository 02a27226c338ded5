"""report.md: what a finished run did, readable without the app."""

from __future__ import annotations

import math

from clara import io
from clara.runs import Run


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def build_report(run: Run) -> str:
    doc = run.config()
    st = run.raw_status()
    rows = run.metrics()
    train = [r for r in rows if "train_loss" in r]
    valid = [r for r in rows if "val_loss" in r]
    out = [f"# Run {run.id}", "",
           f"- kind: {doc.get('kind')}",
           f"- status: {st.get('status')} ({st.get('reason') or '-'})",
           f"- message: {st.get('message') or '-'}",
           f"- created: {doc.get('created')}; finished: {st.get('finished') or '-'}",
           f"- processes: {st.get('world_size') or 1}"
           + (f" ({st.get('backend')}: {', '.join(st.get('hosts') or [])})"
              if (st.get("world_size") or 1) > 1 else ""), ""]
    out += ["## Loss", ""]
    if train:
        finite = [r["train_loss"] for r in train if math.isfinite(r["train_loss"])]
        out += [f"- steps: {train[-1]['step']} of {st.get('total_steps') or '-'}",
                f"- train loss: first {_fmt(train[0]['train_loss'])}, last "
                f"{_fmt(train[-1]['train_loss'])}, lowest {_fmt(min(finite) if finite else None)}"]
    else:
        out.append("- no training step was completed")
    if valid:
        best = min(valid, key=lambda r: r["val_loss"])
        out += [f"- validation loss: first {_fmt(valid[0]['val_loss'])}, last "
                f"{_fmt(valid[-1]['val_loss'])}",
                f"- best step: {best['step']} (validation loss {_fmt(best['val_loss'])}); "
                "weights in adapters/best/"]
    out += ["", "## Timings", ""]
    if train:
        tps = [r["tokens_per_second"] for r in train if r.get("tokens_per_second")]
        out += [f"- training time: {_fmt(train[-1].get('elapsed_s'))} s",
                f"- tokens: {train[-1].get('tokens')}",
                f"- tokens/s (mean of reports): {_fmt(sum(tps) / len(tps) if tps else None)}",
                f"- peak memory: {_fmt(max(r.get('peak_memory_gb') or 0 for r in train))} GB"]
    out += ["", "## Configuration", "", "| setting | value |", "|---|---|"]
    out += [f"| {k} | {_fmt(v)} |" for k, v in sorted(doc.get("config", {}).items())]
    if doc.get("resolved"):
        out += [f"| resolved {k} | {_fmt(v)} |" for k, v in doc["resolved"].items()]
    center = next((e for e in run.events() if e.get("event") == "start"), {}).get(
        "retrieval_center")
    if center:  # a CLaRa stage's retrieval_center as its start decided it (auto)
        from clara.method.retrieval import center_line

        out.append(f"| decided retrieval_center | {center_line(center)} |")
    out += ["", "## Platform", ""]
    out += [f"- {k}: {_fmt(v)}" for k, v in doc.get("platform", {}).items()]
    return "\n".join(out) + "\n"


def write_report(run: Run) -> None:
    io.write_text(run.path / "report.md", build_report(run))
