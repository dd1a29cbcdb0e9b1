"""`rag serve --workers 2`: both worker processes answer, and they behave as one server:
a follow-up finds its conversation whichever worker gets it, a client's rate limit is one
budget, and a document written through one worker is seen by every worker. Each request
here opens a new connection, so the kernel hands it to either worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.conversations import ConversationStore
from api.followup import Turn
from api.shared_state import SharedConversationStore, SharedDatabase, SharedTokenBuckets
from tests.api_fixtures import copy_index
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
FRESH_CONNECTIONS = 16


def start_workers(index_dir: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "RAG_INDEX_DIR": str(index_dir), "RAG_API_KEYS": "", "RAG_KEY_RATE_PER_MINUTE": "0", **extra_env}
    server = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert server.poll() is None, "rag serve exited"
        if len(workers_seen(url, tries=8, quiet=True)) == 2:  # both have finished warming up
            return server, url
        time.sleep(0.5)
    server.terminate()
    pytest.fail("the two workers did not both come up")


def workers_seen(url: str, tries: int = FRESH_CONNECTIONS, quiet: bool = False) -> set[int]:
    seen = set()
    for _ in range(tries):
        try:
            seen.add(httpx.get(f"{url}/health", timeout=10).json()["worker"])
        except httpx.HTTPError:
            if not quiet:
                raise
    return seen


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def two_workers(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    index_dir = copy_index(seed_index_dir, tmp_path_factory.mktemp("workers") / "index")
    server, url = start_workers(index_dir, {"RAG_IP_RATE_PER_MINUTE": "0"})
    try:
        yield url, index_dir
    finally:
        stop(server)


def test_both_workers_answer_with_their_own_process(two_workers: tuple[str, Path]) -> None:
    url, _ = two_workers
    seen = workers_seen(url)
    assert len(seen) == 2 and os.getpid() not in seen


def test_a_follow_up_keeps_its_conversation_on_either_worker(two_workers: tuple[str, Path]) -> None:
    url, _ = two_workers
    first = httpx.post(f"{url}/ask", json={"question": "昌都市有多少名市级以上领导带头抓党建促乡村振兴？"}, timeout=60).json()
    conversation = first["conversation_id"]
    for _ in range(8):  # in-memory conversations: about half of these land on the worker that never saw it
        follow_up = httpx.post(f"{url}/ask", json={"question": "那阿里地区呢？", "conversation_id": conversation}, timeout=60).json()
        assert follow_up["conversation_id"] == conversation and not follow_up.get("conversation_reset")
        assert "阿里" in (follow_up["rewritten_question"] or "")


def test_a_document_posted_to_one_worker_is_seen_by_all(two_workers: tuple[str, Path]) -> None:
    url, _ = two_workers
    article = {"title": "那曲赛马节", "text": "那曲赛马节今年吸引了三万二千名观众。骑手们身着盛装参加比赛。"}
    response = httpx.post(f"{url}/documents", json=article, timeout=120)
    assert response.status_code == 201, response.text
    time.sleep(1.0)  # each worker checks CURRENT at most every 0.2 s
    for _ in range(FRESH_CONNECTIONS):
        titles = [d["title"] for d in httpx.get(f"{url}/documents", timeout=30).json()["documents"]]
        assert "那曲赛马节" in titles


def test_a_clients_rate_limit_is_one_budget_across_workers(seed_index_dir: Path, tmp_path: Path) -> None:
    index_dir = copy_index(seed_index_dir, tmp_path / "index")
    burst = 6
    limits = {"RAG_IP_RATE_PER_MINUTE": "1", "RAG_IP_BURST": str(burst), "RAG_EXEMPT_LOOPBACK": "false"}
    server, url = start_workers(index_dir, limits)
    try:
        codes = [httpx.get(f"{url}/documents", timeout=30).status_code for _ in range(2 * burst)]
    finally:
        stop(server)
    # Per-worker buckets would let up to 2 x burst through.
    assert codes.count(200) == burst and codes.count(429) == burst, codes


# ---------------------------------------------------------------- the shared stores themselves


def test_shared_conversations_keep_the_in_memory_bounds(tmp_path: Path) -> None:
    store = SharedConversationStore(SharedDatabase(tmp_path), max_turns=2, ttl_seconds=0.3, max_conversations=2)
    for i in range(3):
        store.append("a", Turn(f"q{i}", "短", "答"))
    assert store.turns("a") == [Turn("q1", "短", "答"), Turn("q2", "短", "答")]  # oldest turn dropped
    store.append("b", Turn("x"))
    store.append("c", Turn("y"))
    assert store.turns("a") == [] and len(store) == 2  # least recently used conversation dropped
    time.sleep(0.35)
    assert store.turns("b") == [] and store.turns("c") == []  # idle conversations expire


def test_shared_conversations_are_bounded_by_characters(tmp_path: Path) -> None:
    store = SharedConversationStore(SharedDatabase(tmp_path), max_turns=8, ttl_seconds=600, max_conversations=10_000, max_chars=20_000)
    for i in range(20):
        store.append(f"c{i}", Turn(f"问题{i}", "短答", "答" * 2_000))
    assert store.chars <= 20_000 and 0 < len(store) < 20
    assert store.turns("c19") and not store.turns("c0")


def test_a_second_process_sees_the_same_conversations_and_buckets(tmp_path: Path) -> None:
    store = SharedConversationStore(SharedDatabase(tmp_path), 8, 600, 100)
    store.append("c1", Turn("昌都市有多少名干部？", "44名"))
    buckets = SharedTokenBuckets(SharedDatabase(tmp_path), "ip/", rate_per_minute=1, burst=2)
    assert [buckets.take("1.2.3.4") for _ in range(2)] == [0.0, 0.0]
    code = (
        "import json, sys; from pathlib import Path; "
        "from api.shared_state import SharedConversationStore, SharedDatabase, SharedTokenBuckets; "
        f"d = Path({str(tmp_path)!r}); "
        "print(json.dumps([[t.question for t in SharedConversationStore(SharedDatabase(d), 8, 600, 100).turns('c1')], "
        "SharedTokenBuckets(SharedDatabase(d), 'ip/', 1, 2).take('1.2.3.4') > 0]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == [["昌都市有多少名干部？"], True]  # the other process's third request waits


def test_memory_and_shared_stores_agree_on_a_random_workload(tmp_path: Path) -> None:
    import random

    rng = random.Random(5)
    memory = ConversationStore(3, 600, 4, 50)
    shared = SharedConversationStore(SharedDatabase(tmp_path), 3, 600, 4, 50)
    for step in range(200):
        conversation, turn = f"c{rng.randrange(6)}", Turn(f"问{step}", "短" * rng.randrange(5), "答" * rng.randrange(20))
        memory.append(conversation, turn)
        shared.append(conversation, turn)
        time.sleep(0.001)  # distinct touch times: the shared store orders by wall clock
        probe = f"c{rng.randrange(6)}"
        assert memory.turns(probe) == shared.turns(probe)
    assert (len(memory), memory.chars) == (len(shared), shared.chars)


@pytest.mark.parametrize(("reader", "expected"), [("onnx", 1), ("none", "cores")])
def test_the_default_worker_count_follows_the_composer(reader: str, expected: int | str, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.server import default_workers
    from api.settings import ApiSettings
    from rag.threads import available_cores

    monkeypatch.delenv("RAG_WORKERS", raising=False)
    monkeypatch.setenv("RAG_READER", reader)
    assert default_workers(ApiSettings()) == (available_cores() if expected == "cores" else expected)
