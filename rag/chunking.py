"""Sentence-aware chunking with character offsets into the document text."""

from __future__ import annotations

from dataclasses import dataclass

from rag.text import sentence_spans, split_long_span
from rag.types import Chunk, Document


@dataclass(frozen=True)
class ChunkingParams:
    max_chars: int = 256
    overlap_sentences: int = 1

    def __post_init__(self) -> None:
        if self.max_chars < 20:
            raise ValueError("chunk budget must be at least 20 characters")
        if self.overlap_sentences < 0:
            raise ValueError("overlap must be >= 0 sentences")


def sentence_units(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Sentence spans; a sentence longer than the budget is cut at clause punctuation."""
    units: list[tuple[int, int]] = []
    for span in sentence_spans(text):
        units.extend(split_long_span(span, max_chars, text))
    return units


def pack_units(units: list[tuple[int, int]], params: ChunkingParams) -> list[tuple[int, int]]:
    """Greedy packing of consecutive units into windows of <= max_chars, overlapping by
    `overlap_sentences` units; returns (first_unit, last_unit_exclusive) index pairs."""
    windows: list[tuple[int, int]] = []
    first = 0
    while first < len(units):
        last = first + 1
        while last < len(units) and units[last][1] - units[first][0] <= params.max_chars:
            last += 1
        windows.append((first, last))
        if last == len(units):
            break
        first = max(last - params.overlap_sentences, first + 1)
        while first < last and units[last][1] - units[first][0] > params.max_chars:
            first += 1  # the overlap must leave room for at least one new sentence
    return windows


def chunk_document(doc: Document, params: ChunkingParams) -> list[Chunk]:
    units = sentence_units(doc.text, params.max_chars)
    chunks = []
    for i, (first, last) in enumerate(pack_units(units, params)):
        start, end = units[first][0], units[last - 1][1]
        chunks.append(
            Chunk(
                chunk_id=f"{doc.doc_id}:{i}",
                doc_id=doc.doc_id,
                title=doc.title,
                start=start,
                end=end,
                text=doc.text[start:end],
                date=doc.date,
            )
        )
    return chunks
