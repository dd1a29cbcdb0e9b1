"""Pure ASGI middleware (streaming-safe): request ids, `nosniff` and JSON access logs, rate limits."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.security import client_ip, is_loopback, key_id, matches_any
from api.settings import ApiSettings

access_log = logging.getLogger("rag.access")
log = logging.getLogger("rag.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# On every response, errors and static files included: a browser must not sniff an answer or
# an uploaded text into HTML or script.
_ALWAYS_HEADERS = [(b"x-content-type-options", b"nosniff")]
RATE_LIMITED_PREFIXES = ("/ask", "/search", "/documents", "/feedback", "/v1/")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class AccessLogMiddleware:
    """Gives each request an id (X-Request-ID, echoed back) and every response `nosniff`,
    logs one JSON line when the response ends (with per-stage timings a route left in
    `request.state.timings`), and turns an unexpected exception into a JSON 500 as the last
    resort."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500, "started": False, "bytes": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), *_ALWAYS_HEADERS, (b"x-request-id", request_id.encode())]}
            elif message["type"] == "http.response.body":
                status["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), request_id)
            if not status["started"]:
                response = error_response(scope, 500, "internal error; the request id identifies it in the server log")
                await response(scope, receive, send_with_id)
        finally:
            self._log(scope, headers, state, request_id, status, started)

    def _log(self, scope: Scope, headers: dict[str, str], state: dict[str, Any], request_id: str, status: dict, started: float) -> None:
        principal = state.get("principal")
        client = scope.get("client")
        record = {
            "event": "request",
            "request_id": request_id,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status["code"],
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "bytes": status["bytes"],
            "client": client_ip(headers, client[0] if client else None, self.settings),
            "role": getattr(principal, "role", None),
            "key_id": getattr(principal, "key_id", None),
            "timings_ms": state.get("timings"),
        }
        if state.get("stream_cancelled"):
            record["stream_cancelled"] = True
        access_log.info(json.dumps(record, ensure_ascii=False))


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is larger than the {limit}-byte limit")


class BodyLimitMiddleware:
    """413 for a body over the limit, judged by Content-Length or, when the client streams
    without one, by counting, so an endless body is cut off instead of buffered."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.settings.max_upload_bytes if path.startswith("/documents") else self.settings.max_body_bytes
        declared = _headers(scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            message = f"the body is larger than the {limit}-byte limit"
            fields = [{"field": "body", "message": message, "type": "payload_too_large"}]
            await error_response(scope, 413, message, fields)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # FastAPI passes HTTP exceptions through as they are
            return message

        await self.app(scope, counting_receive, send)


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets keyed by client IP or API key; refill continuously at `rate` per second."""

    def __init__(self, rate_per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """0 if a request may pass now, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                bucket = self._buckets[key] = Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.updated > full_after]:
            del self._buckets[key]


class Buckets(Protocol):
    @property
    def enabled(self) -> bool: ...

    def take(self, key: str) -> float: ...


def rate_buckets(settings: ApiSettings) -> tuple[Buckets, Buckets]:
    """Per-IP and per-key buckets: in memory, or shared by the workers of one server (RAG_STATE_DIR)."""
    ip, key = (settings.ip_rate_per_minute, settings.ip_burst), (settings.key_rate_per_minute, settings.key_burst)
    if settings.state_dir is None:
        return TokenBuckets(*ip), TokenBuckets(*key)
    from api.shared_state import SharedDatabase, SharedTokenBuckets

    db = SharedDatabase(settings.state_dir)
    return SharedTokenBuckets(db, "ip/", *ip), SharedTokenBuckets(db, "key/", *key)


class RateLimitMiddleware:
    """Per-IP and per-key limits on API paths; over the limit: 429 with Retry-After."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings
        self.by_ip, self.by_key = rate_buckets(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or not scope.get("path", "").startswith(RATE_LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        wait = 0.0
        client = scope.get("client")
        peer = client[0] if client else None
        if self.by_ip.enabled and not self._exempt(peer):
            wait = self.by_ip.take("ip:" + client_ip(headers, peer, self.settings))
        token = _bearer_token(headers)
        if not wait and token and self.by_key.enabled and self._counts_per_key(token):
            wait = self.by_key.take("key:" + key_id(token))
        if wait:
            retry_after = str(max(1, math.ceil(wait)))
            response = error_response(scope, 429, f"too many requests; retry after {retry_after} s", headers={"Retry-After": retry_after})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


    def _exempt(self, peer: str | None) -> bool:
        """A client on this machine (an evaluator, `rag eval --url`) is not limited per IP,
        unless the server sits behind a proxy (then every client arrives from loopback, and
        the proxies' X-Forwarded-For entries name them)."""
        settings = self.settings
        behind_proxy = settings.forwarded_hops or settings.trust_forwarded_for
        return settings.exempt_loopback and not behind_proxy and is_loopback(peer or "")

    def _counts_per_key(self, token: str) -> bool:
        """Only a real API or admin key has a bucket of its own. The public widget key is in
        every visitor's page, so one shared bucket let anyone (any origin, 40 IPs) starve the
        genuine widget users: public traffic is limited per client IP only. Unknown keys are
        refused by the app and must not drain a real key's bucket either."""
        return matches_any(token, [*self.settings.api_keys, *self.settings.admin_keys])


def _bearer_token(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
