"""POST /v1/chat/completions and GET /v1/models, speaking OpenAI's protocol.

The last user message is the question; earlier messages resolve follow-ups. The answer
keeps its [n] markers and ends with a numbered source list; the structured citations travel
in the extra `citations` field (on the final chunk when streaming), with `fallback` /
`fallback_reason` when the configured LLM's answer could not be used.

Where the protocol has a parameter this service cannot honour it refuses it instead of
ignoring it: `model` must be the id GET /v1/models lists (or its alias `rag`; anything else is
404 model_not_found), `n` must be 1. `max_tokens` (or `max_completion_tokens`) cuts the
content after that many tokens, a token being a character as in `usage`, with finish_reason
"length"; `stream_options.include_usage` ends the stream with a usage chunk. Invalid requests
are 400 with OpenAI's error object, as OpenAI's clients expect.

OpenAI's protocol cannot withdraw streamed text, so with an LLM configured the stream
carries only verified sentences (each with its markers, as soon as it is verified), never
the raw tokens; if the generated answer is abandoned after some sentences went out, the
extractive answer is appended after a blank line and `superseded_citations` on the final
chunk resolves the markers of the sentences sent before it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
# Also accepted for `model` and answered as MODEL_ID (README, /v1): a short name for hand-written requests.
MODEL_ALIASES = {"rag": MODEL_ID}

# One event of the stream: a chat.completion.chunk as JSON, or the final "[DONE]".
CHUNK_EVENT_SCHEMA: dict[str, Any] = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a chat.completion object, or with `stream: true` chat.completion.chunk events ending in `data: [DONE]`",
        "content": {"text/event-stream": {"schema": CHUNK_EVENT_SCHEMA}},
    },
    **OPENAI_ERROR_RESPONSES,
}


def resolve_model(name: str) -> str:
    """The listed model id `name` stands for; 404 model_not_found (OpenAI's answer) otherwise,
    so a client configured for another model learns it instead of getting our answers."""
    if name == MODEL_ID or name in MODEL_ALIASES:
        return MODEL_ALIASES.get(name, name)
    message = f"The model {name!r} does not exist here: use {MODEL_ID!r} (see GET /v1/models) or its alias 'rag'"
    raise ApiError(404, message, field="model", code="model_not_found")


def check_unsupported(body: ChatRequest) -> None:
    if body.n is not None and body.n != 1:
        raise ApiError(400, f"n={body.n} is not supported: this service gives one answer per request (send n=1 or leave n out)", field="n")


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
    model = resolve_model(body.model)
    check_unsupported(body)
    asked = await split_conversation(ctx, body)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    completion = Completion(f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), model, include_usage)
    metered = Metered(body.token_budget)
    if body.stream:
        events = await run_in_threadpool(lambda: iter(ctx.answerer.stream(asked.standalone, body.top_k)))
        first = await run_in_threadpool(next, events, None)
        # Verified sentences only when the answerer streams unverified LLM text.
        content = VerifiedContent() if getattr(ctx.answerer, "generative", False) else DeltaContent()
        chunks = stream_chunks(request, events, first, completion, asked, content, metered)
        return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    answer = await run_in_threadpool(ctx.answerer.answer, asked.standalone, body.top_k)
    request.state.timings = answer.timings_ms
    text = metered.take(answer.answer + sources_footer(answer))
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": metered.finish_reason}],
        "usage": usage(asked.standalone, text),
        **answer_extras(answer, asked),
    }


def usage(prompt: str, completion: str) -> dict[str, int]:
    """Characters stand in for tokens (no tokenizer is involved in extractive answers)."""
    return {"prompt_tokens": len(prompt), "completion_tokens": len(completion), "total_tokens": len(prompt) + len(completion)}


@dataclass
class Metered:
    """The content the client receives: with a budget (`max_tokens`) cut after that many
    tokens, a token being a character as `usage` counts them, and then finished with
    "length" as OpenAI's choices are; `sent` is what went out, for the usage chunk."""

    budget: int | None
    sent: str = ""
    cut: bool = False

    def take(self, text: str) -> str:
        kept = text if self.budget is None else text[: max(0, self.budget - len(self.sent))]
        self.cut = self.cut or len(kept) < len(text)
        self.sent += kept
        return kept

    @property
    def finish_reason(self) -> str:
        return "length" if self.cut else "stop"


@dataclass(frozen=True)
class Completion:
    id: str
    created: int
    model: str
    include_usage: bool = False  # stream_options.include_usage: end with a usage chunk

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return self._event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    def usage_chunk(self, counts: dict[str, int]) -> str:
        """OpenAI's last chunk when usage was asked for: no choices, only `usage`."""
        return self._event({"choices": [], "usage": counts})

    def _event(self, fields: dict[str, Any]) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, **fields}
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
    metered: Metered,
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
                text = metered.take(rest + sources_footer(answer))
                if text:
                    yield completion.chunk({"content": text})
                yield completion.chunk({}, metered.finish_reason, **answer_extras(answer, asked), **extras)
                if completion.include_usage:
                    yield completion.usage_chunk(usage(asked.standalone, metered.sent))
                break
            # Past the budget the events still run to Done: the last chunk carries the citations.
            text = metered.take(content.feed(event))
            if text:
                yield completion.chunk({"content": text})
            event = await run_in_threadpool(next, events, None)
        yield "data: [DONE]\n\n"
    finally:
        close = getattr(events, "close", None)
        if close:
            with contextlib.suppress(ValueError):  # a plain generator still running in a worker thread
                close()  # a client that left stops the work (a no-op once the events are exhausted)


MODELS_RESPONSES = {status: response for status, response in OPENAI_ERROR_RESPONSES.items() if status not in {400, 404, 413, 415}}


@router.get("/v1/models", response_model=ModelList, responses=MODELS_RESPONSES, dependencies=[Depends(require("read"))])
async def list_models(request: Request) -> dict[str, Any]:
    created = await run_in_threadpool(model_created, get_ctx(request))
    return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": created, "owned_by": "rag-zh"}]}


def model_created(ctx: ApiContext) -> int:
    """When the index answering was last written (its manifest's `created_at`): what the
    model answers from changes exactly then. Before the first build: when this module was
    installed. Either way the same on every call until the index changes."""
    built = ctx.service.store.manifest.get("created_at")
    with contextlib.suppress(TypeError, ValueError):
        return int(dt.datetime.strptime(built, "%Y-%m-%dT%H:%M:%S%z").timestamp())
    return int(Path(__file__).stat().st_mtime)
