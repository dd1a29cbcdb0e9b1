"""GET /health (the process is up) and GET /ready (the index is loaded)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request

from api.context import get_ctx
from api.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
async def health() -> dict[str, Any]:
    return {"status": "ok", "worker": os.getpid()}


@router.get("/ready", response_model=ReadyOut)
async def ready(request: Request) -> dict[str, Any]:
    ctx = get_ctx(request)
    store = ctx.service.store
    manifest = store.manifest
    return {
        "status": "ready",
        "documents": len(store.documents()),
        "chunks": store.chunk_count(),
        "embedder": ctx.service.embedder.identity,
        "reader": ctx.service.reader.identity if ctx.service.reader is not None else "none",
        "index_kind": manifest.get("index_kind", "unknown"),
        "corpus_hash": manifest.get("corpus_hash"),
    }
