"""Dataset builders: continued pretraining (cpt), chat fine-tuning (sft) and CLaRa stages 1-3.

Every builder reads its inputs, validates them (bad QA rows fail with `file:line: field:
problem` before anything is written), makes the rows, and hands them to
`clara.data.datasets.write_dataset`, which validates the output and renames the finished folder
into place. The row-making functions take plain chunks and QA items, so the synthetic benchmark
(`clara.data.synth`) and tests use them without a workspace's sources.

Stage formats are exactly those of clara-method.md §3: stage 1 `qa` rows {"data_type": "qa",
"question": [..], "answers": [..], "docs": [doc]} and `paraphrase` rows {"data_type":
"paraphrase", "answers": [paraphrase], "docs": [doc]}; stage 2 {"question", "docs" (k),
"answer", "pos_index"}; stage 3 {"question", "docs" (N), "answer", "pos_index"}. Hard negatives
are the other chunks ranked by BM25 against the question.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from clara import io
from clara.data import validate
from clara.data.chunking import TokenCounter, chunk_text, load_tokenizer, split_sentences
from clara.data.datasets import check_new, split_indices, write_dataset
from clara.errors import UserError, DataError, ValidationFailed
from clara.workspace import Workspace

GENERAL_QA = Path(__file__).resolve().parents[2] / "data" / "general_qa.jsonl"


# -- documents and chunks --------------------------------------------------------------------
@dataclass
class Document:
    """A text to chunk, with optional page records {"page", "start", "end"} (char offsets)."""

    id: str
    text: str
    pages: list[dict] = field(default_factory=list)
    name: str = ""


@dataclass
class DocChunk:
    id: str
    source: str
    index: int
    text: str
    tokens: int
    pages: list[int] = field(default_factory=list)
    source_name: str = ""


def documents_from_sources(ws: Workspace, ids: Sequence[str] | None = None) -> list[Document]:
    """The imported sources of the workspace (all, or those named by id or file name)."""
    from clara.data.sources import list_sources, read_source

    sources = [read_source(ws, i) for i in ids] if ids else list_sources(ws)
    if not sources:
        raise UserError(f"workspace {ws.name} has no imported sources (see: clara data import)")
    return [Document(s.id, s.text, [{"page": p["page"], "start": p["start"], "end": p["end"]}
                                    for p in s.pages], s.name) for s in sources]


def chunk_documents(docs: Sequence[Document], tokenizer: TokenCounter, max_tokens: int,
                    overlap: int) -> list[DocChunk]:
    """Token-bounded chunks of every document; a chunk never spans two documents."""
    out: list[DocChunk] = []
    for doc in docs:
        for i, c in enumerate(chunk_text(doc.text, tokenizer, max_tokens, overlap)):
            pages = [p["page"] for p in doc.pages if p["start"] < c.end and p["end"] > c.start]
            out.append(DocChunk(f"{doc.id}#{i}", doc.id, i, c.text, c.tokens, pages,
                                doc.name or doc.id))
    return out


# -- lexical retrieval -----------------------------------------------------------------------
_TERM = re.compile(r"\w+")
_STOP = frozenset("a an and are as at be by did do does for from had has have he her his how "
                  "in is it its of on or she that the their they this to was were what when "
                  "where which who whom whose why with".split())


def terms(text: str) -> list[str]:
    return [t for t in _TERM.findall(text.lower()) if t not in _STOP]


class BM25:
    """Okapi BM25 over a fixed list of texts. Written here: there is no good small library
    (rank-bm25 is unmaintained; search engines are far too heavy for a few hundred chunks)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        tfs = [Counter(terms(t)) for t in texts]
        self.len = [sum(tf.values()) for tf in tfs]
        self.avg = (sum(self.len) / len(self.len)) if self.len else 0.0
        # postings: term -> [(doc, term frequency)], so a query touches only the documents that
        # share a term with it (a synthetic world of thousands of documents stays fast)
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for i, tf in enumerate(tfs):
            for t, c in tf.items():
                self.postings.setdefault(t, []).append((i, c))
        n = len(texts)
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5))
                    for t, p in self.postings.items()}
        self.norm = [k1 * (1 - b + b * m / (self.avg or 1)) for m in self.len]

    def scores(self, query: str) -> list[float]:
        out = [0.0] * len(self.len)
        for t in terms(query):
            idf = self.idf.get(t, 0.0)
            for i, c in self.postings.get(t, ()):
                out[i] += idf * c * (self.k1 + 1) / (c + self.norm[i])
        return out

    def ranked(self, query: str, exclude: set[int] = frozenset()) -> list[int]:
        """Indices best first (ties: lower index first), without `exclude`."""
        s = self.scores(query)
        return sorted((i for i in range(len(s)) if i not in exclude), key=lambda i: (-s[i], i))


# -- QA files --------------------------------------------------------------------------------
@dataclass
class QAItem:
    question: str
    answer: str
    keywords: list[str] = field(default_factory=list)
    source: str | None = None
    doc: list[str] = field(default_factory=list)
    line: int = 0
    gold: list[int] = field(default_factory=list)
    """Indices of the gold chunks, filled by `locate_gold` (or given by the caller)."""


def resolve_qa(ws: Workspace | None, ref: str | Path) -> Path:
    """A QA file for `--qa`: a JSONL file, or a QA dataset (a workspace dataset name or folder,
    such as `clara data build qa` writes), whose train.jsonl holds the pairs."""
    from clara.data.datasets import resolve

    path = resolve(ws, ref)
    if path.is_dir():
        if not (path / "train.jsonl").is_file():
            raise UserError(f"{path}: a QA dataset needs train.jsonl")
        return path / "train.jsonl"
    return path


def read_qa(path: str | Path) -> list[QAItem]:
    """Rows {"question", "answer", optional "keywords", "source", "doc"} of a QA JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no QA file {path}")
    errors = validate.validate_file(path, "qa")
    if errors:
        raise ValidationFailed(errors)
    items = []
    for line, row in io.iter_jsonl(path):
        doc = row.get("doc")
        items.append(QAItem(row["question"].strip(), row["answer"].strip(),
                            list(row.get("keywords") or []), row.get("source"),
                            [doc] if isinstance(doc, str) else list(doc or []), line))
    if not items:
        raise UserError(f"{path}: no QA rows")
    return items


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def locate_gold(items: Sequence[QAItem], chunks: Sequence[DocChunk], bm25: BM25,
                path: str | Path = "<qa>") -> None:
    """Set each item's gold chunk: from "doc" (a chunk id, or text inside a chunk), else the
    chunk (of "source", if given) holding the most keywords / the answer / most answer words,
    ties broken by BM25 against the question. Raises ValidationFailed listing unlocatable rows."""
    texts = [_norm(c.text) for c in chunks]
    by_id = {c.id: i for i, c in enumerate(chunks)}
    errors = []
    for item in items:
        if item.gold:
            continue
        if item.doc:
            gold = []
            for d in item.doc:
                if d in by_id:
                    gold.append(by_id[d])
                    continue
                hits = [i for i, t in enumerate(texts) if _norm(d) in t]
                if not hits:
                    errors.append(DataError(path, item.line, "doc",
                                            f"no chunk is or contains {d[:40]!r}"))
                    break
                gold.append(hits[0])
            item.gold = sorted(set(gold))
            continue
        pool = list(range(len(chunks)))
        if item.source:
            # a file name matches by stem too: QA written against handbook.md also locates
            # chunks of the same document imported as handbook.pdf
            wanted = {item.source, Path(item.source).stem}
            pool = [i for i in pool if wanted & {chunks[i].source, chunks[i].source_name,
                                                 Path(chunks[i].source_name).stem}]
            if not pool:
                errors.append(DataError(path, item.line, "source",
                                        f"no chunk comes from source {item.source!r}"))
                continue
        bm = bm25.scores(item.question)
        answer = _norm(item.answer)
        answer_terms = set(terms(item.answer))
        keywords = [_norm(k) for k in item.keywords if k.strip()]

        def key(i: int):
            t = texts[i]
            kw = sum(1 for k in keywords if k in t)
            words = set(_TERM.findall(t))
            cover = len(answer_terms & words) / len(answer_terms) if answer_terms else 0.0
            return (kw, answer in t, round(cover, 3), bm[i], -i)

        best = max(pool, key=key)
        kw, contains, cover, *_ = key(best)
        if kw or contains or cover >= 0.5 or len(pool) == 1:
            item.gold = [best]
        else:
            errors.append(DataError(path, item.line, "answer",
                                    "no chunk contains the answer or a keyword "
                                    "(give \"source\" or \"doc\" to locate it)"))
    if errors:
        raise ValidationFailed(errors)


# -- paraphrase ------------------------------------------------------------------------------
_REWORD = [(r"\bbecause\b", "since"), (r"\bhowever\b", "yet"), (r"\bbegan\b", "started"),
           (r"\bbegin\b", "start"), (r"\blarge\b", "big"), (r"\bsmall\b", "little"),
           (r"\bmany\b", "numerous"), (r"\bshows\b", "demonstrates"), (r"\bused\b", "employed"),
           (r"\bhelps\b", "assists"), (r"\bquickly\b", "rapidly"), (r"\bimportant\b", "key"),
           (r"\bmade\b", "produced"), (r"\bbuilt\b", "constructed"), (r"\bfamous\b", "renowned")]
_FRONTED = re.compile(r"^(In|On|During|After|Before) ([^,]{2,40}), (.+?)([.!?])$")


def _reword(sentence: str) -> str:
    m = _FRONTED.match(sentence)
    if m:  # "In 1853, X did Y." -> "X did Y in 1853."
        rest = m.group(3)
        sentence = f"{rest[0].upper()}{rest[1:]} {m.group(1).lower()} {m.group(2)}{m.group(4)}"
    for pattern, repl in _REWORD:
        sentence = re.sub(pattern, lambda mm: repl.capitalize() if mm.group(0)[0].isupper()
                          else repl, sentence, flags=re.IGNORECASE)
    return sentence


def simple_paraphrase(text: str) -> str:
    """A deterministic, weak stand-in for an LLM paraphrase: the sentences rotated by one
    (the first moves last), fronted time/place phrases moved to the end, and a few words
    swapped for synonyms. It keeps every fact, but it is far less varied than ORIG's
    LLM-written paraphrases, so stage 1 learns less from these rows."""
    sentences = split_sentences(text) or [text.strip()]
    if len(sentences) >= 2:
        sentences = sentences[1:] + sentences[:1]
    out = " ".join(_reword(s) for s in sentences)
    if out == " ".join(text.split()):
        out = f"In other words, {out[0].lower()}{out[1:]}" if out else out
    return out


# -- row makers ------------------------------------------------------------------------------
def cpt_rows(chunks: Sequence[DocChunk]) -> list[dict]:
    return [{"text": c.text, "source": c.source, "chunk": c.index, "pages": c.pages}
            for c in chunks]


def chat_row(question: str, answer: str, system: str | None = None, **extra) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages, **extra}


def stage1_rows(chunk_texts: Sequence[str], items: Sequence[QAItem],
                paraphrase: Callable[[int], str | None] | None = None,
                chunk_ids: Sequence[int] | None = None) -> list[dict]:
    """Per chunk: one `qa` row with every QA pair whose first gold chunk it is, then one
    `paraphrase` row (if `paraphrase(i)` gives text)."""
    by_chunk: dict[int, list[QAItem]] = {}
    for item in items:
        if item.gold:
            by_chunk.setdefault(item.gold[0], []).append(item)
    rows = []
    for i in (chunk_ids if chunk_ids is not None else range(len(chunk_texts))):
        qa = by_chunk.get(i, [])
        if qa:
            rows.append({"data_type": "qa", "question": [q.question for q in qa],
                         "answers": [q.answer for q in qa], "docs": [chunk_texts[i]]})
        text = paraphrase(i) if paraphrase else None
        if text:
            rows.append({"data_type": "paraphrase", "answers": [text], "docs": [chunk_texts[i]]})
    return rows


def retrieval_row(item: QAItem, chunk_texts: Sequence[str], bm25: BM25, n_docs: int,
                  rng: random.Random, pool: Sequence[int] | None = None) -> dict:
    """question + n_docs documents (the gold ones and the hardest BM25 negatives, shuffled)
    + answer + pos_index (where the gold ones ended up)."""
    gold = list(dict.fromkeys(item.gold))[:n_docs]
    allowed = set(range(len(chunk_texts))) if pool is None else set(pool)
    answer = _norm(item.answer)
    ranked = [i for i in bm25.ranked(item.question, set(gold)) if i in allowed]
    # a chunk that also contains a short answer is a false negative: use it only if needed
    need, clean, dirty = n_docs - len(gold), [], []
    for i in ranked:
        if len(clean) == need:
            break
        ok = len(answer.split()) > 8 or answer not in _norm(chunk_texts[i])
        (clean if ok else dirty).append(i)
    chosen = gold + (clean + dirty)[:need]
    if len(chosen) < n_docs:
        raise UserError(f"{n_docs} documents per row need at least {n_docs} chunks; "
                         f"only {len(chosen)} are available")
    order = list(range(n_docs))
    rng.shuffle(order)
    docs = [chunk_texts[chosen[j]] for j in order]
    pos = sorted(order.index(j) for j in range(len(gold)))
    return {"question": item.question, "docs": docs, "answer": item.answer, "pos_index": pos}


# -- builders --------------------------------------------------------------------------------
@dataclass
class CptConfig:
    sources: list[str] = field(default_factory=list,
                               metadata={"help": "Source ids to use; empty: all imported."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Model whose tokenizer counts tokens; None: the regex word tokenizer."})
    chunk_tokens: int = field(default=256, metadata={"help": "Most tokens per chunk."})
    overlap: int = field(default=32, metadata={"help": "Tokens shared by consecutive chunks."})
    valid_share: float = field(default=0.1, metadata={"help": "Share of chunks for valid."})
    seed: int = field(default=0, metadata={"help": "Seed of the train/valid split."})


def build_cpt(ws: Workspace, name: str, cfg: CptConfig, force: bool = False,
              docs: Sequence[Document] | None = None) -> Path:
    """Continued-pretraining text chunks from the workspace sources (or `docs`)."""
    check_new(ws, name, force)
    tok = load_tokenizer(cfg.tokenizer, ws)
    docs = list(docs) if docs is not None else documents_from_sources(ws, cfg.sources)
    chunks = chunk_documents(docs, tok, cfg.chunk_tokens, cfg.overlap)
    if not chunks:
        raise UserError("the sources hold no text to chunk")
    rows = cpt_rows(chunks)
    train, valid = split_indices(len(rows), cfg.valid_share, cfg.seed)
    meta = {"format": "text", "sources": [d.id for d in docs], "seed": cfg.seed,
            "parameters": {**asdict(cfg), "tokenizer": tok.name}}
    return write_dataset(ws, name, "cpt", {"train": [rows[i] for i in train],
                                           "valid": [rows[i] for i in valid]}, meta, tok, force)


@dataclass
class SftConfig:
    qa: str = field(default="", metadata={"help": "QA JSONL file (question, answer)."})
    golden: str | None = field(default=None, metadata={
        "help": "QA JSONL file whose rows always go to train."})
    general: str | None = field(default=str(GENERAL_QA), metadata={
        "help": "General-purpose QA mixed in against forgetting; None: no mixing."})
    general_share: float = field(default=0.2, metadata={
        "help": "Fraction of the final train set that is general QA."})
    system: str | None = field(default=None, metadata={"help": "System prompt of every chat."})
    valid_share: float = field(default=0.1, metadata={"help": "Share of QA rows for valid."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and the mixing."})
    memory_k: int = field(default=0, metadata={
        "help": "Also one memory row per QA pair in train: its prompt the top K pairs of the "
                "QA data that BM25 ranks for its question (its own among them), as `clara "
                "chat --memory` and `clara eval --memory` give them (0: none)."})


def build_sft(ws: Workspace, name: str, cfg: SftConfig, force: bool = False) -> Path:
    """Chat rows from QA pairs; golden rows always train; a share of general QA mixed in; with
    `memory_k`, each train pair again answered from its memory (clara.chat.memory)."""
    check_new(ws, name, force)
    if not 0 <= cfg.general_share < 1:
        raise UserError(f"--general-share must be in [0, 1), got {cfg.general_share}")
    if cfg.memory_k < 0:
        raise UserError(f"--memory-k must be >= 0, got {cfg.memory_k}")
    qa = read_qa(resolve_qa(ws, cfg.qa))
    golden = read_qa(resolve_qa(ws, cfg.golden)) if cfg.golden else []
    rng = random.Random(cfg.seed)
    keep, held = split_indices(len(qa), cfg.valid_share, cfg.seed)

    def row(item: QAItem, origin: str) -> dict:
        return chat_row(item.question, item.answer, cfg.system, origin=origin)

    train = [row(g, "golden") for g in golden] + [row(qa[i], "qa") for i in keep]
    valid = [row(qa[i], "qa") for i in held]
    if cfg.memory_k:
        from clara.chat.memory import memory_rows

        # the memory holds every pair (what `clara chat --memory` reads), valid ones too
        train += memory_rows(golden + [qa[i] for i in keep], cfg.memory_k, golden + qa,
                             cfg.system)
    general_meta: dict = {"file": None, "share": 0.0, "rows": 0}
    if cfg.general and cfg.general_share > 0:
        path = Path(cfg.general)
        if not path.is_file():
            raise UserError(f"no general QA file {path} (give --general FILE or --no-general)")
        pool = read_qa(path)
        want = round(cfg.general_share * len(train) / (1 - cfg.general_share))
        picked = sorted(rng.sample(range(len(pool)), min(want, len(pool))))
        train += [row(pool[i], "general") for i in picked]
        general_meta = {"file": str(path), "share": cfg.general_share, "rows": len(picked),
                        "actual_share": round(len(picked) / len(train), 4),
                        "wanted_rows": want}
    rng.shuffle(train)
    meta = {"format": "chat", "sources": [str(cfg.qa)] + ([str(cfg.golden)] if golden else []),
            "seed": cfg.seed, "parameters": asdict(cfg), "golden_rows": len(golden),
            "general": general_meta}
    return write_dataset(ws, name, "sft", {"train": train, "valid": valid}, meta, force=force)


@dataclass
class StageConfig:
    stage: int = field(default=1, metadata={"help": "CLaRa stage: 1, 2 or 3."})
    qa: str = field(default="", metadata={
        "help": "QA JSONL file (question, answer, optional keywords/source/doc)."})
    sources: list[str] = field(default_factory=list,
                               metadata={"help": "Source ids to use; empty: all imported."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Model whose tokenizer counts tokens; None: the regex word tokenizer."})
    doc_tokens: int = field(default=256, metadata={"help": "Most tokens per document chunk."})
    overlap: int = field(default=0, metadata={"help": "Tokens shared by consecutive chunks."})
    k: int = field(default=5, metadata={"help": "Stage 2: documents per row."})
    candidates: int = field(default=20, metadata={
        "help": "Stage 3: candidates per row (capped by the chunks available)."})
    paraphrase: bool = field(default=True, metadata={
        "help": "Stage 1: add a paraphrase row per chunk."})
    paraphrase_model: str | None = field(default=None, metadata={
        "help": "Stage 1: chat model that writes the paraphrases (None: simple rewrites)."})
    valid_share: float = field(default=0.1, metadata={"help": "Share held out for valid."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and the doc order."})


def stage_splits(cfg: StageConfig, chunk_texts: Sequence[str], items: Sequence[QAItem],
                 paraphrase: Callable[[int], str | None] | None) -> dict[str, list[dict]]:
    """Train/valid rows of one stage from chunks and QA items with gold chunks set."""
    rng = random.Random(cfg.seed)
    if cfg.stage == 1:
        keep, held = split_indices(len(chunk_texts), cfg.valid_share, cfg.seed)
        return {"train": stage1_rows(chunk_texts, items, paraphrase, keep),
                "valid": stage1_rows(chunk_texts, items, paraphrase, held)}
    bm25 = BM25(chunk_texts)
    n = cfg.k if cfg.stage == 2 else min(cfg.candidates, len(chunk_texts))
    keep, held = split_indices(len(items), cfg.valid_share, cfg.seed)
    return {"train": [retrieval_row(items[i], chunk_texts, bm25, n, rng) for i in keep],
            "valid": [retrieval_row(items[i], chunk_texts, bm25, n, rng) for i in held]}


def build_stage(ws: Workspace, name: str, cfg: StageConfig, force: bool = False,
                docs: Sequence[Document] | None = None) -> Path:
    """CLaRa stage 1/2/3 rows from the workspace sources (or `docs`) and a QA file."""
    if cfg.stage not in (1, 2, 3):
        raise UserError(f"unknown CLaRa stage {cfg.stage} (expected 1, 2 or 3)")
    check_new(ws, name, force)
    items = read_qa(resolve_qa(ws, cfg.qa))
    tok = load_tokenizer(cfg.tokenizer, ws)
    docs = list(docs) if docs is not None else documents_from_sources(ws, cfg.sources)
    chunks = chunk_documents(docs, tok, cfg.doc_tokens, cfg.overlap)
    if not chunks:
        raise UserError("the sources hold no text to chunk")
    texts = [c.text for c in chunks]
    locate_gold(items, chunks, BM25(texts), cfg.qa)
    para = (lambda i: simple_paraphrase(texts[i])) if cfg.paraphrase else None
    if cfg.paraphrase and cfg.paraphrase_model and cfg.stage == 1:
        from clara.data.qa import model_paraphraser

        write = model_paraphraser(ws, cfg.paraphrase_model)
        para = lambda i: write(texts[i]) or simple_paraphrase(texts[i])  # noqa: E731
    splits = stage_splits(cfg, texts, items, para)
    params = {**asdict(cfg), "tokenizer": tok.name}
    if cfg.stage == 3:
        params["candidates"] = min(cfg.candidates, len(texts))
    meta = {"format": f"clara-stage{cfg.stage}", "sources": [d.id for d in docs],
            "qa": str(cfg.qa), "seed": cfg.seed, "parameters": params, "chunks": len(chunks),
            "paraphrase": (f"model {cfg.paraphrase_model} (simple rewrite where it lost a "
                           "number)" if cfg.paraphrase_model else
                           "simple (sentence rotation + rewording)") if cfg.stage == 1
            and cfg.paraphrase else None}
    return write_dataset(ws, name, f"stage{cfg.stage}", splits, meta, tok, force)
