"""Evaluation runs: configurations answered over one QA set, scored, written to `evals/<id>/`.

Configurations (`parse_spec`), each optionally `=ADAPTER` (see clara.chat.models):
    closed              closed book: the question alone (base, or `closed=RUN` for an adapter)
    rag                 raw-text RAG: BM25 top-k of the workspace's source chunks in the prompt
    clara=RUN           CLaRa from documents: the row's "docs", else the BM25 top-k chunks,
                        compressed and injected
    clara-retrieval=RUN CLaRa stage 3: the query reasoner picks the top-k of the row's "docs",
                        else of every source chunk (compressed once)
    memory              the BM25 top-k pairs of the `memory` QA dataset in the prompt, rendered
                        as clara.chat.memory renders them (a model fine-tuned on such rows:
                        `memory=RUN`); the memory is a dataset, not the rows, so the questions
                        asked are never in it unless the user put them there
Scores: EM, F1, cover-EM (clara-method §5 normalisation), keyword match where the row has
keywords, recall@k where retrieval happens; latency, time to first token and prompt tokens.

    evals/<id>/eval.toml      the configuration
    evals/<id>/results.jsonl  one row per question per configuration
    evals/<id>/summary.json   means per configuration (and per category)
    evals/<id>/summary.md     the same as a Markdown table
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from clara import io
from clara.chat.engine import ChatEngine, ChatSettings
from clara.errors import UserError, UsageError
from clara.evaluation.metrics import answer_scores, recall_at_k
from clara.evaluation.qa import QARow, load_qa, read_qa_file
from clara.workspace import Workspace, now_iso, validate_name

KINDS = ("closed", "rag", "clara", "clara-retrieval", "memory")
METRICS = ("em", "f1", "cover_em", "keyword", "recall", "latency", "ttft", "prompt_tokens",
           "generation_tokens")


@dataclass(frozen=True)
class EvalSpec:
    kind: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}={self.adapter}" if self.adapter else self.kind


def parse_spec(text: str) -> EvalSpec:
    kind, _, adapter = text.strip().partition("=")
    kind = {"base": "closed", "closed-book": "closed", "adapter": "closed"}.get(kind, kind)
    if kind not in KINDS:
        raise UserError(f"configuration {text!r}: kind must be one of {', '.join(KINDS)} "
                         "(optionally =ADAPTER)")
    if kind.startswith("clara") and not adapter:
        raise UserError(f"configuration {text!r}: {kind} needs a CLaRa run or checkpoint "
                         f"({kind}=RUN)")
    return EvalSpec(kind, adapter or None)


@dataclass
class EvalConfig:
    data: str = field(metadata={"help": "QA file, or dataset name/folder (test, else valid)."})
    configs: list[str] = field(default_factory=lambda: ["closed"], metadata={
        "help": "Configurations: closed, rag, clara=RUN, clara-retrieval=RUN, memory "
                "(=ADAPTER)."})
    model: str | None = field(default=None, metadata={
        "help": "Base model (default: the base of the first adapter)."})
    split: str | None = field(default=None, metadata={"help": "Dataset split to read."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N questions."})
    top_k: int = field(default=3, metadata={"help": "Chunks retrieved for rag / clara."})
    max_tokens: int = field(default=64, metadata={"help": "Most tokens per answer."})
    system: str | None = field(default=None, metadata={"help": "System prompt."})
    ban_thinking: bool = field(default=True, metadata={
        "help": "Forbid the reasoning block while answering (faster; the answer is scored)."})
    chunk_tokens: int = field(default=128, metadata={"help": "Words per source chunk (rag)."})
    chunk_overlap: int = field(default=16, metadata={"help": "Overlap of source chunks."})
    memory: str | None = field(default=None, metadata={
        "help": "QA dataset or file whose pairs `memory` configurations answer from."})
    retention: int = field(default=0, metadata={
        "help": "Also ask N questions of the bundled general QA set (forgetting probe)."})
    name: str | None = field(default=None, metadata={"help": "Evaluation id."})

    def validate(self) -> "EvalConfig":
        checks = [(self.top_k >= 1, "top_k", "must be at least 1"),
                  (self.max_tokens >= 1, "max_tokens", "must be at least 1"),
                  (self.limit is None or self.limit >= 1, "limit", "must be at least 1"),
                  (self.chunk_tokens >= 1, "chunk_tokens", "must be at least 1"),
                  (0 <= self.chunk_overlap < self.chunk_tokens, "chunk_overlap",
                   "must be in [0, chunk_tokens)"),
                  (self.retention >= 0, "retention", "must be >= 0")]
        for ok, name, problem in checks:
            if not ok:
                raise UsageError(f"{name}: {getattr(self, name)} {problem}")
        return self


def new_eval_id(prefix: str = "eval") -> str:
    return f"{prefix}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(results: list[dict], group: str = "config") -> list[dict]:
    """Mean of every metric per value of `group` (rows without a metric do not count)."""
    out: dict = {}
    for r in results:
        out.setdefault(r[group], []).append(r)
    rows = []
    for key, rs in out.items():
        row = {group: key, "n": len(rs)}
        for m in METRICS:
            row[m] = _mean(r.get(m) for r in rs)
        rows.append(row)
    return rows


class Evaluator:
    """Answers QA rows under each configuration through one ChatEngine (shared model cache)."""

    def __init__(self, ws: Workspace | None, cfg: EvalConfig, engine: ChatEngine | None = None):
        self.ws, self.cfg = ws, cfg
        self.engine = engine or ChatEngine(ws, log=False)
        self._index = None

    @property
    def index(self):
        if self._index is None:
            from clara.evaluation.rag import ChunkIndex

            if self.ws is None:
                raise UserError("rag needs a workspace with imported sources")
            self._index = ChunkIndex.from_workspace(self.ws, self.cfg.chunk_tokens,
                                                    self.cfg.chunk_overlap)
        return self._index

    def settings(self, top_k: int | None = None) -> ChatSettings:
        return ChatSettings(temperature=0.0, max_tokens=self.cfg.max_tokens,
                            system=self.cfg.system, multi_turn=False,
                            ban_thinking=self.cfg.ban_thinking, top_k=top_k)

    def session(self, spec: EvalSpec, documents=None, doc_ids=None):
        # a plain model's top-k of its documents is the engine's BM25 ranking (chat's too);
        # CLaRa keeps its run's own top_k unless the rows say otherwise
        top_k = self.cfg.top_k if spec.kind in ("rag", "memory") else None
        return self.engine.session(self.cfg.model, spec.adapter, self.settings(top_k),
                                   documents=documents, doc_ids=doc_ids)

    def run_spec(self, spec: EvalSpec, rows: list[QARow], set_name: str = "qa",
                 progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
        k = self.cfg.top_k
        pool_session = None
        if spec.kind not in ("closed", "memory") and any(not r.docs for r in rows):
            # every source chunk attached once (CLaRa compresses each once for all questions)
            idx = self.index
            pool_session = self.session(spec, idx.texts, [c.id for c in idx.chunks])
        if spec.kind == "memory":  # the memory's pairs attached once, ranked per question
            from clara.chat.memory import read_memory

            session = self.session(spec, read_memory(self.ws, self.cfg.memory)[0])
        else:
            session = self.session(spec) if spec.kind == "closed" or all(r.docs for r in rows) \
                else None
        out = []
        for i, row in enumerate(rows):
            gold_docs, docs, ids, select = None, None, None, None
            use = session
            if spec.kind == "rag" and row.docs:
                # the row's own documents as text (the engine keeps the BM25 top-k of them)
                docs, gold_docs = row.docs, row.pos_index or None
            elif spec.kind in ("rag", "clara") and not (spec.kind == "clara" and row.docs):
                select = ids = self.index.search(row.question, k)
                gold_docs = self.index.gold(row.question, row.answer, row.keywords, row.source)
                use = pool_session
            elif spec.kind == "clara":
                docs = row.docs
            elif spec.kind == "clara-retrieval" and row.docs:
                docs, gold_docs = row.docs, row.pos_index or None
            elif spec.kind == "clara-retrieval":
                gold_docs = self.index.gold(row.question, row.answer, row.keywords, row.source)
                use = pool_session
            if use is None:
                use = session = self.session(spec)
            reply = use.ask(row.question, documents=docs, select=select)
            if spec.kind == "clara-retrieval":
                ids = reply.retrieved
            elif spec.kind == "memory" or (spec.kind == "rag" and row.docs):
                # the positions (memory pairs, the row's documents) the engine put in the prompt
                ids = [int(d) for d in reply.documents]
            result = {"set": set_name, "config": spec.label, "id": row.id,
                      "category": row.category, "question": row.question, "gold": row.answer,
                      "answer": reply.text, "reasoning": reply.reasoning,
                      **answer_scores(reply.text, row.answer, row.keywords),
                      "latency": reply.latency, "ttft": reply.ttft,
                      "prompt_tokens": reply.prompt_tokens,
                      "generation_tokens": reply.generation_tokens,
                      "generation_tps": reply.generation_tps, "peak_memory": reply.peak_memory}
            if ids is not None:
                result["retrieved"] = list(ids)
                result["documents"] = reply.documents
            if ids is not None and gold_docs:
                result["gold_docs"] = list(gold_docs)
                result["recall"] = recall_at_k(list(ids), gold_docs, k)
            out.append(result)
            if progress:
                progress(spec.label, i + 1, len(rows))
        return out


@dataclass
class EvalResult:
    id: str
    path: Path
    summary: list[dict]
    results: list[dict]
    retention: list[dict] = field(default_factory=list)


def general_qa_path() -> Path:
    from clara.data.builders import GENERAL_QA

    return GENERAL_QA


def run_eval(ws: Workspace, cfg: EvalConfig, engine: ChatEngine | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             kind: str = "eval") -> EvalResult:
    """Evaluate every configuration of `cfg` and write the evaluation folder."""
    cfg.validate()
    specs = [parse_spec(c) for c in cfg.configs]
    if not specs:
        raise UserError("no configuration to evaluate")
    if any(s.kind == "memory" for s in specs) and not cfg.memory:
        raise UsageError("a memory configuration needs a QA dataset to answer from "
                         "(--memory DATASET)")
    if cfg.model is None and all(s.adapter is None for s in specs):
        raise UserError("no model given (--model) and no adapter that names its base")
    rows, path = load_qa(ws, cfg.data, cfg.split, cfg.limit)
    eval_id = validate_name(cfg.name, "evaluation") if cfg.name else new_eval_id(kind)
    folder = ws.child("evals", eval_id)
    if folder.exists():
        raise UserError(f"evaluation {eval_id!r} already exists in workspace {ws.name}")
    if cfg.model is None:  # one base for every configuration: the first adapter's
        first = next(s for s in specs if s.adapter)
        cfg.model = (engine or ChatEngine(ws, log=False)).resolve(None, first.adapter)[1]
    ev = Evaluator(ws, cfg, engine)
    tic = time.perf_counter()
    results = []
    for spec in specs:
        results += ev.run_spec(spec, rows, "qa", progress)
    retention = []
    if cfg.retention:
        general = read_qa_file(general_qa_path(), cfg.retention)
        for spec in specs:
            retention += ev.run_spec(EvalSpec("closed", spec.adapter), general, "general",
                                     progress)
    summary = summarize(results)
    if retention:
        base = {r["config"]: r for r in summarize(retention)}
        for row in summary:
            probe = base.get(EvalSpec("closed", parse_spec(row["config"]).adapter).label)
            row["retention_f1"] = probe["f1"] if probe else None
            row["retention_cover_em"] = probe["cover_em"] if probe else None
        # Forgetting: how much general QA F1 the configuration lost against the bare base.
        bare = base.get("closed")
        for row in summary:
            if bare and row.get("retention_f1") is not None:
                row["retention_drop"] = bare["f1"] - row["retention_f1"]
    doc = {"id": eval_id, "kind": kind, "created": now_iso(), "workspace": ws.name,
           "data_path": str(path), "questions": len(rows),
           "seconds": round(time.perf_counter() - tic, 3), "config": asdict(cfg)}
    categories = {r["category"] for r in results if r.get("category")}
    by_category = {}
    if categories:
        for spec in specs:
            by_category[spec.label] = summarize(
                [r for r in results if r["config"] == spec.label and r.get("category")],
                "category")
    folder.mkdir(parents=True)
    io.write_toml(folder / "eval.toml", doc)
    io.write_jsonl(folder / "results.jsonl", results + retention)
    io.write_json(folder / "summary.json", {**doc, "summary": summary,
                                            "by_category": by_category,
                                            "retention": summarize(retention)})
    io.write_text(folder / "summary.md", summary_markdown(doc, summary, results))
    return EvalResult(eval_id, folder, summary, results, retention)


def compare(ws: Workspace, data: str, adapters: list[str], model: str | None = None,
            configs: list[str] | tuple = (), retention: int = 20,
            engine: ChatEngine | None = None, progress=None, **settings) -> EvalResult:
    """The bare base and each adapter closed-book on the same questions, side by side, plus
    the retention probe on the bundled general QA set (what each adapter forgot)."""
    specs = ["closed"] + [f"closed={a}" for a in adapters] + list(configs)
    cfg = EvalConfig(data=data, configs=list(dict.fromkeys(specs)), model=model,
                     retention=retention, **settings)
    return run_eval(ws, cfg, engine, progress, kind="compare")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


SUMMARY_COLUMNS = [("config", "config"), ("n", "n"), ("em", "EM"), ("f1", "F1"),
                   ("cover_em", "cover-EM"), ("keyword", "keyword"), ("recall", "recall@k"),
                   ("retention_f1", "retention F1"), ("retention_drop", "F1 lost"),
                   ("latency", "latency s"),
                   ("ttft", "ttft s"), ("prompt_tokens", "prompt tok")]


def summary_markdown(doc: dict, summary: list[dict], results: list[dict]) -> str:
    cols = [c for c in SUMMARY_COLUMNS if any(r.get(c[0]) is not None for r in summary)]
    lines = [f"# Evaluation {doc['id']}", "",
             f"{doc['questions']} questions from `{doc['data_path']}`; model "
             f"`{doc['config']['model']}`; top-k {doc['config']['top_k']}.", "",
             "| " + " | ".join(c[1] for c in cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c[0])) for c in cols) + " |" for r in summary]
    configs = list(dict.fromkeys(r["config"] for r in results))
    if len(configs) > 1:
        lines += ["", "## Answers side by side", "",
                  "| question | gold | " + " | ".join(configs) + " |",
                  "|" + "---|" * (len(configs) + 2)]
        by_q: dict = {}
        for r in results:
            by_q.setdefault(r["id"], {})[r["config"]] = r
        for rs in by_q.values():
            first = next(iter(rs.values()))
            cells = [_cell(rs[c]) if c in rs else "-" for c in configs]
            lines.append(f"| {_md(first['question'])} | {_md(first['gold'])} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _cell(r: dict) -> str:
    return f"{_md(r['answer'], 60) or '(empty)'} (F1 {r['f1']:.2f})"


def list_evals(ws: Workspace) -> list[dict]:
    out = []
    for folder in ws.items("evals"):
        f = folder / "summary.json"
        if not f.is_file():
            continue
        doc = io.read_json(f)
        out.append({"id": doc["id"], "kind": doc.get("kind"), "created": doc.get("created"),
                    "questions": doc.get("questions"),
                    "configs": ", ".join(r["config"] for r in doc.get("summary", [])),
                    "path": str(folder)})
    return sorted(out, key=lambda r: r["created"] or "")


def read_eval(ws: Workspace, ref: str) -> dict:
    evals = list_evals(ws)
    if ref == "last" and evals:
        ref = evals[-1]["id"]
    matches = [e for e in evals if e["id"] == ref] or [e for e in evals
                                                       if e["id"].startswith(ref)]
    if len(matches) != 1:
        raise UserError(f"no evaluation {ref!r} in workspace {ws.name} (see: clara eval list)"
                         if not matches else f"evaluation {ref!r} is ambiguous")
    folder = Path(matches[0]["path"])
    doc = io.read_json(folder / "summary.json")
    doc["results"] = io.read_jsonl(folder / "results.jsonl")
    return doc
