"""Token statistics of dataset rows: what `dataset.toml` records and `clara data show` prints."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Iterable

from clara.data import validate
from clara.data.chunking import TokenCounter


def _docs(row: dict) -> list[str]:
    for key in validate.DOC_KEYS:
        if isinstance(row.get(key), list):
            return [d for d in row[key] if isinstance(d, str)]
    return []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def row_text(row: dict, kind: str, tokenizer: TokenCounter) -> str:
    """The text of a row as a model would read it (chats through the chat template if any)."""
    kind = validate.canonical_kind(kind)
    if kind in ("text", "docs"):
        return str(row.get("text", ""))
    if kind == "chat":
        messages = row.get("messages") or []
        rendered = tokenizer.render_chat(messages)
        if rendered is not None:
            return rendered
        return "\n".join(f"{m.get('role')}: {m.get('content') or ''}" for m in messages
                         if isinstance(m, dict))
    if kind == "completions":
        return f"{row.get('prompt', '')}\n{row.get('completion', '')}"
    if kind == "qa":
        return f"{row.get('question', '')}\n{row.get('answer', '')}"
    parts = _docs(row) + _strings(row.get("question"))
    parts += _strings(row.get("answer")) or _strings(row.get("answers")) or \
        _strings(row.get("golden_answers"))[:1]
    return "\n".join(parts)


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def lengths(rows: Iterable[dict], kind: str, tokenizer: TokenCounter) -> list[int]:
    return [tokenizer.count(row_text(r, kind, tokenizer)) for r in rows if isinstance(r, dict)]


def summarize(values: list[int]) -> dict:
    v = sorted(values)
    if not v:
        return {"rows": 0}
    return {"rows": len(v), "min": v[0], "mean": round(sum(v) / len(v), 1),
            "p50": percentile(v, 50), "p90": percentile(v, 90), "max": v[-1]}


def token_stats(rows: Iterable[dict], kind: str, tokenizer: TokenCounter) -> dict:
    """rows, min, mean, p50, p90, max tokens per row."""
    return summarize(lengths(rows, kind, tokenizer))


STAGE_KINDS = ("stage1", "stage2", "stage3")


def doc_truncation(rows: Iterable[dict], tokenizer: TokenCounter, doc_max_tokens: int,
                   limit: int = 2000) -> dict:
    """How a CLaRa compressor with `doc_max_tokens` would cut the documents of stage rows (the
    first `limit` documents): their token lengths, the share of documents cut, and the share of
    each document's tokens lost (mean and worst)."""
    seen: set[str] = set()
    lens = []
    for r in rows:
        if not isinstance(r, dict):
            continue
        for d in _docs(r):
            if d not in seen and len(seen) < limit:
                seen.add(d)
                lens.append(tokenizer.count(d))
    lost = [max(0, n - doc_max_tokens) / n for n in lens if n]
    return {**summarize(lens), "doc_max_tokens": doc_max_tokens,
            "cut_docs": round(sum(1 for x in lost if x > 0) / len(lens), 4) if lens else 0.0,
            "cut_tokens_mean": round(sum(lost) / len(lens), 4) if lens else 0.0,
            "cut_tokens_max": round(max(lost), 4) if lost else 0.0}


def truncation_warning(t: dict, tokenizer_name: str) -> str | None:
    """One line when documents are cut, else None."""
    if not t.get("rows") or not t["cut_docs"]:
        return None
    return (f"{100 * t['cut_docs']:.0f}% of the documents are longer than doc_max_tokens "
            f"{t['doc_max_tokens']} in {tokenizer_name}'s tokens (p50 {t['p50']}, max {t['max']})"
            f": on average {100 * t['cut_tokens_mean']:.0f}% of each document is cut (worst "
            f"{100 * t['cut_tokens_max']:.0f}%); the compressor never sees it. Raise "
            "doc_max_tokens, or use a base whose tokenizer splits these documents less finely.")


def dataset_report(folder: str | Path, tokenizer: TokenCounter, max_length: int | None = None,
                   samples: int = 3, kind: str = "auto", doc_max_tokens: int = 256) -> dict:
    """Counts and token lengths per split, the share over `max_length`, and sample rows; for
    CLaRa stage datasets also each split's documents as `doc_max_tokens` cuts them.

    A single JSONL file is reported as one split named after the file.
    """
    from clara import io
    from clara.data.datasets import read_meta

    folder = Path(folder)
    files = [folder] if folder.is_file() else validate.dataset_files(folder)
    kind = validate.detect_kind(folder) if kind == "auto" else validate.canonical_kind(kind)
    meta = read_meta(folder) if folder.is_dir() else {}
    report: dict[str, Any] = {"name": meta.get("name", folder.stem if folder.is_file()
                                               else folder.name),
                              # kind: the dataset's own (cpt, sft, stage2...), as `data list`,
                              # the app and the Train form name it; format: its rows' layout
                              "kind": meta.get("kind") or kind, "format": kind,
                              "path": str(folder), "tokenizer": tokenizer.name,
                              "max_length": max_length, "splits": {}, "samples": []}
    for f in files:
        rows = io.read_jsonl(f)
        lens = lengths(rows, kind, tokenizer)
        stats = summarize(lens)
        if max_length:
            over = sum(1 for n in lens if n > max_length)
            stats["truncated"] = round(over / len(lens), 4) if lens else 0.0
        if kind in STAGE_KINDS:
            stats["documents"] = doc_truncation(rows, tokenizer, doc_max_tokens)
        report["splits"][f.stem] = stats
        if f.stem in ("train", files[0].stem) and not report["samples"] and samples > 0:
            picks = sorted(random.Random(0).sample(range(len(rows)), min(samples, len(rows))))
            report["samples"] = [rows[i] for i in picks]
    for key in ("created", "seed", "sources", "parameters"):
        if key in meta:
            report[key] = meta[key]
    return report
