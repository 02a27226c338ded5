"""Raw-text retrieval for evaluation: the workspace's sources in chunks, ranked by BM25 (the same
chunking and BM25 as the dataset builders), and the gold chunk of each question located as the
builders locate it, so recall@k means the same thing here as in the training data.
"""

from __future__ import annotations

from dataclasses import dataclass

from clara.data.builders import BM25, DocChunk, QAItem, chunk_documents, documents_from_sources
from clara.data.builders import locate_gold
from clara.data.chunking import RegexTokenizer, TokenCounter
from clara.errors import ValidationFailed
from clara.workspace import Workspace


@dataclass
class ChunkIndex:
    chunks: list[DocChunk]
    bm25: BM25

    @classmethod
    def from_workspace(cls, ws: Workspace, max_tokens: int = 128, overlap: int = 16,
                       tokenizer: TokenCounter | None = None) -> "ChunkIndex":
        docs = documents_from_sources(ws)
        return cls.from_chunks(chunk_documents(docs, tokenizer or RegexTokenizer(), max_tokens,
                                               overlap))

    @classmethod
    def from_chunks(cls, chunks: list[DocChunk]) -> "ChunkIndex":
        return cls(list(chunks), BM25([c.text for c in chunks]))

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.chunks]

    def search(self, question: str, k: int) -> list[int]:
        return self.bm25.ranked(question)[:k]

    def gold(self, question: str, answer: str, keywords=(), source: str | None = None) -> list[int]:
        """Indices of the chunk that holds the answer, or [] when none can be told."""
        item = QAItem(question, answer, list(keywords), source)
        try:
            locate_gold([item], self.chunks, self.bm25)
        except ValidationFailed:
            return []
        return item.gold
