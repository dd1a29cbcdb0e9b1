"""Who may call what.

* admin keys: everything, including document writes;
* API keys: questions, search, documents (read), chat completions;
* the public widget key: /ask, /ask/stream and /feedback only, and only from an allowed
  browser origin (it is visible in the page, so the origin binding is what limits it);
* no key (or an unknown one): allowed for reads when no API keys are configured; document
  writes without admin keys configured are allowed from loopback clients only (a local
  dev server).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.settings import ApiSettings

Access = Literal["widget", "read", "write"]
bearer = HTTPBearer(auto_error=False, description="API key, admin key or the public widget key")


@dataclass(frozen=True)
class Principal:
    role: Literal["admin", "user", "public", "anonymous"]
    key_id: str | None = None  # a short hash: logs never hold the key itself


def key_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def matches_any(token: str, keys: list[str]) -> bool:
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


def client_ip(request_headers: dict[str, str], client_host: str | None, settings: ApiSettings) -> str:
    """The client's address. Behind `forwarded_hops` proxies, each appends the address it saw
    to X-Forwarded-For, so the client is that many entries from the right; what lies further
    left was written by the client and proves nothing (a forged leftmost entry is ignored)."""
    peer = client_host or "unknown"
    hops = settings.forwarded_hops or (1 if settings.trust_forwarded_for else 0)
    header = request_headers.get("x-forwarded-for")
    if not hops or not header or not _is_trusted_proxy(peer, settings.trusted_proxies):
        return peer
    entries = [e.strip() for e in header.split(",") if e.strip()]
    # Fewer entries than proxies: the request skipped the outer ones; the leftmost entry was
    # written by the first trusted proxy it reached.
    return entries[-hops] if len(entries) >= hops else (entries[0] if entries else peer)


def _is_trusted_proxy(peer: str, trusted: list[str]) -> bool:
    if not trusted:
        return True
    try:
        address = ipaddress.ip_address(peer)
        return any(address in ipaddress.ip_network(net, strict=False) for net in trusted)
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def identify(token: str | None, settings: ApiSettings) -> Principal:
    if token is None:
        return Principal("anonymous")
    if matches_any(token, settings.admin_keys):
        return Principal("admin", key_id(token))
    if matches_any(token, settings.api_keys):
        return Principal("user", key_id(token))
    if settings.public_key and hmac.compare_digest(token.encode(), settings.public_key.encode()):
        return Principal("public", key_id(token))
    if not settings.api_keys:
        # Reads are open: a placeholder key (OpenAI clients always send one) is just anonymous.
        return Principal("anonymous")
    raise ApiError(401, "unknown API key", field="authorization", headers={"WWW-Authenticate": "Bearer"})


def authorize(principal: Principal, access: Access, request: Request, settings: ApiSettings) -> None:
    role = principal.role
    if role == "admin":
        return
    if access == "write":
        if role == "anonymous" and not settings.admin_keys and is_loopback(request.client.host if request.client else ""):
            return
        raise _denied(role, "document writes need an admin key")
    if role == "public":
        if access != "widget":
            raise ApiError(403, "the public widget key only allows /ask, /ask/stream and /feedback", field="authorization")
        origin = request.headers.get("origin")
        allowed = settings.widget_origins
        if origin is None or not (origin in allowed or "*" in allowed):
            raise ApiError(403, f"origin {origin!r} may not use the public widget key", field="origin")
        return
    if role == "anonymous" and settings.api_keys:
        raise _denied(role, "an API key is required (Authorization: Bearer <key>)")


def _denied(role: str, message: str) -> ApiError:
    if role == "anonymous":
        return ApiError(401, message, field="authorization", headers={"WWW-Authenticate": "Bearer"})
    return ApiError(403, message, field="authorization")


async def json_body(request: Request) -> None:
    """415 for a body that is declared as something other than JSON (FastAPI would say 422)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"send the body as application/json, not {media!r}", field="content-type")


def require(access: Access) -> Callable[..., Awaitable[Principal]]:
    """A route dependency: identify the caller, check it may use this kind of endpoint."""

    async def dependency(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        settings: ApiSettings = request.app.state.ctx.settings
        principal = identify(credentials.credentials if credentials else None, settings)
        request.state.principal = principal
        authorize(principal, access, request, settings)
        return principal

    return dependency
