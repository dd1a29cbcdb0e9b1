"""Persisted indexes: the store code lives here, the built index under `index/data/`."""

from index.store import (
    NO_FILTERS,
    DocChanges,
    EmbedderMismatch,
    FaissBm25Store,
    Filters,
    ScoredChunk,
    Store,
    StoreError,
    write_lock,
)

__all__ = [
    "NO_FILTERS",
    "DocChanges",
    "EmbedderMismatch",
    "FaissBm25Store",
    "Filters",
    "ScoredChunk",
    "Store",
    "StoreError",
    "write_lock",
]
