"""The one seam between the HTTP layer and whatever writes answers.

Routes never call a composer directly: they ask an `Answerer` for an `Answer` (POST /ask,
chat completions) or for a stream of `AnswerEvent`s (POST /ask/stream, streamed chat).
`ServiceAnswerer` wraps `RagService.ask` (extractive: the whole answer exists at once, so it
is cut into clause-sized pieces). A generative composer plugs in by implementing the same
two methods, yielding `Delta`s as tokens arrive, a `CitationEvent` after each `[n]` it
writes, a `Reset` if the text streamed so far is withdrawn (e.g. a generated answer that
failed verification and is replaced by the extractive one), and a final `Done` holding the
complete `Answer`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from index.store import NO_FILTERS, Filters
from rag.service import RagService
from rag.types import Answer, Citation


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class CitationEvent:
    citation: Citation


@dataclass(frozen=True)
class Reset:
    """Discard the text streamed so far; what follows replaces it."""

    reason: str = ""


@dataclass(frozen=True)
class Done:
    answer: Answer


AnswerEvent = Delta | CitationEvent | Reset | Done


class Answerer(Protocol):
    def answer(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Answer: ...

    def stream(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Iterator[AnswerEvent]: ...


class ServiceAnswerer:
    """Answers with `RagService.ask` and streams the finished answer piece by piece."""

    def __init__(self, service: RagService) -> None:
        self.service = service

    def answer(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Answer:
        return self.service.ask(question, top_k, filters)

    def stream(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Iterator[AnswerEvent]:
        return answer_events(self.answer(question, top_k, filters))


_MARKER = re.compile(r"(\[\d+\])")
# A clause: text up to and including a run of clause punctuation (and closing quotes).
_CLAUSE = re.compile(r".+?(?:[，、。！？；：,!?;:…]+[”’」』)）\"']*\s*|$)", re.S)
MAX_PIECE_CHARS = 24


def split_pieces(text: str) -> list[str]:
    """Cut answer text into small pieces: clauses of at most MAX_PIECE_CHARS characters, with
    every citation marker `[n]` a piece of its own (so it is never split across events)."""
    pieces: list[str] = []
    for part in _MARKER.split(text):
        if not part:
            continue
        if _MARKER.fullmatch(part):
            pieces.append(part)
            continue
        for clause in _CLAUSE.findall(part):
            pieces.extend(clause[i : i + MAX_PIECE_CHARS] for i in range(0, len(clause), MAX_PIECE_CHARS))
    return [p for p in pieces if p]


def answer_events(answer: Answer) -> Iterator[AnswerEvent]:
    """Deltas whose concatenation is `answer.answer`, a citation right after each marker, then Done."""
    by_number = {c.n: c for c in answer.citations}
    for piece in split_pieces(answer.answer):
        yield Delta(piece)
        marker = _MARKER.fullmatch(piece)
        if marker and int(piece[1:-1]) in by_number:
            yield CitationEvent(by_number[int(piece[1:-1])])
    yield Done(answer)
