"""Core value types shared by ingestion, indexing, retrieval and answering."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


def content_id(*parts: str) -> str:
    """Stable id from content: the same text always gets the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class SourceSegment:
    """text[doc_start:doc_start+length] == original[orig_start:orig_start+length]."""

    doc_start: int
    orig_start: int
    length: int


@dataclass
class Document:
    """One article. `text` is the cleaned article; `source_map` leads back to the raw file."""

    title: str
    text: str
    key: str  # identity across edits: same key + new text = replacement
    source: str = ""
    date: str | None = None
    url: str | None = None
    byline: str | None = None
    dateline: str | None = None
    subtitle: str | None = None
    source_map: list[SourceSegment] | None = None
    doc_id: str = ""
    # What the loader knew about the file and the article, JSON-ready: "format" (txt, pdf,
    # docx, markdown, html, jsonl), "encoding" (as detected), "pages"/"paragraphs" ([doc
    # offset, number] where each page or paragraph starts), "fields" ({field: {"quote": the
    # raw line a title/byline/dateline/credit was parsed from, "source_start", "source_end"}}).
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.doc_id:
            self.doc_id = content_id(self.title, self.text)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.source_map is not None:
            data["source_map"] = [[s.doc_start, s.orig_start, s.length] for s in self.source_map]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Document:
        data = dict(data)
        raw_map = data.pop("source_map", None)
        source_map = None if raw_map is None else [SourceSegment(*seg) for seg in raw_map]
        return cls(**data, source_map=source_map)

    def source_offset(self, doc_offset: int) -> int | None:
        """Offset in the original file of the character at `doc_offset` in `text`."""
        for seg in self.source_map or []:
            if seg.doc_start <= doc_offset < seg.doc_start + seg.length:
                return seg.orig_start + doc_offset - seg.doc_start
        return None  # no map (html, jsonl): `text` itself is the original


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    title: str
    start: int
    end: int
    text: str
    date: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hit:
    """A retrieved chunk with its fused score and each leg's rank and score (None: not found)."""

    chunk: Chunk
    score: float
    dense_rank: int | None = None
    dense_score: float | None = None
    lexical_rank: int | None = None
    lexical_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("chunk"))
        return data


@dataclass
class Citation:
    n: int
    doc_id: str
    title: str
    chunk_id: str
    start: int
    end: int
    quote: str
    score: float
    source_start: int | None = None
    source_end: int | None = None
    # None: the quote is document text[start:end]. A field name (byline, title, date, ...):
    # the quote is what that metadata field was read from (the raw file's line, located by
    # source_start/source_end, or the stored value) and quote[start:end] is the value.
    field: str | None = None


@dataclass
class AnswerSentence:
    text: str
    citations: list[int]
    supported: bool = True
    rule: str = "extractive"


@dataclass(frozen=True)
class ShortAnswerSpan:
    """Where the short answer sits: document text[start:end] == short_answer, inside citation n."""

    doc_id: str
    start: int
    end: int
    citation: int


@dataclass
class Answer:
    question: str
    answer: str
    short_answer: str | None
    refused: bool
    citations: list[Citation] = field(default_factory=list)
    passages: list[Hit] = field(default_factory=list)
    sentences: list[AnswerSentence] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    confidence: float = 0.0
    fallback: str | None = None  # "extractive" when the generative composer gave up
    fallback_reason: str | None = None
    short_answer_span: ShortAnswerSpan | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "question": self.question,
            "answer": self.answer,
            "short_answer": self.short_answer,
            "refused": self.refused,
            "confidence": round(self.confidence, 4),
            "citations": [asdict(c) for c in self.citations],
            "sentences": [asdict(s) for s in self.sentences],
            "passages": [h.to_dict() for h in self.passages],
            "timings_ms": self.timings_ms,
        }
        if self.short_answer_span is not None:
            data["short_answer_span"] = asdict(self.short_answer_span)
        if self.fallback is not None:
            data["fallback"] = self.fallback
            data["fallback_reason"] = self.fallback_reason
        return data
