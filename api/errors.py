"""Every error leaves as JSON `{error, message, fields, request_id}`; `fields` names the
offending fields (dotted paths, e.g. `filters.date_to`)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from index.store import StoreError
from rag.ingest import IngestError
from rag.service import QuestionError, UnknownDocumentError

log = logging.getLogger("rag.api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


# The codes OpenAI reports with type "invalid_request_error" (bad parameters, unknown model or route).
_INVALID_REQUEST_CODES = {
    "invalid_request",
    "bad_request",
    "not_found",
    "model_not_found",
    "method_not_allowed",
    "payload_too_large",
    "unsupported_media_type",
}


class ApiError(Exception):
    """An error the client can act on; `field` names the part of the request at fault."""

    def __init__(
        self, status: int, message: str, field: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or _STATUS_CODES.get(status, "error")
        self.headers = headers


def request_id_of(scope_or_request: Any) -> str | None:
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    return scope.get("state", {}).get("request_id")


def error_response(
    request_or_scope: Any,
    status: int,
    message: str,
    fields: list[dict[str, str]] | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    scope = request_or_scope.scope if isinstance(request_or_scope, Request) else request_or_scope
    code = code or _STATUS_CODES.get(status, "error")
    fields = fields or []
    request_id = request_id_of(scope)
    if scope.get("path", "").startswith("/v1/"):
        # OpenAI answers a request it cannot accept with 400; its clients raise BadRequestError
        # for that and treat a 422 as an unexpected status.
        status = 400 if status == 422 else status
        body: dict[str, Any] = openai_error(code, message, fields, request_id)
    else:
        body = {"error": code, "message": message, "fields": fields, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def openai_error(code: str, message: str, fields: list[dict[str, str]], request_id: str | None) -> dict[str, Any]:
    """OpenAI's error shape, so OpenAI clients and chat front ends show the message."""
    kind = "invalid_request_error" if code in _INVALID_REQUEST_CODES else code
    param = fields[0]["field"] if fields else None
    return {"error": {"message": message, "type": kind, "param": param, "code": code}, "fields": fields, "request_id": request_id}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "filters", "date_to") -> "filters.date_to"; ("query", "limit") -> "limit"."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_fields(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    fields = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        name = "body" if err.get("type") == "json_invalid" else field_path(loc)
        fields.append({"field": name, "message": str(err.get("msg", "invalid")), "type": str(err.get("type", "invalid"))})
    return fields


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = validation_fields(list(exc.errors()))
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return error_response(request, 422, f"invalid request: {summary}", fields)


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    fields = [{"field": exc.field, "message": exc.message, "type": exc.code}] if exc.field else []
    return error_response(request, exc.status, exc.message, fields, exc.code, exc.headers)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    fields = [{"field": "body", "message": str(exc.detail), "type": "payload_too_large"}] if exc.status_code == 413 else None
    return error_response(request, exc.status_code, str(exc.detail), fields, headers=headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for path_regex, route_methods in getattr(request.app.state, "route_methods", []):
        if path_regex.match(request.url.path):
            methods |= route_methods
    methods.discard("HEAD")
    return sorted(methods)


async def _question_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 422, str(exc), [{"field": "question", "message": str(exc), "type": "invalid_question"}])


async def _ingest_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 422, str(exc), [{"field": "body", "message": str(exc), "type": "ingest_error"}])


async def _unknown_document_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 404, str(exc), [{"field": "doc_id", "message": str(exc), "type": "not_found"}])


async def _store_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # The cause names the index's path on the server (or the Milvus URI): the operator's log
    # gets it, the public answer only the request id that finds it there.
    request_id = request_id_of(request)
    log.error("index unavailable (request %s): %s", request_id, exc)
    message = "the index is unavailable; the server log has the cause under this request id"
    return error_response(request, 503, message, code="index_unavailable")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(QuestionError, _question_error_handler)
    app.add_exception_handler(IngestError, _ingest_error_handler)
    app.add_exception_handler(UnknownDocumentError, _unknown_document_handler)
    app.add_exception_handler(StoreError, _store_error_handler)
