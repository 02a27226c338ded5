"""Chat with any base model and any adapter: streaming replies through mlx-lm, the reasoning block
split off or banned, timings and memory for every reply, and every exchange logged.

    engine = ChatEngine(ws)
    session = engine.session("tiny", adapter="lora-2024...:best", settings=ChatSettings(...))
    for delta in session.stream("Who built the mill?"):   # Delta(text, reasoning)
        print(delta.text, end="")
    reply = session.last                                  # Reply: answer, reasoning, stats

A CLaRa checkpoint answers from compressed documents: attach them with `documents=[...]` (texts,
compressed once per session) or `store=` (a CompressedStore folder). A stage-3 model with more
documents than its top_k retrieves the top-k per question with its query reasoner. On a plain
model, attached documents go into the prompt as raw text (raw-text RAG): all of them when they
are at most `top_k` (default RAG_TOP_K), else the top-k BM25 ranks for each prompt. A memory is
a QA dataset's pairs attached that way (clara.chat.memory; `clara chat --memory DATASET`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from clara.chat.log import ChatLog
from clara.chat.models import AdapterRef, ClaraEntry, ModelCache, default_cache, resolve_adapter
from clara.chat.reasoning import (Delta, ThinkSplitter, ban_bias, off_template_kwargs,
                                  reasoning_markers, split)
from clara.errors import UserError
from clara.workspace import Workspace, now_iso

RAG_SYSTEM = "Answer the question using the context. Answer as briefly as possible."
RAG_TOP_K = 3  # documents a plain model gets in its prompt, unless settings say otherwise


@dataclass
class ChatSettings:
    temperature: float = field(default=0.0, metadata={
        "help": "Sampling temperature; 0 decodes greedily (the same reply every time)."})
    top_p: float = field(default=1.0, metadata={
        "help": "Nucleus sampling: keep the smallest set of tokens with this much probability "
                "(1: off)."})
    max_tokens: int = field(default=256, metadata={"help": "Most tokens per reply."})
    system: str | None = field(default=None, metadata={"help": "System prompt."})
    multi_turn: bool = field(default=True, metadata={
        "help": "Send earlier turns with each prompt (off: every prompt stands alone)."})
    show_reasoning: bool = field(default=False, metadata={
        "help": "Stream and print the <think> block (it is always split off the answer)."})
    ban_thinking: bool = field(default=False, metadata={
        "help": "Forbid the reasoning tokens while generating (faster replies)."})
    seed: int | None = field(default=None, metadata={
        "help": "Seed of the sampler, for reproducible sampled replies."})
    logit_bias: dict | None = field(default=None, metadata={
        "help": "Extra additive logit bias {token id: value} (library use)."})
    top_k: int | None = field(default=None, metadata={
        "help": "Documents answered from: CLaRa stage 3's query reasoner picks this many "
                "(default: the model's); a plain model gets the BM25 top-k of the attached "
                f"documents in its prompt (default {RAG_TOP_K})."})

    def validate(self) -> "ChatSettings":
        if self.temperature < 0:
            raise UserError(f"temperature: {self.temperature} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p: {self.top_p} must be in (0, 1]")
        if self.max_tokens < 1:
            raise UserError(f"max_tokens: {self.max_tokens} must be at least 1")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"top_k: {self.top_k} must be at least 1")
        return self

    @property
    def thinking(self) -> str:
        return "banned" if self.ban_thinking else ("shown" if self.show_reasoning else "hidden")

    def to_log(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "system": self.system,
                "multi_turn": self.multi_turn, "thinking": self.thinking, "seed": self.seed}


@dataclass
class Reply:
    text: str = field(metadata={"help": "The answer, reasoning block removed."})
    reasoning: str | None = field(metadata={"help": "The reasoning block, or None."})
    raw: str = field(metadata={"help": "Everything generated."})
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prompt_tps: float = 0.0
    generation_tps: float = 0.0
    peak_memory: float = field(default=0.0, metadata={"help": "GB, for this reply."})
    latency: float = field(default=0.0, metadata={"help": "Seconds from call to last token."})
    ttft: float = field(default=0.0, metadata={"help": "Seconds to the first token."})
    finish_reason: str | None = None
    documents: list[str] = field(default_factory=list)
    retrieved: list[int] | None = field(default=None, metadata={
        "help": "Indices of the documents the query reasoner picked (stage-3 retrieval)."})
    scores: list[float] | None = field(default=None, metadata={
        "help": "The query reasoner's scores of the picked documents."})

    def stats(self) -> dict:
        d = asdict(self)
        for k in ("text", "reasoning", "raw", "tokens", "scores"):
            d.pop(k)
        return d


def biased_sampler(sampler, bias: dict, renormalize: bool = True):
    """`sampler` on the log-probabilities plus `bias` ({token id: value}): the same tokens as
    mlx-lm's logit_bias processor (a bias on the logits shifts the log-probabilities by it and
    a constant; `renormalize` takes the constant off, for top-p; greedy needs no such thing).
    A logits processor costs more per token than the addition: mlx-lm then keeps and extends
    the whole token history and scatters into the logits every step (H200, 1B model,
    bench/rag_latency.py: mlx_lm.generate with the processor 311 against 497 tok/s without in
    one lease, 490 against 495 in the next; the chat engine 364 with it, 394 with this)."""
    import mlx.core as mx

    vectors = {}

    def sample(logprobs):
        n, dt = logprobs.shape[-1], logprobs.dtype
        vec = vectors.get((n, dt))
        if vec is None:  # once per vocabulary width and dtype: a dense row of the bias
            keep = [(i, v) for i, v in bias.items() if 0 <= i < n]
            vec = mx.zeros((n,), dtype=mx.float32)
            if keep:
                vec = vec.at[mx.array([i for i, _ in keep])].add(
                    mx.array([v for _, v in keep], dtype=mx.float32))
            vec = vectors[(n, dt)] = vec.astype(dt)
            mx.eval(vec)
        logprobs = logprobs + vec
        if renormalize:
            logprobs = logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)
        return sampler(logprobs)

    return sample


def rag_prompt(question: str, docs: Sequence[str]) -> str:
    """The raw-text RAG user message: numbered context passages, then the question."""
    context = "\n\n".join(f"[{i + 1}] {d.strip()}" for i, d in enumerate(docs))
    return f"Context:\n{context}\n\nQuestion: {question.strip()}\nAnswer:"


class ChatSession:
    """One conversation with one model (+ adapter), its history and settings."""

    def __init__(self, engine: "ChatEngine", source: str, adapter: AdapterRef | None,
                 settings: ChatSettings, documents: Sequence[str] | None = None,
                 doc_ids: Sequence[str] | None = None, store: str | Path | None = None,
                 model_label: str | None = None):
        self.engine = engine
        self.source = source
        self.model_label = model_label or source
        self.settings = settings.validate()
        self.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        self.history: list[dict] = []
        self.turn = 0
        self.last: Reply | None = None
        self.adapter: AdapterRef | None = None
        self._docs: list[str] = list(documents or [])
        self._doc_ids = list(doc_ids) if doc_ids else [str(i) for i in range(len(self._docs))]
        self._store_path = Path(store) if store else None
        self._compressed = None  # (vectors, ids) of attached documents, CLaRa only
        self._bm25 = None  # BM25 over the attached documents, plain models only
        self.set_adapter(adapter)

    # -- model ------------------------------------------------------------------------------
    @property
    def entry(self):
        return self.engine.cache.get(self.source, self.adapter, self.engine.dtype)

    @property
    def is_clara(self) -> bool:
        return self.adapter is not None and self.adapter.kind == "clara"

    def set_adapter(self, adapter: AdapterRef | str | None) -> None:
        """Switch adapter (a reference, an AdapterRef, or None for the bare base); the base
        stays loaded. The history is kept."""
        if isinstance(adapter, str):
            adapter = resolve_adapter(self.engine.ws, adapter)
        self.adapter = adapter
        self._compressed = None
        entry = self.entry  # load now: a bad adapter fails here, not at the first prompt
        self.markers = reasoning_markers(entry.tokenizer)
        if self.is_clara:
            self._attach(entry)
        elif self._store_path is not None:
            raise UserError("a compressed-document store needs a CLaRa checkpoint as adapter")

    def attach(self, documents: Sequence[str], doc_ids: Sequence[str] | None = None) -> None:
        """Attach documents (replacing any): a CLaRa checkpoint compresses them now, once."""
        self._docs = list(documents)
        self._doc_ids = list(doc_ids) if doc_ids else [str(i) for i in range(len(self._docs))]
        if len(self._doc_ids) != len(self._docs):
            raise UserError("one document id per document")
        self._store_path = None
        self._compressed = None
        self._bm25 = None
        if self.is_clara:
            self._attach(self.entry)

    def _attach(self, entry: ClaraEntry) -> None:
        from clara.method.inference import CompressedStore, compress_documents

        if self._store_path is not None:
            store = CompressedStore.open(self._store_path)
            store.check(entry.model)
            self._compressed = (store.vectors, [d["id"] for d in store.docs])
        elif self._docs:
            self._compressed = (compress_documents(entry.model, self._docs), self._doc_ids)

    def reset(self) -> None:
        self.history.clear()

    # -- prompts ----------------------------------------------------------------------------
    def messages(self, prompt: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.settings.system}] if self.settings.system \
            else []
        if self.settings.multi_turn:
            msgs += self.history
        return msgs + [{"role": "user", "content": prompt}]

    def prompt_ids(self, prompt: str) -> list[int]:
        tok = self.entry.tokenizer
        msgs = self.messages(prompt)
        kwargs = off_template_kwargs(self.markers) if self.settings.ban_thinking else {}
        if getattr(tok, "has_chat_template", False):
            try:
                return list(tok.apply_chat_template(msgs, add_generation_prompt=True, **kwargs))
            except Exception:
                if msgs[0]["role"] != "system":
                    raise
                # A template without a system role: fold the system prompt into the first turn.
                msgs = [{"role": msgs[1]["role"],
                         "content": f"{msgs[0]['content']}\n\n{msgs[1]['content']}"}] + msgs[2:]
                return list(tok.apply_chat_template(msgs, add_generation_prompt=True, **kwargs))
        text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in msgs)
        return list(tok.encode(text + "\n\nAssistant:"))

    # -- replies ----------------------------------------------------------------------------
    def ask(self, prompt: str, documents: Sequence[str] | None = None,
            doc_ids: Sequence[str] | None = None, select: Sequence[int] | None = None) -> Reply:
        for _ in self.stream(prompt, documents, doc_ids, select):
            pass
        return self.last

    def stream(self, prompt: str, documents: Sequence[str] | None = None,
               doc_ids: Sequence[str] | None = None,
               select: Sequence[int] | None = None) -> Iterator[Delta]:
        """Stream answer deltas (and reasoning deltas when shown); `self.last` is the Reply.

        `documents` replace the attached documents for this question only; `select` answers
        from these attached documents only (by index: a CLaRa checkpoint reuses their
        compressed form)."""
        import mlx.core as mx

        if not prompt or not prompt.strip():
            raise UserError("the prompt is empty")
        s = self.settings
        if s.seed is not None:
            mx.random.seed(s.seed)
        mx.reset_peak_memory()
        tic = time.perf_counter()
        self._scores = None
        responses, used_docs, retrieved, user_text = self._responses(prompt, documents, doc_ids,
                                                                     select)
        splitter = ThinkSplitter(self.markers)
        raw, tokens, last, ttft = [], [], None, 0.0
        for r in responses:
            if not tokens:
                ttft = time.perf_counter() - tic
            tokens.append(int(r.token))
            raw.append(r.text)
            last = r
            for d in splitter.feed(r.text):
                if s.show_reasoning or not d.reasoning:
                    yield d
        for d in splitter.finish():
            if s.show_reasoning or not d.reasoning:
                yield d
        latency = time.perf_counter() - tic
        raw_text = "".join(raw)
        reasoning, answer = split(raw_text, self.markers)
        reply = Reply(answer, reasoning, raw_text, tokens, documents=used_docs,
                      retrieved=retrieved, scores=self._scores, latency=latency, ttft=ttft)
        if last is not None:
            reply.prompt_tokens = last.prompt_tokens
            reply.generation_tokens = last.generation_tokens
            reply.prompt_tps, reply.generation_tps = last.prompt_tps, last.generation_tps
            reply.peak_memory, reply.finish_reason = last.peak_memory, last.finish_reason
        self.last = reply
        self.turn += 1
        if s.multi_turn and not self.is_clara:
            self.history += [{"role": "user", "content": user_text},
                             {"role": "assistant", "content": answer}]
        if self.engine.log is not None:
            self.engine.log.append(self.record(prompt, reply))

    def _select(self, select: Sequence[int] | None) -> None:
        n = len(self._compressed[1]) if self._compressed is not None else len(self._docs)
        if select is not None and not all(0 <= i < n for i in select):
            raise UserError(f"select: indices must be in 0..{n - 1} (attached documents)")

    def _responses(self, prompt, documents, doc_ids, select=None):
        """(GenerationResponse iterator, document ids used, retrieved indices, user text)."""
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        s = self.settings
        self._select(select)
        if self.is_clara:
            return self._clara_responses(prompt, documents, doc_ids, select)
        docs = list(documents) if documents is not None else self._docs
        ids = list(doc_ids) if doc_ids is not None else (
            self._doc_ids if documents is None else [str(i) for i in range(len(docs))])
        k = s.top_k or RAG_TOP_K
        pick = select if documents is None else None
        if pick is None and len(docs) > k:  # the top-k for this prompt, not every document
            pick = self._rank(prompt, docs, documents is None)[:k]
        if pick is not None:
            docs, ids = [docs[i] for i in pick], [ids[i] for i in pick]
        user_text = rag_prompt(prompt, docs) if docs else prompt
        entry = self.entry
        bias = dict(s.logit_bias or {})
        if s.ban_thinking:
            bias.update(ban_bias(self.markers))  # a ban overrides any bias on the same ids
        sampler = make_sampler(temp=s.temperature, top_p=s.top_p if s.top_p < 1 else 0.0)
        if bias:
            sampler = biased_sampler(sampler, bias, renormalize=s.temperature > 0)
        gen = stream_generate(entry.model, entry.tokenizer, self.prompt_ids(user_text),
                              max_tokens=s.max_tokens, sampler=sampler)
        return gen, ids if docs else [], None, user_text

    def _rank(self, prompt: str, docs: list[str], attached: bool) -> list[int]:
        """`docs` best first for `prompt` by BM25 (the attached ones' index built once)."""
        from clara.data.builders import BM25

        if not attached:
            return BM25(docs).ranked(prompt)
        if self._bm25 is None:
            self._bm25 = BM25(self._docs)
        return self._bm25.ranked(prompt)

    def _clara_responses(self, prompt, documents, doc_ids, select=None):
        import mlx.core as mx

        from clara.method import inference

        s = self.settings
        model = self.entry.model
        if documents is not None:
            if not documents:
                raise UserError("no documents to answer from")
            vectors = inference.compress_documents(model, list(documents))
            ids = list(doc_ids) if doc_ids else [str(i) for i in range(len(documents))]
        elif self._compressed is not None:
            vectors, ids = self._compressed
            if select is not None:
                vectors, ids = vectors[mx.array(list(select))], [ids[i] for i in select]
        else:
            raise UserError("a CLaRa checkpoint answers from documents: attach some "
                             "(--doc FILE, --sources or --store)")
        vectors, retrieved, self._scores = inference.select(model, prompt, vectors, s.top_k)
        if retrieved is not None:
            ids = [ids[i] for i in retrieved]
        # CLaRa's prompt has its own system text and one question: no history, no top-p.
        gen = inference.stream_answer(model, prompt, vectors, max_tokens=s.max_tokens,
                                      temp=s.temperature)
        return gen, list(ids), retrieved, prompt

    def record(self, prompt: str, reply: Reply) -> dict:
        ws = self.engine.ws
        return {"time": now_iso(), "session": self.id, "turn": self.turn,
                "workspace": ws.name if ws else None, "model": self.model_label,
                "adapter": self.adapter.label if self.adapter else None,
                "kind": self.adapter.kind if self.adapter else "base",
                "documents": reply.documents, "settings": self.settings.to_log(),
                "prompt": prompt, "reply": reply.text, "reasoning": reply.reasoning,
                **{k: v for k, v in reply.stats().items()
                   if k not in ("documents", "retrieved")}}


class ChatEngine:
    """Opens chat sessions over a shared model cache; logs to the workspace's chats/."""

    def __init__(self, ws: Workspace | None = None, cache: ModelCache | None = None,
                 log: bool = True, dtype: str | None = None):
        self.ws = ws
        self.cache = cache if cache is not None else default_cache()
        self.dtype = dtype
        self.log = ChatLog(ws.chats_dir) if (log and ws is not None) else None

    def resolve(self, model: str | None, adapter: str | AdapterRef | None):
        """(base source, model label, AdapterRef or None); the base defaults to the adapter's."""
        from clara.models.registry import model_source

        ref = resolve_adapter(self.ws, adapter) if isinstance(adapter, str) else adapter
        if model is None:
            if ref is None or not ref.base:
                raise UserError("no model given (and no adapter that names its base model)")
            return model_source(self.ws, ref.base), ref.base, ref
        return model_source(self.ws, model), model, ref

    def session(self, model: str | None = None, adapter: str | AdapterRef | None = None,
                settings: ChatSettings | None = None, documents: Sequence[str] | None = None,
                doc_ids: Sequence[str] | None = None,
                store: str | Path | None = None) -> ChatSession:
        source, label, ref = self.resolve(model, adapter)
        return ChatSession(self, source, ref, settings or ChatSettings(), documents, doc_ids,
                           store, label)
