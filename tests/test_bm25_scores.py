"""Differential: index.bm25_scores against bm25s itself, on random token corpora."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import bm25s
import numpy as np
import pytest

from index.bm25_scores import Bm25Scores


def random_corpus(seed: int, docs: int = 300, vocab: int = 400) -> list[list[str]]:
    rng = random.Random(seed)
    # Zipf-like word frequencies, as in text: a few terms in most documents, most in few.
    words = [f"词{i}" for i in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]
    return [rng.choices(words, weights, k=rng.randint(1, 60)) for _ in range(docs)]


def bm25s_model(corpus: list[list[str]]) -> bm25s.BM25:
    model = bm25s.BM25()
    model.index(corpus, show_progress=False)
    return model


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_equal_bm25s_in_memory_and_memory_mapped(tmp_path: Path, seed: int) -> None:
    corpus = random_corpus(seed)
    model = bm25s_model(corpus)
    ours = Bm25Scores.from_model(model)
    ours.save(tmp_path / "bm25")
    mapped = Bm25Scores.load(tmp_path / "bm25")
    assert isinstance(mapped.data, np.memmap)
    rng = random.Random(seed + 100)
    vocabulary = sorted({t for doc in corpus for t in doc})
    for _ in range(50):
        # Repeated terms and out-of-vocabulary terms, as questions have them.
        query = rng.choices(vocabulary, k=rng.randint(1, 6)) + (["不在词表"] if rng.random() < 0.3 else [])
        expected = model.get_scores([t for t in query if t in model.vocab_dict])
        np.testing.assert_array_equal(ours.scores(query), expected)
        np.testing.assert_array_equal(mapped.scores(query), expected)


def test_doc_freq_counts_documents_holding_the_term(tmp_path: Path) -> None:
    corpus = random_corpus(7)
    scores = Bm25Scores.from_model(bm25s_model(corpus))
    expected = Counter(t for doc in corpus for t in set(doc))
    assert {t: scores.doc_freq(t) for t in expected} == dict(expected)
    assert scores.doc_freq("不在词表") == 0


def test_saved_files_are_read_by_bm25s_itself(tmp_path: Path) -> None:
    corpus = random_corpus(11)
    model = bm25s_model(corpus)
    Bm25Scores.from_model(model).save(tmp_path / "bm25")
    reread = bm25s.BM25.load(str(tmp_path / "bm25"), show_progress=False)
    query = ["词0", "词5", "词5", "词77"]
    np.testing.assert_array_equal(reread.get_scores(query), model.get_scores(query))


def test_methods_needing_a_nonoccurrence_term_are_refused() -> None:
    model = bm25s.BM25(method="bm25+")
    model.index(random_corpus(3, docs=20), show_progress=False)
    with pytest.raises(ValueError, match="bm25s itself"):
        Bm25Scores.from_model(model)
