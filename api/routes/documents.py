"""GET/POST/DELETE /documents: list, read, add (JSON article or file upload), remove.

A write embeds the new chunks and builds a new index snapshot off the event loop; queries
keep using the previous snapshot until the new one is saved and swapped in.
"""

from __future__ import annotations

import logging
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from api.context import ApiContext, get_ctx
from api.errors import ApiError
from api.schemas import ERROR_RESPONSES, ID_PATTERN, ChangeResponse, DocumentDetail, DocumentIn, DocumentList
from api.security import require
from rag import ingest
from rag.formats import SUPPORTED_SUFFIXES, LoadedFile, format_of, load_bytes
from rag.service import ChangeReport
from rag.types import Document

router = APIRouter(tags=["documents"])
log = logging.getLogger("rag.api")

_NOT_FOUND = {404: {"model": ERROR_RESPONSES[422]["model"], "description": "no such document"}}


def chunk_count(ctx: ApiContext, doc_id: str) -> int:
    chunks_of = getattr(ctx.service.store, "chunks_of", None)
    return len(chunks_of(doc_id)) if chunks_of else 0


def summary(ctx: ApiContext, doc: Document) -> dict[str, Any]:
    return {
        "doc_id": doc.doc_id,
        "title": doc.title,
        "source": doc.source,
        "date": doc.date,
        "url": doc.url,
        "chars": len(doc.text),
        "chunks": chunk_count(ctx, doc.doc_id),
    }


@router.get("/documents", response_model=DocumentList, responses=ERROR_RESPONSES, dependencies=[Depends(require("read"))])
async def list_documents(
    request: Request, offset: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=1000)
) -> dict[str, Any]:
    ctx = get_ctx(request)
    docs = sorted(ctx.service.store.documents(), key=lambda d: (d.source, d.doc_id))
    return {"total": len(docs), "offset": offset, "limit": limit, "documents": [summary(ctx, d) for d in docs[offset : offset + limit]]}


@router.get(
    "/documents/{doc_id}",
    response_model=DocumentDetail,
    responses={**ERROR_RESPONSES, **_NOT_FOUND},
    dependencies=[Depends(require("read"))],
)
async def get_document(request: Request, doc_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
    ctx = get_ctx(request)
    doc = ctx.service.store.document(doc_id)
    if doc is None:
        raise ApiError(404, f"unknown document id {doc_id!r}", field="doc_id")
    return {**summary(ctx, doc), "key": doc.key, "text": doc.text, "byline": doc.byline, "dateline": doc.dateline, "subtitle": doc.subtitle}


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DocumentIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a .txt, .md/.markdown, .html/.htm, .jsonl, .pdf (text layer; no OCR) or .docx file; "
                            "text files in any common encoding (UTF-8, UTF-16, GB18030/GBK, Big5: detected, reported in `files`)",
                        }
                    },
                }
            },
        },
    }
}


@router.post(
    "/documents",
    status_code=201,
    response_model=ChangeResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_UPLOAD_BODY,
    summary="Add or replace one article (JSON) or the articles of an uploaded file (multipart)",
    dependencies=[Depends(require("write"))],
)
async def add_document(request: Request) -> dict[str, Any]:
    ctx = get_ctx(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in {"application/json", "multipart/form-data"}:
        raise ApiError(
            415,
            f"send application/json (one article) or multipart/form-data (a file), not {content_type or 'nothing'!r}",
            field="content-type",
        )
    body = await read_limited(request, ctx.settings.max_upload_bytes)
    if content_type == "application/json":
        documents, sources, loaded = [document_from_json(body)], None, None
    else:
        loaded = await file_from_upload(request, body)
        documents, sources = loaded.documents, {loaded.name}
    async with ctx.write_lock:
        report: ChangeReport = await run_in_threadpool(ctx.service.add_documents, documents, sources)
        ctx.counters.writes += report.changed
    if loaded is not None:
        report.files = [loaded.describe()]
    store = ctx.service.store
    named = [store.document(d.doc_id) for d in documents]
    return {**report.__dict__, "documents": [summary(ctx, d) for d in named if d is not None]}


@router.delete(
    "/documents/{doc_id}",
    response_model=ChangeResponse,
    responses={**ERROR_RESPONSES, **_NOT_FOUND},
    dependencies=[Depends(require("write"))],
)
async def delete_document(request: Request, doc_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
    ctx = get_ctx(request)
    async with ctx.write_lock:
        if ctx.service.store.document(doc_id) is None:
            raise ApiError(404, f"unknown document id {doc_id!r}", field="doc_id")
        report: ChangeReport = await run_in_threadpool(ctx.service.remove, doc_id)
        ctx.counters.writes += 1
    return {**report.__dict__, "documents": []}


# ---------------------------------------------------------------- request bodies


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds `limit` (declared or actual size)."""
    too_large = ApiError(413, f"the body is larger than the {limit}-byte limit", field="body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


def document_from_json(body: bytes) -> Document:
    try:
        article = DocumentIn.model_validate_json(body)
    except ValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]) from None
    record = {"title": article.title, "text": article.text, "url": article.url, "source": article.source or "api"}
    record["date"] = article.date
    return ingest.document_from_record(record, record["source"])


async def file_from_upload(request: Request, body: bytes) -> LoadedFile:
    """The uploaded file's articles, parsed in a worker thread: a PDF can take seconds and the
    event loop must keep answering /health and queries meanwhile."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=5)
    except MultiPartException as err:
        raise ApiError(422, f"malformed multipart body: {err.message}", field="body") from None
    except StarletteHTTPException as err:  # Starlette reports multipart problems as 400
        raise ApiError(422, f"malformed multipart body: {err.detail}", field="body") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "the multipart body needs a file in the 'file' field", field="file")
    name = PurePath(upload.filename or "").name
    if format_of(name) is None:
        raise ApiError(415, f"unsupported file type {name!r}: use {', '.join(SUPPORTED_SUFFIXES)}", field="file")
    raw = await upload.read()
    return await run_in_threadpool(parse_upload, raw, name)


def parse_upload(raw: bytes, name: str) -> LoadedFile:
    try:
        return load_bytes(raw, name)
    except ingest.IngestError as err:
        raise ApiError(422, str(err), field="file") from None
    except RecursionError:  # pypdf, markdown-it, lxml recurse per nesting level: a crafted file ends here
        log.warning("upload %s is nested too deeply to parse", name)
        raise ApiError(422, f"{name}: nested too deeply to parse", field="file") from None
    except (ValueError, IndexError, KeyError) as err:  # a parser bug must not become a 500
        log.exception("could not parse upload %s", name)
        raise ApiError(422, f"{name}: could not be parsed ({type(err).__name__})", field="file") from None
