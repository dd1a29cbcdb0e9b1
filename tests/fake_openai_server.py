"""An in-repo stand-in for an OpenAI-compatible LLM server, speaking the real
chat-completions protocol over HTTP on 127.0.0.1 (FastAPI + uvicorn in a thread).

Tests script what it answers, one `Reply` per request (or a function of the request
body), and read back the requests it got:

    with FakeOpenAIServer() as fake:
        fake.script(Reply("昌都市……。[2]"), Reply(status=500))
        settings = Settings(llm_base_url=fake.base_url, ...)
        ...
        fake.requests[0]["body"]["messages"]
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


@dataclass
class Reply:
    """One scripted response.

    text         the assistant message content (streamed in `chunk_chars` pieces)
    status       HTTP status; >= 400 sends an OpenAI-style error body
    delay_s      sleep before answering at all (a server slower than the client's timeout)
    stall_after  streaming: after this many characters, sleep `stall_s` (a stream that stalls)
    raw          send this body verbatim instead of a chat completion (garbage); in streaming
                 mode it is sent as one SSE data line
    content_type content type of `raw`
    """

    text: str | None = None
    status: int = 200
    delay_s: float = 0.0
    chunk_chars: int = 3
    stall_after: int | None = None
    stall_s: float = 0.0
    raw: str | None = None
    content_type: str = "application/json"


Script = Reply | Callable[[dict[str, Any]], Reply]


class FakeOpenAIServer:
    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Script] = deque()
        self.default: Script = Reply("（没有脚本化的回答）")
        self._lock = threading.Lock()
        self._generation = 0  # bumped by reset/stop: scripted sleeps of earlier tests end early
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app = self._build_app()

    # ------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Script) -> None:
        """Replies for the next requests, in order; after them `default` answers."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self._generation += 1

    def start(self) -> FakeOpenAIServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        with self._lock:
            self._generation += 1
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but stop as soon as the test that scripted it is over."""
        generation = self._generation
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and generation == self._generation:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            script = self._script.popleft() if self._script else self.default
        return script(body) if callable(script) else script

    # ------------------------------------------------------------ protocol

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            with self._lock:
                self.requests.append({"body": body, "headers": dict(request.headers), "at": time.monotonic()})
            reply = self._next(body)
            if reply.delay_s:
                await self._sleep(reply.delay_s)
            if reply.status >= 400:
                error = {"error": {"message": f"scripted failure {reply.status}", "type": "server_error", "code": None}}
                return JSONResponse(error, status_code=reply.status)
            if body.get("stream"):
                return StreamingResponse(self._sse(reply, body), media_type="text/event-stream")
            if reply.raw is not None:
                return Response(reply.raw, media_type=reply.content_type)
            return JSONResponse(self._completion(reply.text or "", body))

        return app

    def _completion(self, text: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(text), "total_tokens": len(text)},
        }

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> str:
        chunk = {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    async def _sse(self, reply: Reply, body: dict[str, Any]) -> AsyncIterator[str]:
        if reply.raw is not None:
            yield f"data: {reply.raw}\n\n"
            return
        yield self._chunk(body, {"role": "assistant", "content": ""})
        text = reply.text or ""
        sent = 0
        stall_after = reply.stall_after
        for i in range(0, len(text), max(1, reply.chunk_chars)):
            piece = text[i : i + reply.chunk_chars]
            if stall_after is not None and sent >= stall_after:
                await self._sleep(reply.stall_s)
                stall_after = None
            yield self._chunk(body, {"content": piece})
            sent += len(piece)
            await asyncio.sleep(0)  # let each chunk go out on its own
        yield self._chunk(body, {}, "stop")
        yield "data: [DONE]\n\n"
