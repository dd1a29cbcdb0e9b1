"""Reciprocal-rank fusion on hand-made rankings, zero-score lexical hits, hybrid retrieval."""

from __future__ import annotations

import pytest

from index.store import ScoredChunk
from rag.fusion import RRF_K, rrf, rrf_scores
from rag.retrieval import fuse
from rag.service import RagService
from rag.tokenize import tokenize
from rag.types import Chunk


def chunk(cid: str) -> Chunk:
    return Chunk(chunk_id=cid, doc_id=cid, title=cid, start=0, end=1, text=cid)


def test_rrf_on_hand_made_rankings() -> None:
    scores = rrf_scores([["a", "b", "c"], ["c", "a"]], k=60)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [item for item, _ in rrf([["a", "b", "c"], ["c", "a"]])] == ["a", "c", "b"]


def test_rrf_rewards_agreement_over_one_top_rank() -> None:
    # x is 1st in one list only; y is 2nd in both: 2/(k+2) > 1/(k+1) for any k > 0.
    assert next(item for item, _ in rrf([["x", "y"], ["z", "y"]])) == "y"


def test_zero_score_lexical_hits_never_enter_the_fusion() -> None:
    dense = [ScoredChunk(chunk("d1"), 0.9)]
    lexical = [ScoredChunk(chunk("l1"), 2.5), ScoredChunk(chunk("l0"), 0.0)]
    hits = fuse(dense, lexical, top_k=10)
    assert {h.chunk.chunk_id for h in hits} == {"d1", "l1"}
    l1 = next(h for h in hits if h.chunk.chunk_id == "l1")
    assert (l1.dense_rank, l1.lexical_rank, l1.lexical_score) == (None, 1, 2.5)


def test_lexical_search_drops_chunks_without_the_term(seed_service: RagService) -> None:
    hits = seed_service.store.lexical_search(tokenize("骑手"), 50)
    assert hits and all("骑手" in h.chunk.text for h in hits)
    assert all(h.score > 0 for h in hits)


def test_hybrid_hits_carry_both_legs(seed_service: RagService) -> None:
    hits = seed_service.search("“南骑士”志愿服务队聘用了多少名美团外卖骑手？", top_k=5)
    assert "南骑士" in hits[0].chunk.text
    top = hits[0]
    assert top.dense_rank is not None and top.lexical_rank is not None
    assert top.score == pytest.approx(1 / (RRF_K + top.dense_rank) + 1 / (RRF_K + top.lexical_rank))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
