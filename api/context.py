"""What the routes share: settings, the service, the answerer, conversations, feedback,
the in-process write lock and a few counters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from fastapi import Request

from api.answering import Answerer
from api.conversations import ConversationStore
from api.feedback import FeedbackStore
from api.settings import ApiSettings
from rag.service import RagService


@dataclass
class Counters:
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    streams_failed: int = 0
    stream_events_sent: int = 0
    writes: int = 0


@dataclass
class ApiContext:
    settings: ApiSettings
    service: RagService
    answerer: Answerer
    conversations: ConversationStore
    feedback: FeedbackStore
    # Writes are serialised in-process here and across processes by the index's file lock;
    # readers never wait: they keep using the snapshot they started with.
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    counters: Counters = field(default_factory=Counters)
    started_at: float = field(default_factory=time.time)


def get_ctx(request: Request) -> ApiContext:
    return request.app.state.ctx
