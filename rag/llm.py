"""A small client for any OpenAI-compatible chat-completions server (vLLM, Ollama,
llama.cpp's server, hosted APIs), built on the real `openai` package.

Every failure surfaces as one exception type, `LLMError`, whose `reason` is a short code
("timeout", "connection_error", "http_500", "malformed_output", "empty_output",
"circuit_open", ...) so callers can fall back and say why. A circuit breaker shared by all
clients of one endpoint stops calling it for a while after repeated failures, so a dead
server costs one fast fallback per request instead of one timeout per request.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import openai

from rag.config import Settings

Message = dict[str, str]


class LLMError(RuntimeError):
    """The LLM could not give a usable answer; `reason` is a stable short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# ---------------------------------------------------------------- circuit breaker


class CircuitBreaker:
    """Closed: calls pass. After `failure_threshold` consecutive failures it opens and
    refuses calls for `cooldown_s`; then it lets one trial call through (half-open): a
    success closes it, a failure opens it for another cooldown."""

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self._opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one trial call at a time."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def retry_in_s(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self.failure_threshold:
                self._opened_at = self.clock()
            self._trial_running = False


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(base_url: str) -> CircuitBreaker:
    """One breaker per endpoint, shared by every client and request in the process."""
    with _BREAKERS_LOCK:
        return _BREAKERS.setdefault(base_url.rstrip("/"), CircuitBreaker())


def reset_breakers() -> None:
    """Forget every endpoint's failure history (tests; after fixing a server's configuration)."""
    with _BREAKERS_LOCK:
        _BREAKERS.clear()


# ---------------------------------------------------------------- client


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str = "default"
    api_key: str = "not-needed"
    timeout_s: float = 30.0
    max_retries: int = 1
    max_tokens: int = 512
    temperature: float = 0.1
    context_tokens: int = 4096

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMConfig | None:
        if not settings.llm_base_url:
            return None
        return cls(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key or "not-needed",
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            context_tokens=settings.llm_context_tokens,
        )


_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


def strip_thinking(text: str) -> str:
    """Reasoning models (Qwen3, DeepSeek-R1 on Ollama) put <think>...</think> before the answer."""
    return _THINK_BLOCK.sub("", text)


class LLMClient:
    def __init__(self, config: LLMConfig, breaker: CircuitBreaker | None = None) -> None:
        self.config = config
        self._breaker = breaker
        # The openai client retries connection errors, timeouts, 408/409/429 and 5xx with
        # backoff; `timeout` bounds connect and each read (so a stalled stream times out too).
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            # openai's own Timeout: openai now runs on httpx2 (a fork of httpx), and 3.63
            # rejects an httpx.Timeout (3.60 still accepted one).
            timeout=openai.Timeout(config.timeout_s),
            max_retries=config.max_retries,
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """The given breaker, else the endpoint's shared one (looked up per call, so
        `reset_breakers` reaches clients created earlier)."""
        return self._breaker or breaker_for(self.config.base_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMClient | None:
        config = LLMConfig.from_settings(settings)
        return None if config is None else cached_client(config)

    def close(self) -> None:
        self._client.close()

    def _guard(self) -> None:
        if not self.breaker.allow():
            raise LLMError("circuit_open", f"{self.config.base_url} failed repeatedly; next try in {self.breaker.retry_in_s():.0f} s")

    def _request(self, messages: Sequence[Message], stream: bool, max_tokens: int | None) -> Any:
        return self._client.chat.completions.create(
            model=self.config.model,
            messages=list(messages),  # type: ignore[arg-type]
            max_tokens=max_tokens or self.config.max_tokens,
            temperature=self.config.temperature,
            stream=stream,
        )

    def complete(self, messages: Sequence[Message], max_tokens: int | None = None) -> str:
        """The whole reply text (thinking removed); raises LLMError."""
        self._guard()
        try:
            response = self._request(messages, False, max_tokens)
            text = _completion_text(response)
        except LLMError:
            self.breaker.record_failure()
            raise
        except Exception as exc:
            self.breaker.record_failure()
            raise as_llm_error(exc, self.config.timeout_s) from exc
        self.breaker.record_success()
        text = strip_thinking(text).strip()
        if not text:
            raise LLMError("empty_output", "the LLM returned no text")
        return text

    def stream(self, messages: Sequence[Message], max_tokens: int | None = None) -> Iterator[str]:
        """Reply text deltas as they arrive (thinking removed); raises LLMError, possibly
        after some deltas were already yielded."""
        self._guard()
        produced = False
        chunks = None
        try:
            chunks = self._request(messages, True, max_tokens)
            for delta in _without_thinking(_chunk_texts(chunks)):
                if delta:
                    produced = True
                    yield delta
        except LLMError:
            self.breaker.record_failure()
            raise
        except GeneratorExit:  # the consumer stopped reading: not the server's fault
            self.breaker.record_success()
            raise
        except Exception as exc:
            self.breaker.record_failure()
            raise as_llm_error(exc, self.config.timeout_s) from exc
        finally:
            if chunks is not None and hasattr(chunks, "close"):
                chunks.close()  # release the HTTP response (and stop generation server-side)
        self.breaker.record_success()
        if not produced:
            raise LLMError("empty_output", "the LLM stream ended without text")


_CLIENTS: dict[LLMConfig, LLMClient] = {}
_CLIENTS_LOCK = threading.Lock()


def cached_client(config: LLMConfig) -> LLMClient:
    """One client (one HTTP connection pool) per configuration."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(config)
        if client is None:
            client = _CLIENTS[config] = LLMClient(config)
        return client


def _completion_text(response: Any) -> str:
    if isinstance(response, str) or not getattr(response, "choices", None):
        raise LLMError("malformed_output", "the reply is not a chat completion")
    message = getattr(response.choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is None:
        raise LLMError("empty_output", "the reply has no message content")
    if not isinstance(content, str):
        raise LLMError("malformed_output", "the message content is not text")
    return content


def _chunk_texts(chunks: Any) -> Iterator[str]:
    for chunk in chunks:
        choices = getattr(chunk, "choices", None)
        if choices is None:
            raise LLMError("malformed_output", "a stream chunk is not a chat completion chunk")
        if not choices:
            continue  # usage-only chunks
        delta = getattr(choices[0], "delta", None)
        content = getattr(delta, "content", None)
        if content is not None and not isinstance(content, str):
            raise LLMError("malformed_output", "a stream chunk's content is not text")
        if content:
            yield content


def _without_thinking(deltas: Iterator[str]) -> Iterator[str]:
    """Drop a leading <think>...</think> block from a stream of deltas."""
    buffer = ""
    passing = False  # decided: everything from here on is answer text
    for delta in deltas:
        if passing:
            yield delta
            continue
        buffer += delta
        head = buffer.lstrip()
        if len(head) < len("<think>") and "<think>".startswith(head):
            continue  # may still turn into <think>
        if not head.startswith("<think>"):
            passing = True
            yield buffer
            continue
        end = head.find("</think>")
        if end >= 0:
            passing = True
            rest = head[end + len("</think>") :].lstrip()
            if rest:
                yield rest
    if not passing and buffer.strip() and not buffer.lstrip().startswith("<think>"):
        yield buffer


@cache
def transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, connection errors) as openai and the HTTP library under it raise them (a
    stream read past a stall may raise that library's own): httpx and its fork httpx2, which
    recent openai releases run on, whichever are installed."""
    timeouts: list[type[BaseException]] = [openai.APITimeoutError]
    connection: list[type[BaseException]] = [openai.APIConnectionError]
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        connection.append(module.TransportError)
    return tuple(timeouts), tuple(connection)


def as_llm_error(exc: BaseException, timeout_s: float) -> LLMError:
    """Map openai/httpx/parsing exceptions to LLMError reason codes."""
    timeouts, connection = transport_errors()
    if isinstance(exc, timeouts):
        return LLMError("timeout", f"no reply within {timeout_s:g} s")
    if isinstance(exc, connection):
        return LLMError("connection_error", f"cannot reach the LLM server ({type(exc).__name__})")
    if isinstance(exc, openai.APIStatusError):
        return LLMError(f"http_{exc.status_code}", _short(str(exc.message)))
    if isinstance(exc, openai.APIError):
        return LLMError("llm_error", _short(str(exc.message)))
    # json.JSONDecodeError, pydantic errors, AttributeError on a half-built object, ...
    return LLMError("malformed_output", f"unreadable reply ({type(exc).__name__})")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
