"""The FastAPI application: `create_app(settings, service)`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from api.answering import Answerer, ServiceAnswerer
from api.context import ApiContext
from api.conversations import ConversationStore
from api.errors import install_error_handlers
from api.feedback import FeedbackStore
from api.followup import Turn, rewrite
from api.middleware import AccessLogMiddleware, BodyLimitMiddleware, RateLimitMiddleware
from api.routes import ask, documents, feedback, health, openai_compat, static
from api.settings import ApiSettings
from rag.service import RagService

log = logging.getLogger("rag.api")

DESCRIPTION = """Questions over a Chinese news corpus, answered with sentences quoted from the
articles and cited as [n]. Errors are JSON `{error, message, fields, request_id}`."""


def warm_up(service: RagService) -> None:
    """Load the index, the embedder and reader weights and jieba's dictionaries before the first request."""
    from rag.tokenize import preload

    preload()
    store = service.store
    service.embedder.embed_queries(["预热"])
    if service.reader is not None:
        service.reader.read("预热", ["预热。"])  # onnxruntime session and tokenizer
    rewrite("那拉萨呢？", [Turn("昌都市有多少名干部？")])
    log.info("index ready: %d documents, %d chunks", len(store.documents()), store.chunk_count())


def widget_access(settings: ApiSettings) -> str:
    """The start-up line saying which pages may embed the widget. A page the server does not
    allow only sees a CORS error in its browser console, so the operator is told here."""
    cors = settings.cors_origins
    if "*" in cors:
        pages = "any origin (RAG_CORS_ORIGINS=*)"
    elif cors:
        pages = ", ".join(cors) + " (RAG_CORS_ORIGINS)"
    else:
        pages = "this server's own pages only (set RAG_CORS_ORIGINS to the sites that embed it)"
    if settings.public_key:
        where = ", ".join(settings.widget_origins) or "no origin: set RAG_PUBLIC_ORIGINS or RAG_CORS_ORIGINS"
        key = f"set (data-key), accepted from {where}"
    elif settings.api_keys:
        key = "not set, and RAG_API_KEYS is: the widget cannot ask from any page until RAG_PUBLIC_KEY is set and given as data-key"
    else:
        key = "not set (reads are open, no data-key needed)"
    return f"widget: pages that may embed it: {pages}; public widget key (RAG_PUBLIC_KEY): {key}"


def conversation_store(settings: ApiSettings) -> ConversationStore:
    """In memory, or shared by the workers of one server (RAG_STATE_DIR)."""
    bounds = (settings.max_history_turns, settings.conversation_ttl_seconds, settings.max_conversations, settings.max_conversation_chars)
    if settings.state_dir is None:
        return ConversationStore(*bounds)
    from api.shared_state import SharedConversationStore, SharedDatabase

    return SharedConversationStore(SharedDatabase(settings.state_dir), *bounds)


def create_app(settings: ApiSettings | None = None, service: RagService | None = None, answerer: Answerer | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    service = service or RagService(settings)
    ctx = ApiContext(
        settings=settings,
        service=service,
        answerer=answerer or ServiceAnswerer(service),
        conversations=conversation_store(settings),
        feedback=FeedbackStore(settings.feedback_file),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(warm_up, service)
        log.info("%s", widget_access(settings))
        yield

    app = FastAPI(title="rag-zh", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.ctx = ctx
    install_error_handlers(app)
    routers = [module.router for module in (ask, documents, feedback, health, openai_compat, static)]
    for router in routers:
        app.include_router(router)
    # For the Allow header of a 405: which methods each path pattern serves.
    app.state.route_methods = [(r.path_regex, set(r.methods or ())) for router in routers for r in router.routes if isinstance(r, APIRoute)]
    # Added innermost first: the access log wraps everything, CORS wraps the rate limiter
    # (so a 429 still carries CORS headers the browser needs to read it).
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
        max_age=600,
    )
    app.add_middleware(AccessLogMiddleware, settings=settings)
    app.openapi = lambda: openapi_schema(app, settings)  # type: ignore[method-assign]
    return app


def openapi_schema(app: FastAPI, settings: ApiSettings) -> dict[str, Any]:
    """FastAPI's schema, with the bearer key marked optional where this deployment does not
    require one (no API keys: reads are open; no admin keys: loopback may write)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                if "security" not in operation:
                    continue
                is_write = path.startswith("/documents") and method in {"post", "delete"}
                if not (settings.admin_keys if is_write else settings.api_keys):
                    operation["security"] = [{}, *operation["security"]]
        app.openapi_schema = schema
    return app.openapi_schema
