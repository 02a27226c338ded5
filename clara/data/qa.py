"""Question/answer pairs generated from a workspace's documents, with provenance.

Two generators, one pipeline:
- `model`: a chat model (workspace model or HF id) is asked, chunk by chunk, for questions that
  the chunk answers, through the same chat engine as `clara chat` (mlx-lm generation);
- `rules`: no model at all. A deterministic generator of template questions (who holds a role,
  when something was built, how large/far/many something is) and cloze questions ("Fill in the
  blank ...") about sentences that hold names, numbers, dates and quantities. Labelled as such
  in every row (`origin: "rules"`) and in dataset.toml: good for tiny models, tests and
  offline use, and far less varied than a model's questions.

Every candidate pair goes through the same checks: the answer must be grounded in its chunk (the
answer itself, or all of its key terms, appear in the chunk; otherwise it is dropped and counted
as `ungrounded`), questions are deduplicated, and a report counts what was kept and dropped and
why. Golden rows from a user file are always kept. Rows are `qa` rows (question, answer,
keywords, source) plus provenance: `source_id`, `page`, `chunk` and `origin`; the dataset feeds
`clara data build sft|stage1|stage2|stage3 --qa NAME` directly.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from clara.data.builders import (DocChunk, _norm, chunk_documents, documents_from_sources,
                                 read_qa, terms)
from clara.data.chunking import load_tokenizer, split_sentences
from clara.data.datasets import check_new, write_dataset
from clara.errors import UserError
from clara.workspace import Workspace

RULES = "rules"


@dataclass
class QAGenConfig:
    sources: list[str] = field(default_factory=list,
                               metadata={"help": "Source ids or file names; empty: all imported."})
    model: str | None = field(default=None, metadata={
        "help": "Chat model that writes the questions (workspace model, folder or HF id); "
                "None: the rule-based generator."})
    per_chunk: int = field(default=3, metadata={"help": "Most pairs kept per chunk."})
    chunk_tokens: int = field(default=128, metadata={"help": "Most tokens per chunk (regex)."})
    overlap: int = field(default=0, metadata={"help": "Tokens shared by consecutive chunks."})
    golden: str | None = field(default=None, metadata={
        "help": "QA JSONL file whose rows are always kept."})
    temperature: float = field(default=0.0, metadata={"help": "Model sampling temperature."})
    max_tokens: int = field(default=384, metadata={"help": "Most tokens of one model reply."})
    seed: int = field(default=0, metadata={"help": "Seed of the model's sampler."})


@dataclass
class QAReport:
    generator: str
    chunks: int = 0
    candidates: int = 0
    kept: int = 0
    golden: int = 0
    dropped: dict = field(default_factory=lambda: {"ungrounded": 0, "duplicate": 0,
                                                   "unparsed": 0, "over_limit": 0})

    def line(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v) or "none"
        return (f"{self.generator}: {self.chunks} chunks, {self.candidates} candidate pairs, "
                f"kept {self.kept} (+{self.golden} golden), dropped: {drops}")


@dataclass
class QAResult:
    rows: list[dict]
    report: QAReport


# -- grounding -------------------------------------------------------------------------------
def key_terms(text: str) -> list[str]:
    """The content words of an answer: what must appear in the chunk when the answer as a whole
    does not (articles, auxiliaries and question words are not key terms)."""
    return list(dict.fromkeys(terms(text)))


def grounded(answer: str, chunk: str) -> bool:
    """True when the answer, or every one of its key terms, occurs in the chunk."""
    a, c = _norm(answer), _norm(chunk)
    if a and a in c:
        return True
    words = set(terms(chunk))
    keys = key_terms(answer)
    return bool(keys) and all(k in words for k in keys)


def answer_keywords(answer: str, chunk: str) -> list[str]:
    """Keywords for scoring: the answer when it is short and verbatim in the chunk, else its key
    terms that the chunk holds (at most four, numbers and capitalised words first)."""
    if len(answer.split()) <= 4 and _norm(answer) in _norm(chunk):
        return [answer.strip().rstrip(".")]
    words = set(terms(chunk))
    keys = [k for k in key_terms(answer) if k in words]
    keys.sort(key=lambda k: (not any(ch.isdigit() for ch in k),
                             f" {k}" not in f" {answer}".lower() or
                             not re.search(rf"\b{re.escape(k)}\b", answer, re.I)))
    return keys[:4]


def _question_key(question: str) -> str:
    return " ".join(terms(question))


# -- the rule-based generator ------------------------------------------------------------------
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|"
           "December")
_YEAR = r"(?:1[5-9]\d\d|20\d\d)"
_DATE = rf"(?:(?:\d{{1,2}} )?(?:{_MONTHS}) )?{_YEAR}"
_TIME = r"\b\d{1,2}:\d\d\b"
_UNITS = (r"(?:square kilometres|square metres|km/h|km|cm|mm|m|metres|meters|kilometres|kW|MW|"
          r"euros?|percent|%|minutes|hours|days|weeks|months|years|seconds|volumes|rooms|dishes|"
          r"steps|staff members|people|visitors|residents|terabytes|TB|GB|kg|tonnes|degrees|"
          r"pairs)")
_QUANTITY = re.compile(rf"\b\d[\d,]*(?:\.\d+)?\s?{_UNITS}(?![\w/])")
_NAME = r"(?:Dr\. |Prof\. )?[A-Z][a-z]+(?: [A-Z][a-z]+)+"
_PARTICIPLE = r"[a-z]+(?:ed|t|n|ld|de|ne|wn)"
_PASSIVE = re.compile(rf"(?:^|, |; | and )(?P<subj>[A-Za-z][^,;]{{2,60}}?),? (?P<aux>was|were) "
                      rf"(?P<verb>(?:[a-z]+ )?{_PARTICIPLE}) in (?P<date>{_DATE})\b")
_ROLE_AFTER = re.compile(rf"(?:^|- )(?P<name>{_NAME}), (?!who |which )"
                         r"(?P<role>(?:the )?[a-z][a-z ]{2,40}?)(?=,| since| who| from|\.)")
_ROLE_BEFORE = re.compile(rf"\bthe (?P<role>[a-z][a-z ]{{2,30}}), (?P<name>{_NAME})\b")
_HAS = re.compile(rf"^(?P<subj>[A-Z](?:(?! is | are | was | were )[^,;]){{2,50}}?) (?:has|have) (?:about )?"
                  rf"(?P<n>\d[\d,.]*) (?P<what>[a-z]+(?: [a-z]+)?)\b")
_COSTS = re.compile(r"(?P<subj>[Aa] [a-z][a-z ]{2,30}?) costs? (?P<price>\d[\d,.]* euros?)")
_CALLED = re.compile(rf"(?P<subj>the [a-z][a-z' ]{{2,30}}?), called (?P<name>[A-Z][a-z]+)\b")
_BLANK_TARGETS = [re.compile(rf"\b{_DATE}\b"), _QUANTITY, re.compile(rf"\b{_NAME}\b"),
                  re.compile(_TIME), re.compile(r"(?<![\d:])\b\d[\d,]*(?:\.\d+)?\b(?!:\d)")]
_ABBREV = re.compile(r"\b(Dr|Prof|Mr|Mrs|Ms|St|No)\.$")


def _sentences(text: str) -> list[str]:
    """Sentences of a chunk, line by line (headings and list items stand alone), not cut after
    "Dr." and the like."""
    out: list[str] = []
    for line in text.split("\n"):
        line = " ".join(line.lstrip("-*# ").split())
        if not line:
            continue
        merged: list[str] = []
        for s in split_sentences(line):
            if merged and _ABBREV.search(merged[-1]):
                merged[-1] = f"{merged[-1]} {s}"
            else:
                merged.append(s)
        out += merged
    return out


def _lower_first(text: str) -> str:
    """"The North House" -> "the North House"; names stay capitalised."""
    first = text.split(" ", 1)[0]
    return text[:1].lower() + text[1:] if first in ("A", "An", "The", "This") else text


def rule_pairs(chunk: str) -> list[tuple[str, str]]:
    """Candidate (question, answer) pairs of one chunk, in a fixed order: template questions
    first, then cloze questions (one per kind of target a sentence holds: date, quantity, name,
    time, number) about every sentence."""
    templates: list[tuple[str, str]] = []
    clozes: list[tuple[str, str]] = []
    for s in _sentences(chunk):
        if len(s.split()) < 5 or not s.endswith((".", "!", "?")):  # headings, list intros
            continue
        for m in _PASSIVE.finditer(s):
            subj = _lower_first(m.group("subj").strip())
            if subj.split()[0].lower() in ("it", "he", "she", "they", "this", "which", "who"):
                continue
            templates.append((f"When {m.group('aux')} {subj} {m.group('verb')}?",
                              m.group("date")))
        for m in _ROLE_AFTER.finditer(s):
            role = m.group("role").strip()
            role = role if role.startswith("the ") else f"the {role}"
            templates.append((f"Who is {role}?", m.group("name")))
        for m in _ROLE_BEFORE.finditer(s):
            templates.append((f"Who is the {m.group('role').strip()}?", m.group("name")))
        for m in _HAS.finditer(s):
            subj = _lower_first(m.group("subj"))
            verb = "do" if subj.endswith("s") and not subj.endswith("ss") else "does"
            templates.append((f"How many {m.group('what')} {verb} {subj} have?",
                              f"{m.group('n')} {m.group('what')}"))
        for m in _COSTS.finditer(s):
            templates.append((f"How much does {_lower_first(m.group('subj'))} cost?",
                              m.group("price")))
        for m in _CALLED.finditer(s):
            templates.append((f"What is {m.group('subj')} called?", m.group("name")))
        if len(s) > 240:
            continue
        taken: list[tuple[int, int]] = []
        for pattern in _BLANK_TARGETS:
            m = next((m for m in pattern.finditer(s)
                      if not any(a < m.end() and m.start() < b for a, b in taken)), None)
            if m is None:
                continue
            taken.append(m.span())
            clozes.append((f"Fill in the blank: {s[:m.start()]}___{s[m.end():]}", m.group(0)))
    return templates + clozes


# -- the model generator -----------------------------------------------------------------------
PROMPT = """Write {n} question-and-answer pairs about the text below. Each question must be \
answerable from the text alone, without seeing it (name the thing asked about). Each answer \
must be short and use the words of the text. Write each pair on two lines:
Q: <question>
A: <answer>

Text:
{chunk}"""

_PAIR = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:\*\*)?(Q|Question|A|Answer)\s*\d*\s*[:.](?:\*\*)?\s*(.*)$",
                   re.IGNORECASE)


def parse_pairs(text: str) -> tuple[list[tuple[str, str]], int]:
    """(question, answer) pairs of a model reply written as Q:/A: lines, and how many question
    or answer lines could not be paired."""
    pairs, question, unpaired = [], None, 0
    for line in text.splitlines():
        m = _PAIR.match(line)
        if not m:
            continue
        tag, body = m.group(1)[0].upper(), m.group(2).strip().strip("*").strip()
        if tag == "Q":
            unpaired += question is not None
            question = body or None
        elif question is not None and body:
            pairs.append((question, body))
            question = None
        else:
            unpaired += 1
    return pairs, unpaired + (question is not None)


def model_writer(ws: Workspace | None, model: str, cfg: QAGenConfig) -> Callable[[str, int], str]:
    """A function (prompt, max_tokens) -> reply text, over one chat session of `model`."""
    from clara.chat.engine import ChatEngine, ChatSettings

    settings = ChatSettings(temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                            multi_turn=False, ban_thinking=True, seed=cfg.seed)
    session = ChatEngine(ws, log=False).session(model, None, settings)

    def write(prompt: str, max_tokens: int) -> str:
        session.settings.max_tokens = max_tokens
        return session.ask(prompt).text

    return write


# -- the pipeline ------------------------------------------------------------------------------
def _chunks(ws: Workspace, cfg: QAGenConfig) -> list[DocChunk]:
    docs = documents_from_sources(ws, _source_ids(ws, cfg.sources))
    return chunk_documents(docs, load_tokenizer(None), cfg.chunk_tokens, cfg.overlap)


def _source_ids(ws: Workspace, wanted: Sequence[str]) -> list[str] | None:
    """Source ids for ids or file names (a file name is what users see and type)."""
    if not wanted:
        return None
    from clara.data.sources import list_sources

    known = list_sources(ws)
    out = []
    for w in wanted:
        hit = [s.id for s in known if w in (s.id, s.name, Path(s.name).stem)]
        if not hit:
            raise UserError(f"--sources: no imported source {w!r} in workspace {ws.name} "
                             "(see: clara data sources)")
        out += hit
    return list(dict.fromkeys(out))


def generate_qa(ws: Workspace, cfg: QAGenConfig, limit_chunks: int | None = None,
                writer: Callable[[str, int], str] | None = None,
                progress: Callable[[int, int], None] | None = None) -> QAResult:
    """Generate, check and deduplicate pairs for the chunks of the sources (the first
    `limit_chunks` only, for a preview). `writer` replaces the model (library use)."""
    if cfg.per_chunk < 1:
        raise UserError(f"--per-chunk must be at least 1, got {cfg.per_chunk}")
    golden_items = read_qa(cfg.golden) if cfg.golden else []
    chunks = _chunks(ws, cfg)
    if not chunks:
        raise UserError("the sources hold no text to generate questions from")
    if limit_chunks is not None:
        chunks = chunks[:limit_chunks]
    generator = RULES if cfg.model is None and writer is None else f"model:{cfg.model}"
    if writer is None and cfg.model is not None:
        writer = model_writer(ws, cfg.model, cfg)
    report = QAReport(generator, chunks=len(chunks))
    seen = {_question_key(g.question) for g in golden_items}
    rows = [{"question": g.question, "answer": g.answer, "keywords": g.keywords,
             **({"source": g.source} if g.source else {}), "origin": "golden"}
            for g in golden_items]
    report.golden = len(rows)
    for n, chunk in enumerate(chunks):
        if writer is None:
            pairs = rule_pairs(chunk.text)
        else:
            reply = writer(PROMPT.format(n=cfg.per_chunk, chunk=chunk.text), cfg.max_tokens)
            pairs, unparsed = parse_pairs(reply)
            report.dropped["unparsed"] += unparsed
        kept = 0
        for question, answer in pairs:
            report.candidates += 1
            if not grounded(answer, chunk.text):
                report.dropped["ungrounded"] += 1
                continue
            key = _question_key(question)
            if not key or key in seen:
                report.dropped["duplicate"] += 1
                continue
            if kept >= cfg.per_chunk:
                report.dropped["over_limit"] += 1
                continue
            seen.add(key)
            kept += 1
            rows.append({"question": question, "answer": answer,
                         "keywords": answer_keywords(answer, chunk.text),
                         "source": chunk.source_name, "source_id": chunk.source,
                         "page": chunk.pages[0] if chunk.pages else None,
                         "chunk": chunk.index, "origin": "rules" if writer is None else "model"})
        if progress:
            progress(n + 1, len(chunks))
    report.kept = len(rows) - report.golden
    for r in rows:
        if r.get("page") is None:
            r.pop("page", None)
    return QAResult(rows, report)


def build_qa(ws: Workspace, name: str, cfg: QAGenConfig, force: bool = False,
             writer: Callable[[str, int], str] | None = None,
             progress: Callable[[int, int], None] | None = None) -> tuple[Path, QAReport]:
    """Generate pairs and write them as dataset `name` (kind qa, every row in train.jsonl:
    the builders that read it make their own splits)."""
    check_new(ws, name, force)
    result = generate_qa(ws, cfg, writer=writer, progress=progress)
    if not result.rows:
        raise UserError(f"no question/answer pair survived the checks ({result.report.line()})")
    meta = {"format": "qa", "generator": result.report.generator,
            "generator_note": "rule-based templates and cloze questions (no model)"
            if result.report.generator == RULES else "chat model, answers checked against "
            "their chunk", "sources": sorted({r["source_id"] for r in result.rows
                                              if "source_id" in r}),
            "parameters": asdict(cfg), "report": asdict(result.report)}
    path = write_dataset(ws, name, "qa", {"train": result.rows}, meta, force=force)
    return path, result.report


def delete_rows(path: str | Path, indices: Sequence[int]) -> int:
    """Remove rows (0-based indices) from a QA JSONL file atomically; returns rows left. The row
    browser's delete: bad pairs go, the rest of the file is unchanged."""
    from clara import io

    path = Path(path)
    rows = io.read_jsonl(path)
    drop = set(indices)
    left = [r for i, r in enumerate(rows) if i not in drop]
    io.write_jsonl(path, left)
    meta = path.parent / "dataset.toml"
    if meta.is_file():
        record = io.read_toml(meta)
        record.setdefault("rows", {})[path.stem] = len(left)
        io.write_toml(meta, record)
    return len(left)


# -- paraphrases for CLaRa stage 1 -------------------------------------------------------------
PARAPHRASE_PROMPT = """Rewrite the text below in other words. Keep every name, number and fact; \
write only the rewritten text.

Text:
{chunk}"""


def model_paraphraser(ws: Workspace | None, model: str,
                      max_tokens: int = 384) -> Callable[[str], str | None]:
    """A paraphrase function for stage-1 rows written by a chat model; a reply that loses a
    number of the text is refused (None), as the QA answers are checked against their chunk."""
    write = model_writer(ws, model, QAGenConfig(model=model, max_tokens=max_tokens))

    def paraphrase(text: str) -> str | None:
        out = write(PARAPHRASE_PROMPT.format(chunk=text), max_tokens).strip()
        numbers = set(re.findall(r"\d+", text))
        if not out or not numbers <= set(re.findall(r"\d+", out)):
            return None
        return out

    return paraphrase
