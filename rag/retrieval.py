"""Hybrid retrieval: dense and lexical legs over-fetch, reciprocal-rank fusion merges them."""

from __future__ import annotations

import numpy as np

from index.store import NO_FILTERS, Filters, ScoredChunk, Store
from rag.embedders import Embedder
from rag.fusion import RRF_K, rrf
from rag.tokenize import tokenize
from rag.types import Hit


def fuse(dense: list[ScoredChunk], lexical: list[ScoredChunk], top_k: int, k: int = RRF_K) -> list[Hit]:
    """RRF (constant `k`) over the two legs; each hit keeps both legs' ranks and scores."""
    by_id = {s.chunk.chunk_id: s.chunk for s in dense + lexical}
    dense_at = {s.chunk.chunk_id: (rank, s.score) for rank, s in enumerate(dense, 1)}
    lexical_at = {s.chunk.chunk_id: (rank, s.score) for rank, s in enumerate(lexical, 1)}
    fused = rrf([[s.chunk.chunk_id for s in dense], [s.chunk.chunk_id for s in lexical if s.score > 0]], k)
    hits = []
    for chunk_id, score in fused[:top_k]:
        d_rank, d_score = dense_at.get(chunk_id, (None, None))
        l_rank, l_score = lexical_at.get(chunk_id, (None, None))
        hits.append(Hit(by_id[chunk_id], score, d_rank, d_score, l_rank, l_score))
    return hits


class HybridRetriever:
    def __init__(self, store: Store, embedder: Embedder, fetch_k: int = 30) -> None:
        self.store = store
        self.embedder = embedder
        self.fetch_k = fetch_k

    def query_vector(self, question: str) -> np.ndarray:
        return self.embedder.embed_queries([question])[0]

    def search(
        self,
        question: str,
        top_k: int = 5,
        filters: Filters = NO_FILTERS,
        mode: str = "hybrid",
        query_vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """Fused hits; pass `query_vector` when the caller already embedded the question."""
        fetch = max(self.fetch_k, top_k)
        if mode != "lexical" and query_vector is None:
            query_vector = self.query_vector(question)
        dense = self.store.dense_search(query_vector, fetch, filters) if mode != "lexical" else []
        lexical = self.store.lexical_search(tokenize(question), fetch, filters) if mode != "dense" else []
        return fuse(dense, lexical, top_k)
