"""POST /v1/chat/completions and GET /v1/models, speaking OpenAI's protocol.

The last user message is the question; earlier messages resolve follow-ups. The answer
keeps its [n] markers and ends with a numbered source list; the structured citations travel
in the extra `citations` field (on the final chunk when streaming), with `fallback` /
`fallback_reason` when the configured LLM's answer could not be used.

OpenAI's protocol cannot withdraw streamed text, so with an LLM configured the stream
carries only verified sentences (each with its markers, as soon as it is verified), never
the raw tokens; if the generated answer is abandoned after some sentences went out, the
extractive answer is appended after a blank line and `superseded_citations` on the final
chunk resolves the markers of the sentences sent before it.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.answering import AnswerEvent, CitationEvent, Delta, Done, Reset, SentenceEvent
from api.context import ApiContext, get_ctx
from api.errors import ApiError
from api.followup import turns_from_messages
from api.routes.ask import check_question_length, standalone_question
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


@dataclass(frozen=True)
class ChatQuestion:
    question: str  # the last user message
    rewritten: str | None  # its standalone form, when it is a follow-up
    rewritten_by: str | None

    @property
    def standalone(self) -> str:
        return self.rewritten or self.question


async def split_conversation(ctx: ApiContext, body: ChatRequest) -> ChatQuestion:
    """The question (last user message) and its standalone rewrite, if it is a follow-up."""
    user_turns = [i for i, m in enumerate(body.messages) if m.role == "user" and m.text().strip()]
    if not user_turns:
        raise ApiError(422, "messages must contain a user message with text", field="messages")
    last = user_turns[-1]
    question = check_question_length(ctx, body.messages[last].text(), field=f"messages.{last}.content")
    earlier = [(m.role, m.text()[: ctx.settings.max_question_chars]) for m in body.messages[:last] if m.role in {"user", "assistant"}]
    earlier = earlier[-2 * ctx.settings.max_history_turns :]
    messages = [{"role": role, "content": content} for role, content in earlier]
    rewritten, rewritten_by = await standalone_question(ctx, question, messages, turns_from_messages(earlier))
    return ChatQuestion(question, rewritten, rewritten_by)


def answer_extras(answer: Answer, asked: ChatQuestion) -> dict[str, Any]:
    """The extension fields of a completion (and of the last streamed chunk)."""
    extras: dict[str, Any] = {
        "citations": [asdict(c) for c in answer.citations],
        "refused": answer.refused,
        "rewritten_question": asked.rewritten,
        "rewritten_by": asked.rewritten_by,
        "sentences": [asdict(s) for s in answer.sentences],
    }
    if answer.fallback is not None:
        extras.update(fallback=answer.fallback, fallback_reason=answer.fallback_reason)
    return extras


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses=CHAT_RESPONSES,
    summary="OpenAI-compatible chat completion (answers from the index, with citations)",
    dependencies=[Depends(require("read")), Depends(json_body)],
)
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    ctx = get_ctx(request)
    asked = await split_conversation(ctx, body)
    completion = Completion(f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), body.model)
    if body.stream:
        events = await run_in_threadpool(lambda: iter(ctx.answerer.stream(asked.standalone, body.top_k)))
        first = await run_in_threadpool(next, events, None)
        # Verified sentences only when the answerer streams unverified LLM text.
        content = VerifiedContent() if getattr(ctx.answerer, "generative", False) else DeltaContent()
        chunks = stream_chunks(request, events, first, completion, asked, content)
        return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    answer = await run_in_threadpool(ctx.answerer.answer, asked.standalone, body.top_k)
    request.state.timings = answer.timings_ms
    text = answer.answer + sources_footer(answer)
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage(asked.standalone, text),
        **answer_extras(answer, asked),
    }


def usage(prompt: str, completion: str) -> dict[str, int]:
    """Characters stand in for tokens (no tokenizer is involved in extractive answers)."""
    return {"prompt_tokens": len(prompt), "completion_tokens": len(completion), "total_tokens": len(prompt) + len(completion)}


@dataclass(frozen=True)
class Completion:
    id: str
    created: int
    model: str

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


class DeltaContent:
    """Content as the answerer streams it (its text is final: the extractive answer)."""

    def feed(self, event: AnswerEvent) -> str:
        return event.text if isinstance(event, Delta) else ""

    def finish(self, answer: Answer) -> tuple[str, dict[str, Any]]:
        return "", {}


@dataclass
class VerifiedContent:
    """Content from a generated answer: each supported sentence with its markers once it is
    verified; raw tokens are never sent. After a reset, the extractive answer at the end."""

    sent: str = ""
    reset: bool = False
    newline_pending: bool = False
    sent_citations: dict[int, dict[str, Any]] = field(default_factory=dict)
    _sentence_citations: dict[int, dict[str, Any]] = field(default_factory=dict)

    def feed(self, event: AnswerEvent) -> str:
        if isinstance(event, Reset):
            self.reset = True
        elif self.reset:
            return ""  # the extractive answer: sent whole at the end
        elif isinstance(event, CitationEvent):
            self._sentence_citations[event.citation.n] = asdict(event.citation)
        elif isinstance(event, SentenceEvent):
            return self._sentence(event)
        return ""

    def _sentence(self, event: SentenceEvent) -> str:
        citations, self._sentence_citations = self._sentence_citations, {}
        if not event.supported or event.rule == "refusal":
            return ""  # unsupported: left out of the answer; a refusal: the final answer words it
        text = ("\n" if self.newline_pending and self.sent else "") + event.text + "".join(f"[{n}]" for n in event.citations)
        self.newline_pending = event.newline_after
        self.sent += text
        self.sent_citations.update(citations)
        return text

    def finish(self, answer: Answer) -> tuple[str, dict[str, Any]]:
        """What is still to send when the answer is done, and extra fields for the last chunk."""
        if not self.sent:
            return answer.answer, {}
        if not self.reset:
            return "", {}
        superseded = [self.sent_citations[n] for n in sorted(self.sent_citations)]
        return "\n\n" + answer.answer, {"superseded_citations": superseded}


async def stream_chunks(
    request: Request,
    events: Iterator[AnswerEvent],
    first: AnswerEvent | None,
    completion: Completion,
    asked: ChatQuestion,
    content: DeltaContent | VerifiedContent,
) -> AsyncIterator[str]:
    yield completion.chunk({"role": "assistant", "content": ""})
    event = first
    try:
        while event is not None:
            if await request.is_disconnected():
                return
            if isinstance(event, Done):
                answer = event.answer
                request.state.timings = answer.timings_ms
                rest, extras = content.finish(answer)
                text = rest + sources_footer(answer)
                if text:
                    yield completion.chunk({"content": text})
                yield completion.chunk({}, "stop", **answer_extras(answer, asked), **extras)
                break
            text = content.feed(event)
            if text:
                yield completion.chunk({"content": text})
            event = await run_in_threadpool(next, events, None)
        yield "data: [DONE]\n\n"
    finally:
        close = getattr(events, "close", None)
        if close:
            with contextlib.suppress(ValueError):  # a plain generator still running in a worker thread
                close()  # a client that left stops the work (a no-op once the events are exhausted)


@router.get("/v1/models", response_model=ModelList, responses=OPENAI_ERROR_RESPONSES, dependencies=[Depends(require("read"))])
async def list_models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "rag-zh"}]}
