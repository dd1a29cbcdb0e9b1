"""Reciprocal-rank fusion (Cormack et al., 2009): score(d) = sum over legs of 1 / (k + rank)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

RRF_K = 60


def rrf_scores(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K) -> dict[Hashable, float]:
    """Fused scores for ranked id lists (rank 1 = best)."""
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """Items by descending fused score; ties keep first-seen order."""
    scores = rrf_scores(rankings, k)
    return sorted(scores.items(), key=lambda kv: -kv[1])
