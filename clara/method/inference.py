"""Answering with a CLaRa model: compress documents (once, into a reusable store on disk), then
answer a question from documents, from compressed documents, or by letting the query reasoner
retrieve the top-k of a pool of compressed documents.

Generation is mlx-lm's `stream_generate` with its KV cache: the prompt is passed both as
placeholder token ids and as `input_embeddings` of the same length (an empty prompt would skip
the logits processors on the first token, mlx-lm-notes §5); a logits processor bans the added
CLaRa tokens so they are never generated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import numpy as np

from clara import io
from clara.errors import UserError
from clara.method.checkpoint import _save_safetensors
from clara.method.model import ClaraModel
from clara.method.topk import cosine_scores

STORE_INDEX = "index.json"
STORE_VECTORS = "vectors.safetensors"


def compress_documents(model: ClaraModel, texts: list[str], batch_size: int = 8) -> mx.array:
    """Compressed documents [len(texts), n_mem, H] (compressor adapter, no dropout)."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        b = model.encoder_batch(texts[i:i + batch_size])
        vec, _ = model.compress(b["enc_ids"], b["enc_mask"], b["enc_mem_pos"])
        mx.eval(vec)
        out.append(vec)
    if not out:
        return mx.zeros((0, model.config.n_mem, model.hidden_size))
    return mx.concatenate(out, axis=0)


def compressor_digest(model: ClaraModel) -> str:
    """A fingerprint of what determines compressed vectors: compressor weights and memory rows."""
    h = hashlib.sha256()
    from clara.method.checkpoint import adapter_weights

    items = sorted((k, v) for k, v in adapter_weights(model).items()
                   if ".adapters.compressor." in k)
    items.append(("memory", model.embedding.memory))
    for k, v in items:
        h.update(k.encode())
        h.update(np.array(v.astype(mx.float32)).tobytes())
    return h.hexdigest()[:16]


@dataclass
class CompressedStore:
    """Compressed documents on disk: vectors.safetensors ([N, n_mem, H]) + index.json."""

    path: Path
    vectors: mx.array
    docs: list[dict]
    meta: dict

    @classmethod
    def build(cls, model: ClaraModel, texts: list[str], path: str | Path,
              ids: list[str] | None = None, batch_size: int = 8,
              keep_text: bool = True) -> "CompressedStore":
        ids = ids if ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts) or len(set(ids)) != len(ids):
            raise UserError("document ids must be unique, one per document")
        from clara.train.checkpoint import write_dir_atomically

        path = Path(path)
        if path.is_dir() and {p.name for p in path.iterdir()} - {STORE_VECTORS, STORE_INDEX}:
            raise UserError(f"{path}: a folder with other files, not a store: give a new --out")
        vectors = compress_documents(model, texts, batch_size)
        meta = {"format": 1, "n_mem": model.config.n_mem, "hidden_size": model.hidden_size,
                "base_model": model.config.base_model, "compressor": compressor_digest(model),
                "count": len(texts)}
        docs = [{"id": i, **({"text": t} if keep_text else {})} for i, t in zip(ids, texts)]

        def fill(tmp: Path) -> None:  # built aside and swapped in: a kill leaves the old store
            _save_safetensors(tmp / STORE_VECTORS, {"vectors": vectors.astype(mx.float32)})
            io.write_json(tmp / STORE_INDEX, {**meta, "docs": docs})

        write_dir_atomically(path, fill)
        return cls(path, vectors, docs, meta)

    @classmethod
    def open(cls, path: str | Path) -> "CompressedStore":
        path = Path(path)
        if not (path / STORE_INDEX).is_file() or not (path / STORE_VECTORS).is_file():
            raise UserError(f"{path}: not a compressed-document store (no {STORE_INDEX} or "
                             f"{STORE_VECTORS})")
        index = io.read_json(path / STORE_INDEX)
        vectors = mx.load(str(path / STORE_VECTORS))["vectors"]
        docs = index.pop("docs")
        if vectors.shape[0] != len(docs):
            raise UserError(f"{path}: {vectors.shape[0]} vectors but {len(docs)} documents")
        return cls(path, vectors, docs, index)

    def check(self, model: ClaraModel) -> None:
        """Refuse a store made by another compressor (its vectors would mean nothing here)."""
        if (self.meta["n_mem"], self.meta["hidden_size"]) != (model.config.n_mem,
                                                              model.hidden_size):
            raise UserError(f"{self.path}: made for n_mem {self.meta['n_mem']} / hidden "
                             f"{self.meta['hidden_size']}, not this model's")
        if self.meta["compressor"] != compressor_digest(model):
            raise UserError(f"{self.path}: compressed by another compressor checkpoint; "
                             "rebuild the store")


def _ban_added(model: ClaraModel):
    s = model.special
    lo, hi = s.first, s.first + s.count

    def processor(tokens, logits):
        cols = mx.arange(logits.shape[-1])
        return mx.where((cols >= lo) & (cols < hi), -mx.inf, logits)

    return processor


def stream_answer(model: ClaraModel, question: str, compressed: mx.array, max_tokens: int = 128,
                  temp: float = 0.0, logits_processors=(), **kwargs) -> Iterator:
    """Stream mlx-lm GenerationResponses for `question` over compressed docs [k, n_mem, H];
    `logits_processors` run after the one that bans the CLaRa tokens."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    if compressed.ndim != 3 or compressed.shape[0] < 1:
        raise UserError(f"compressed documents must be [k, n_mem, H], got {compressed.shape}")
    k = compressed.shape[0]
    model.eval()
    ids = model.prompt_ids(question, k)
    arr = np.array([ids], dtype=np.int32)
    emb = model.inject(mx.array(arr), mx.array(model.slot_index(arr, k)), compressed, k)[0]
    model.set_adapter("generator")
    yield from stream_generate(model.lm, model.tokenizer, mx.array(ids), max_tokens=max_tokens,
                               sampler=make_sampler(temp=temp),
                               logits_processors=[_ban_added(model), *logits_processors],
                               input_embeddings=emb,
                               **kwargs)


def _collect(responses) -> str:
    return "".join(r.text for r in responses).strip()


def answer_from_compressed(model: ClaraModel, question: str, compressed: mx.array,
                           **kwargs) -> str:
    return _collect(stream_answer(model, question, compressed, **kwargs))


def answer_from_docs(model: ClaraModel, question: str, docs: list[str], **kwargs) -> str:
    if not docs:
        raise UserError("no documents to answer from")
    return answer_from_compressed(model, question, compress_documents(model, docs), **kwargs)


def retrieve(model: ClaraModel, question: str, vectors: mx.array, top_k: int | None = None):
    """(indices, cosine scores) of the top-k of `vectors` [N, n_mem, H] for the question, by
    the query reasoner (rank order)."""
    if "query_reasoner" not in model.adapter_names():
        raise UserError("this model has no query reasoner (retrieval needs a stage-3 model)")
    k = top_k or model.config.top_k
    if not 1 <= k <= vectors.shape[0]:
        raise UserError(f"top_k {k} out of {vectors.shape[0]} documents")
    model.eval()
    model._check_text(question, "question")
    b = model.encoder_batch([question], prefix="q")
    q = model.encode_query(b["q_ids"], b["q_mask"], b["q_mem_pos"])
    scores = cosine_scores(q, vectors.reshape(1, vectors.shape[0], -1),
                           model.config.retrieval_center)[0]
    order = mx.argsort(-scores)[:k]
    return [int(i) for i in order.tolist()], [float(scores[i].item()) for i in order.tolist()]


def retrieves(model: ClaraModel, n_docs: int, top_k: int | None = None) -> bool:
    """Whether the model picks its own top-k of `n_docs` documents: a stage-3 model (it has a
    query reasoner) given more documents than its top-k. Any other answers from all of them."""
    return "query_reasoner" in model.adapter_names() and n_docs > (top_k or model.config.top_k)


def select(model: ClaraModel, question: str, vectors: mx.array, top_k: int | None = None):
    """(vectors answered from, picked indices or None, their scores or None): the top-k of a
    stage-3 model's query reasoner when it `retrieves`, else all the documents as given."""
    if not retrieves(model, vectors.shape[0], top_k):
        return vectors, None, None
    idx, scores = retrieve(model, question, vectors, top_k)
    return vectors[mx.array(idx)], idx, scores


@dataclass
class RetrievalAnswer:
    text: str
    indices: list[int]
    scores: list[float]
    doc_ids: list[str]


def answer_with_retrieval(model: ClaraModel, question: str, pool, top_k: int | None = None,
                          **kwargs) -> RetrievalAnswer:
    """Answer from the top-k of a pool: a CompressedStore, or vectors [N, n_mem, H]."""
    if isinstance(pool, CompressedStore):
        pool.check(model)
        vectors, ids = pool.vectors, [d["id"] for d in pool.docs]
    else:
        vectors, ids = pool, [str(i) for i in range(pool.shape[0])]
    idx, scores = retrieve(model, question, vectors, top_k)
    text = answer_from_compressed(model, question, vectors[mx.array(idx)], **kwargs)
    return RetrievalAnswer(text, idx, scores, [ids[i] for i in idx])
