"""The one seam between the HTTP layer and whatever writes answers.

Routes never call a composer directly: they ask an `Answerer` for an `Answer` (POST /ask,
chat completions) or for a stream of `AnswerEvent`s (POST /ask/stream, streamed chat).
`ServiceAnswerer` wraps `RagService`:

* no LLM configured: `RagService.ask` writes the whole answer at once, so it is cut into
  clause-sized `Delta`s, each `[n]` marker followed by its `CitationEvent`, then `Done`;
* an LLM configured (`RAG_LLM_BASE_URL`): `RagService.ask_stream` forwards the LLM's text as
  it arrives (`Delta`, markers held back); once a sentence is complete and verified, its
  `[n]` markers follow as `Delta`s, each with its `CitationEvent`, then a `SentenceEvent`
  with the verdict; a `Reset` withdraws the text streamed so far when the generated answer
  is abandoned (LLM fault, nothing supported), and the extractive answer follows; `Done`
  holds the complete `Answer`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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
class SentenceEvent:
    """A sentence of a generated answer, finished and verified (its text and markers were
    streamed just before). An unsupported sentence is left out of the final answer, so a UI
    may strike it through as soon as it sees this."""

    index: int
    text: str
    citations: tuple[int, ...]
    supported: bool
    rule: str
    detail: str = ""
    removed_markers: tuple[int, ...] = ()
    newline_after: bool = False  # the model put a line break after it (kept in the final text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "citations": list(self.citations),
            "supported": self.supported,
            "rule": self.rule,
            "detail": self.detail,
            "removed_markers": list(self.removed_markers),
        }


@dataclass(frozen=True)
class Done:
    answer: Answer


AnswerEvent = Delta | CitationEvent | Reset | SentenceEvent | Done


class Answerer(Protocol):
    def answer(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Answer: ...

    def stream(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Iterator[AnswerEvent]: ...


class ServiceAnswerer:
    """Answers with `RagService.ask`; streams the LLM's text as it arrives when an LLM is
    configured, else the finished extractive answer piece by piece."""

    def __init__(self, service: RagService) -> None:
        self.service = service

    @property
    def generative(self) -> bool:
        return bool(self.service.settings.llm_base_url)

    def answer(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Answer:
        return self.service.ask(question, top_k, filters)

    def stream(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Iterator[AnswerEvent]:
        if not self.generative:
            return answer_events(self.answer(question, top_k, filters))
        # ask_stream validates and retrieves now, so bad input raises here, not mid-stream.
        return ClosableStream(service_events(self.service.ask_stream(question, top_k, filters)))


# ---------------------------------------------------------------- the library's stream


def service_events(events: Iterator[dict[str, Any]]) -> Iterator[AnswerEvent]:
    """`RagService.ask_stream` events as `AnswerEvent`s (see the module docstring)."""
    held = ""  # trailing whitespace: it belongs after the markers of the sentence it ends
    try:
        for event in events:
            kind = event["type"]
            if kind == "delta":
                text = held + event["text"]
                visible = text.rstrip()
                held = text[len(visible) :]
                if visible:
                    yield Delta(visible)
            elif kind == "sentence":
                yield from sentence_events(event, held)
                held = ""
            elif kind == "fallback":
                held = ""
                yield Reset(f"{event['reason']}: {event['message']}")
            elif kind == "done":
                yield Done(event["answer"])
                return
    finally:
        close = getattr(events, "close", None)
        if close:
            close()  # stops the LLM request when the client has gone


def sentence_events(event: dict[str, Any], held: str) -> Iterator[AnswerEvent]:
    """The verified sentence's markers (each with its citation), the verdict, then the
    whitespace that followed the sentence."""
    sources = {source["n"]: source for source in event["sources"]}
    if event["supported"]:
        for n in event["citations"]:
            if n in sources:
                yield Delta(f"[{n}]")
                yield CitationEvent(Citation(**sources[n]))
    yield SentenceEvent(
        index=event["index"],
        text=event["text"],
        citations=tuple(event["citations"]),
        supported=event["supported"],
        rule=event["rule"],
        detail=event.get("detail") or "",
        removed_markers=tuple(event.get("removed_markers") or ()),
        newline_after="\n" in held,
    )
    if held:
        yield Delta(held)


class ClosableStream:
    """An event iterator that may be closed from another thread while a `next()` is
    running there (the client left while a worker waits for the LLM): the close then happens
    as soon as that `next()` returns, instead of failing with "generator already executing".
    (Starlette's `run_in_threadpool` waits for the worker when cancelled, so the routes close
    between pulls; this keeps any other caller safe.)"""

    def __init__(self, events: Iterator[AnswerEvent]) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._running = False
        self._closed = False

    def __iter__(self) -> ClosableStream:
        return self

    def __next__(self) -> AnswerEvent:
        with self._lock:
            if self._closed:
                raise StopIteration
            self._running = True
        try:
            return next(self._events)
        finally:
            with self._lock:
                self._running = False
                close_now = self._closed
            if close_now:
                self._close_events()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._running:
                return  # the running next() closes the events when it returns
        self._close_events()

    def _close_events(self) -> None:
        close = getattr(self._events, "close", None)
        if close:
            close()


# ---------------------------------------------------------------- a finished answer


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
