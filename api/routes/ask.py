"""POST /ask, POST /ask/stream (Server-Sent Events) and POST /search."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.answering import AnswerEvent, CitationEvent, Delta, Done, Reset, SentenceEvent
from api.context import ApiContext, get_ctx
from api.errors import ApiError
from api.followup import Turn, rewrite, turns_as_messages, turns_from_messages
from api.schemas import ERROR_RESPONSES, AskRequest, AskResponse, SearchRequest, SearchResponse
from api.security import json_body, require
from rag.types import Answer, Citation

router = APIRouter(tags=["questions"])
log = logging.getLogger("rag.api")


@dataclass
class PreparedQuestion:
    asked: str
    standalone: str
    rewritten: str | None
    conversation_id: str
    rewrite_ms: float
    rewritten_by: str | None = None  # "llm" or "rules" when the question was rewritten
    conversation_reset: bool = False  # the client's conversation_id was unknown or expired: a new one was issued


def check_question_length(ctx: ApiContext, question: str, field: str = "question") -> str:
    question = question.strip()
    if not question:
        raise ApiError(422, "the question is empty", field=field)
    limit = ctx.settings.max_question_chars
    if len(question) > limit:
        raise ApiError(422, f"the question is {len(question)} characters long; the limit is {limit}", field=field)
    return question


async def prepare(ctx: ApiContext, body: AskRequest) -> PreparedQuestion:
    """Validate against the server's limit, then rewrite a follow-up into a standalone question."""
    question = check_question_length(ctx, body.question)
    # An id the server does not know (restarted, expired, evicted) is not adopted silently: the
    # client gets a fresh id and `conversation_reset` in `meta`, and its `history` still
    # resolves the follow-up (a known conversation always holds at least one turn).
    known = ctx.conversations.turns(body.conversation_id) if body.conversation_id else []
    reset = bool(body.conversation_id) and not known
    conversation_id = body.conversation_id if known else ctx.conversations.new_id()
    started = time.perf_counter()
    # Client-sent history wins over the server-side conversation; only the recent turns
    # matter, and only a question's worth of each (bounds the work a request can cause).
    recent = (body.history or [])[-2 * ctx.settings.max_history_turns :]
    history = [(m.role, m.content[: ctx.settings.max_question_chars]) for m in recent]
    if history:
        turns = turns_from_messages(history)
        messages = [{"role": role, "content": content} for role, content in history]
    else:
        turns = known
        messages = turns_as_messages(turns)
    rewritten, rewritten_by = await standalone_question(ctx, question, messages, turns)
    rewrite_ms = round((time.perf_counter() - started) * 1000, 1)
    return PreparedQuestion(question, rewritten or question, rewritten, conversation_id, rewrite_ms, rewritten_by, reset)


async def standalone_question(
    ctx: ApiContext, question: str, messages: list[dict[str, str]], turns: list[Turn]
) -> tuple[str | None, str | None]:
    """(rewritten question, "llm" | "rules") for a follow-up, (None, None) for a question that
    stands alone. With an LLM configured it rewrites first; when it fails or leaves the
    question as it is, the rule-based rewrite decides."""
    if not turns:
        return None, None  # nothing earlier to resolve against
    if ctx.service.settings.llm_base_url:
        try:
            by_llm = await run_in_threadpool(ctx.service.rewrite_followup, messages, question)
        except Exception:  # the rules still work; a broken LLM setup must not cost the answer
            log.exception("LLM follow-up rewrite failed")
            by_llm = None
        if by_llm and by_llm != question:
            return by_llm, "llm"
    rewritten = rewrite(question, turns)
    return (rewritten, "rules") if rewritten else (None, None)


def is_public(request: Request) -> bool:
    return getattr(getattr(request.state, "principal", None), "role", None) == "public"


def public_limits(request: Request, body: AskRequest) -> int | None:
    """The top_k a request may use. The public widget key is in every visitor's page: it may
    not pick documents (exclude_doc_ids walked the corpus chunk by chunk) and gets at most
    `public_max_top_k` passages, of which only the cited ones are returned."""
    if not is_public(request):
        return body.top_k
    filters = body.filters
    if filters and (filters.doc_ids is not None or filters.exclude_doc_ids is not None or filters.title_contains):
        raise ApiError(403, "the public widget key cannot filter by document or title", field="filters")
    limit = get_ctx(request).settings.public_max_top_k
    return min(body.top_k or limit, limit)


def cited_passages_only(payload: dict[str, Any]) -> dict[str, Any]:
    cited = {c["chunk_id"] for c in payload["citations"]}
    return {**payload, "passages": [p for p in payload["passages"] if p["chunk_id"] in cited]}


def remember(ctx: ApiContext, prepared: PreparedQuestion, answer: Answer) -> None:
    turn = Turn(prepared.standalone) if answer.refused else Turn(prepared.standalone, answer.short_answer, answer.answer)
    ctx.conversations.append(prepared.conversation_id, turn)


def ask_payload(prepared: PreparedQuestion, answer: Answer) -> dict[str, Any]:
    """The /ask response (also the `done` event of /ask/stream, so both have every field)."""
    payload = {"fallback": None, "fallback_reason": None, **answer.to_dict()}
    timings = dict(payload["timings_ms"])
    if prepared.rewritten:
        timings["rewrite"] = prepared.rewrite_ms
    payload.update(
        question=prepared.asked,
        rewritten_question=prepared.rewritten,
        rewritten_by=prepared.rewritten_by,
        conversation_id=prepared.conversation_id,
        conversation_reset=prepared.conversation_reset,
        timings_ms=timings,
    )
    return payload


@router.post(
    "/ask",
    response_model=AskResponse,
    responses=ERROR_RESPONSES,
    summary="Answer a question with cited sentences",
    dependencies=[Depends(require("widget")), Depends(json_body)],
)
async def ask(body: AskRequest, request: Request) -> dict[str, Any]:
    ctx = get_ctx(request)
    top_k = public_limits(request, body)
    prepared = await prepare(ctx, body)
    answer = await run_in_threadpool(ctx.answerer.answer, prepared.standalone, top_k, body.filters_or_none())
    remember(ctx, prepared, answer)
    request.state.timings = answer.timings_ms
    payload = ask_payload(prepared, answer)
    return cited_passages_only(payload) if is_public(request) else payload


# ---------------------------------------------------------------- streaming


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def citation_dict(citation: Citation) -> dict[str, Any]:
    return asdict(citation)


def frame(event: Delta | CitationEvent | Reset | SentenceEvent) -> str:
    if isinstance(event, Delta):
        return sse("delta", {"text": event.text})
    if isinstance(event, Reset):
        return sse("reset", {"reason": event.reason})
    if isinstance(event, SentenceEvent):
        return sse("sentence", event.to_dict())
    return sse("citation", citation_dict(event.citation))


def _start(events: Iterator[AnswerEvent]) -> AnswerEvent | None:
    return next(events, None)


# Describes one event (OpenAPI < 3.2 reading of an event-stream schema); `data` is JSON.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["meta", "delta", "citation", "sentence", "reset", "done", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `meta` {conversation_id, conversation_reset (the conversation_id sent was unknown "
        "or expired: a new one was issued), question, rewritten_question, rewritten_by}, then `delta` {text} pieces, a `citation` event after each [n] marker, "
        "with an LLM configured a `sentence` event {index, text, citations, supported, rule, detail, removed_markers} once "
        "each generated sentence is verified (unsupported ones are left out of the final answer), "
        "`reset` if the text so far is withdrawn (the extractive answer follows), "
        "and a final `done` event carrying the full /ask response (or `error`).",
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
    },
    **ERROR_RESPONSES,
}


@router.post(
    "/ask/stream",
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
    summary="Answer a question as a stream of Server-Sent Events",
    dependencies=[Depends(require("widget")), Depends(json_body)],
)
async def ask_stream(body: AskRequest, request: Request) -> StreamingResponse:
    ctx = get_ctx(request)
    top_k = public_limits(request, body)
    prepared = await prepare(ctx, body)
    events = iter(await run_in_threadpool(ctx.answerer.stream, prepared.standalone, top_k, body.filters_or_none()))
    # Pull the first event before answering 200, so a bad question still gets a 4xx.
    first = await run_in_threadpool(_start, events)
    return StreamingResponse(
        stream_events(ctx, request, prepared, events, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def stream_events(
    ctx: ApiContext, request: Request, prepared: PreparedQuestion, events: Iterator[AnswerEvent], first: AnswerEvent | None
) -> AsyncIterator[str]:
    """SSE frames; stops pulling events (and so stops the work) once the client has gone."""
    counters = ctx.counters
    counters.streams_started += 1
    completed = False
    delay = ctx.settings.stream_delay_ms / 1000
    try:
        yield sse(
            "meta",
            {
                "conversation_id": prepared.conversation_id,
                "conversation_reset": prepared.conversation_reset,
                "question": prepared.asked,
                "rewritten_question": prepared.rewritten,
                "rewritten_by": prepared.rewritten_by,
            },
        )
        event = first
        while event is not None:
            if await request.is_disconnected():
                break
            if isinstance(event, Done):
                remember(ctx, prepared, event.answer)
                request.state.timings = event.answer.timings_ms
                payload = ask_payload(prepared, event.answer)
                yield sse("done", cited_passages_only(payload) if is_public(request) else payload)
                counters.stream_events_sent += 1
                completed = True
                break
            yield frame(event)
            counters.stream_events_sent += 1
            if delay and isinstance(event, Delta):
                await asyncio.sleep(delay)
            event = await run_in_threadpool(_start, events)
    except Exception:
        log.exception("stream failed (request %s)", getattr(request.state, "request_id", "?"))
        counters.streams_failed += 1
        completed = True  # ended by the server, not abandoned by the client
        yield sse("error", {"error": "internal_error", "message": "the answer could not be completed"})
    finally:
        if completed:
            counters.streams_completed += 1
        else:
            counters.streams_cancelled += 1
            request.state.stream_cancelled = True
            close = getattr(events, "close", None)
            if close:
                close()


# ---------------------------------------------------------------- search


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=ERROR_RESPONSES,
    summary="Retrieve passages (fused score and each leg's rank and score)",
    dependencies=[Depends(require("read")), Depends(json_body)],
)
async def search(body: SearchRequest, request: Request) -> dict[str, Any]:
    ctx = get_ctx(request)
    question = check_question_length(ctx, body.question)
    started = time.perf_counter()
    hits = await run_in_threadpool(ctx.service.search, question, body.top_k, body.filters_or_none(), body.mode)
    timings = {"retrieve": round((time.perf_counter() - started) * 1000, 1)}
    request.state.timings = timings
    return {"question": question, "mode": body.mode, "hits": [h.to_dict() for h in hits], "timings_ms": timings}
