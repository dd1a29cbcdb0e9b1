"""Sentence-aware chunks: offsets, budget, overlap, no cut inside a sentence."""

from __future__ import annotations

import itertools

import pytest

from rag.chunking import ChunkingParams, chunk_document
from rag.ingest import load_documents
from rag.text import sentence_spans
from rag.types import Document
from tests.conftest import SEED_FILE


@pytest.mark.parametrize("budget", [60, 256, 600])
def test_chunks_quote_their_offsets_and_respect_sentences(budget: int) -> None:
    for doc in load_documents(SEED_FILE):
        boundaries = {s for s, _ in sentence_spans(doc.text)} | {e for _, e in sentence_spans(doc.text)}
        chunks = chunk_document(doc, ChunkingParams(max_chars=budget))
        assert chunks
        for chunk in chunks:
            assert doc.text[chunk.start : chunk.end] == chunk.text
            assert chunk.doc_id == doc.doc_id and chunk.title == doc.title
            if chunk.end - chunk.start > budget:  # only a single over-long sentence may exceed it
                assert not any(chunk.start < b < chunk.end for b in boundaries)
        sentence_starts = [s for s, _ in sentence_spans(doc.text)]
        assert all(c.start in sentence_starts or budget < 256 for c in chunks)


def test_every_sentence_is_in_some_chunk_and_neighbours_overlap() -> None:
    doc = load_documents(SEED_FILE)[0]
    chunks = chunk_document(doc, ChunkingParams(max_chars=200, overlap_sentences=1))
    for s, e in sentence_spans(doc.text):
        assert any(c.start <= s and e <= c.end for c in chunks)
    starts = [s for s, _ in sentence_spans(doc.text)]
    for a, b in itertools.pairwise(chunks):
        last_sentence_of_a = max(s for s in starts if s < a.end)
        # One sentence is shared, unless sharing it would burst the budget.
        assert b.start < a.end or b.end - last_sentence_of_a > 200


def test_long_sentence_is_cut_at_commas_within_budget() -> None:
    text = "，".join(["乡村振兴重点工作持续推进"] * 30) + "。"
    doc = Document(title="长句", text=text, key="k")
    chunks = chunk_document(doc, ChunkingParams(max_chars=100, overlap_sentences=0))
    assert len(chunks) > 1
    assert all(len(c.text) <= 100 for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_bad_params_are_rejected() -> None:
    with pytest.raises(ValueError):
        ChunkingParams(max_chars=5)
