"""bm25s's eager BM25 index read without bm25s: its precomputed per-term score matrix (CSC,
one column per vocabulary term) memory-mapped from the files `bm25s.BM25.save` writes.

A question then costs a vocabulary lookup and a few array slices, and a cold process does
not import bm25s (0.17 s: it pulls in scipy.sparse). bm25s still builds the index (write
path); scoring here repeats `bm25s.BM25.get_scores` step for step (same float32 sums in the
same order) and a differential test holds the two equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ARRAYS = ("data", "indices", "indptr")
# bm25s's file names inside its folder (bm25s 0.2-0.3).
PARAMS_FILE, VOCAB_FILE = "params.index.json", "vocab.index.json"
# Methods whose scores need a non-occurrence term (bm25l, bm25+); lucene, robertson and atire do not.
SPARSE_METHODS = frozenset({"lucene", "robertson", "atire"})


def array_file(name: str) -> str:
    return f"{name}.csc.index.npy"


def relevance(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, num_docs: int, term_ids: Sequence[int]) -> np.ndarray:
    """Sum of each query term's precomputed score per document (a repeated term counts again)."""
    scores = np.zeros(num_docs, dtype=data.dtype)
    for term in term_ids:
        start, end = int(indptr[term]), int(indptr[term + 1])
        np.add.at(scores, indices[start:end], data[start:end])
    return scores


class Bm25Scores:
    """The score matrix and vocabulary of one bm25s index."""

    def __init__(self, arrays: dict[str, np.ndarray], num_docs: int, vocab: dict[str, int], params: dict[str, Any]) -> None:
        if params.get("method", "lucene") not in SPARSE_METHODS:
            raise ValueError(f"BM25 method {params.get('method')!r} needs bm25s itself to score")
        self.data, self.indices, self.indptr = (arrays[name] for name in ARRAYS)
        self.num_docs = num_docs
        self.vocab = vocab
        self.params = params

    @classmethod
    def from_model(cls, model: Any) -> Bm25Scores:
        """From a `bm25s.BM25` that was just indexed."""
        params = {k: getattr(model, k) for k in ("k1", "b", "delta", "method", "idf_method", "dtype", "int_dtype")}
        params["num_docs"] = int(model.scores["num_docs"])
        arrays = {name: np.asarray(model.scores[name]) for name in ARRAYS}
        return cls(arrays, params["num_docs"], dict(model.vocab_dict), params)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> Bm25Scores:
        params = json.loads((folder / PARAMS_FILE).read_text(encoding="utf-8"))
        vocab = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        mode = "r" if mmap else None
        arrays = {name: np.load(folder / array_file(name), mmap_mode=mode) for name in ARRAYS}
        return cls(arrays, int(params["num_docs"]), vocab, params)

    def save(self, folder: Path) -> None:
        """The files `bm25s.BM25.load` reads (so an index stays readable by bm25s itself)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            np.save(folder / array_file(name), np.asarray(getattr(self, name)))
        (folder / VOCAB_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        (folder / PARAMS_FILE).write_text(json.dumps(self.params, indent=4), encoding="utf-8")

    def __contains__(self, token: str) -> bool:
        return token in self.vocab

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """Per-document scores, as `bm25s.BM25.get_scores` (tokens outside the vocabulary are skipped)."""
        ids = [self.vocab[t] for t in tokens if t in self.vocab]
        return relevance(self.data, self.indices, self.indptr, self.num_docs, ids)

    def doc_freq(self, token: str) -> int:
        """Documents holding `token`: its column's non-zeros (a BM25 score is > 0 wherever tf > 0)."""
        term = self.vocab.get(token)
        return 0 if term is None else int(self.indptr[term + 1] - self.indptr[term])
