"""POST /v1/chat/completions and GET /v1/models, speaking OpenAI's protocol.

The last user message is the question; earlier user messages resolve follow-ups. The
answer keeps its [n] markers and ends with a numbered source list; the structured
citations travel in the extra `citations` field (on the final chunk when streaming).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.answering import AnswerEvent, Delta, Done
from api.context import ApiContext, get_ctx
from api.errors import ApiError
from api.followup import rewrite, turns_from_messages
from api.routes.ask import check_question_length
from api.schemas import OPENAI_ERROR_RESPONSES, ChatCompletion, ChatRequest, ModelList
from api.security import json_body, require
from rag.types import Answer

router = APIRouter(tags=["openai-compatible"])

MODEL_ID = "rag-extractive"

# One event of the stream: a chat.completion.chunk as JSON, or the final "[DONE]".
CHUNK_EVENT_SCHEMA: dict[str, Any] = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a chat.completion object, or with `stream: true` chat.completion.chunk events ending in `data: [DONE]`",
        "content": {"text/event-stream": {"schema": CHUNK_EVENT_SCHEMA}},
    },
    **OPENAI_ERROR_RESPONSES,
}


def sources_footer(answer: Answer) -> str:
    if answer.refused or not answer.citations:
        return ""
    lines = [f"[{c.n}] 《{c.title}》" for c in answer.citations]
    return "\n\n来源：\n" + "\n".join(lines)


def split_conversation(ctx: ApiContext, body: ChatRequest) -> tuple[str, str | None]:
    """The question (last user message) and its standalone rewrite, if it is a follow-up."""
    user_turns = [i for i, m in enumerate(body.messages) if m.role == "user" and m.text().strip()]
    if not user_turns:
        raise ApiError(422, "messages must contain a user message with text", field="messages")
    last = user_turns[-1]
    question = check_question_length(ctx, body.messages[last].text(), field=f"messages.{last}.content")
    earlier = [(m.role, m.text()[: ctx.settings.max_question_chars]) for m in body.messages[:last] if m.role in {"user", "assistant"}]
    earlier = earlier[-2 * ctx.settings.max_history_turns :]
    return question, rewrite(question, turns_from_messages(earlier))


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses=CHAT_RESPONSES,
    summary="OpenAI-compatible chat completion (answers from the index, with citations)",
    dependencies=[Depends(require("read")), Depends(json_body)],
)
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    ctx = get_ctx(request)
    question, rewritten = split_conversation(ctx, body)
    standalone = rewritten or question
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if body.stream:
        events = await run_in_threadpool(lambda: iter(ctx.answerer.stream(standalone, body.top_k)))
        first = await run_in_threadpool(next, events, None)
        chunks = stream_chunks(request, events, first, completion_id, created, body.model, rewritten)
        return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    answer = await run_in_threadpool(ctx.answerer.answer, standalone, body.top_k)
    request.state.timings = answer.timings_ms
    content = answer.answer + sources_footer(answer)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage(standalone, content),
        "citations": [asdict(c) for c in answer.citations],
        "refused": answer.refused,
        "rewritten_question": rewritten,
    }


def usage(prompt: str, completion: str) -> dict[str, int]:
    """Characters stand in for tokens (no tokenizer is involved in extractive answers)."""
    return {"prompt_tokens": len(prompt), "completion_tokens": len(completion), "total_tokens": len(prompt) + len(completion)}


def _chunk(completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


async def stream_chunks(
    request: Request,
    events: Iterator[AnswerEvent],
    first: AnswerEvent | None,
    completion_id: str,
    created: int,
    model: str,
    rewritten: str | None,
) -> AsyncIterator[str]:
    yield _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
    event = first
    while event is not None:
        if await request.is_disconnected():
            return
        if isinstance(event, Done):
            answer = event.answer
            request.state.timings = answer.timings_ms
            footer = sources_footer(answer)
            if footer:
                yield _chunk(completion_id, created, model, {"content": footer})
            citations = [asdict(c) for c in answer.citations]
            yield _chunk(
                completion_id, created, model, {}, "stop", citations=citations, refused=answer.refused, rewritten_question=rewritten
            )
            break
        # OpenAI's protocol cannot withdraw text: an answerer that may Reset should verify
        # before it streams, or this endpoint would show both versions.
        if isinstance(event, Delta):
            yield _chunk(completion_id, created, model, {"content": event.text})
        event = await run_in_threadpool(next, events, None)
    yield "data: [DONE]\n\n"


@router.get("/v1/models", response_model=ModelList, responses=OPENAI_ERROR_RESPONSES, dependencies=[Depends(require("read"))])
async def list_models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "rag-zh"}]}
