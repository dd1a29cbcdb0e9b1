"""Generative answers against the in-repo fake OpenAI server (real HTTP on loopback, real
`openai` client, real seed index and embeddings): each scripted LLM behaviour and what the
user receives; prompts; citation verification."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.compose import REFUSAL_MESSAGE, ExtractiveComposer
from rag.config import Settings
from rag.embedders import Embedder
from rag.generative import GenerativeComposer, rewrite_followup
from rag.llm import CircuitBreaker, LLMClient, LLMConfig, breaker_for, reset_breakers
from rag.prompts import (
    ANSWER_SYSTEM_PROMPT,
    REFUSAL_PHRASE,
    PromptPassage,
    answer_prompt,
    approx_tokens,
    clean_rewrite,
    fit_passages,
    followup_messages,
    render_passage,
)
from rag.reader.composer import ReaderComposer
from rag.service import RagService
from rag.types import Answer, Chunk, Hit
from rag.verify import (
    MarkerStripper,
    RawSentence,
    SentenceSplitter,
    chinese_number,
    marker_numbers,
    passage_numbers,
    sentence_facts,
    verify_answer,
)
from tests.fake_openai_server import FakeOpenAIServer, Reply

QUESTION = "昌都市全市共建成村级集体经济项目多少个？"
FACT = "全市共建成村级集体经济项目1459个"
GOOD_1 = "昌都市共建成村级集体经济项目1459个。"
GOOD_2 = "这些项目带动群众10.5万余人增收致富。"
WRONG_NUMBER = "昌都市共建成村级集体经济项目1500个。"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_llm_state(fake: FakeOpenAIServer) -> None:
    fake.reset()
    reset_breakers()


def llm_service(fake: FakeOpenAIServer, seed_index_dir: Path, embedder: Embedder, **overrides: Any) -> RagService:
    values: dict[str, Any] = {
        "index_dir": seed_index_dir,
        "llm_base_url": fake.base_url,
        "llm_model": "fake-model",
        "llm_api_key": "sk-test-key",
        "llm_timeout_s": 2.0,
        "llm_max_retries": 0,
        "llm_max_tokens": 300,
        "llm_temperature": 0.2,
    }
    values.update(overrides)
    return RagService(Settings(**values), embedder)


@pytest.fixture
def service(fake: FakeOpenAIServer, seed_index_dir: Path, embedder: Embedder) -> RagService:
    return llm_service(fake, seed_index_dir, embedder)


@pytest.fixture(scope="module")
def extractive(seed_index_dir: Path, embedder: Embedder) -> RagService:
    """No LLM, whatever RAG_LLM_* the environment sets."""
    return RagService(Settings(index_dir=seed_index_dir, llm_base_url=None), embedder)


@pytest.fixture(scope="module")
def hits(extractive: RagService) -> list[Hit]:
    return extractive.search(QUESTION)


def number_of(hits: list[Hit], text: str) -> int:
    """The prompt number [n] of the first retrieved passage containing `text`."""
    return next(n for n, h in enumerate(hits, 1) if text in h.chunk.text)


def number_without(hits: list[Hit], *texts: str) -> int:
    return next(n for n, h in enumerate(hits, 1) if not any(t in h.chunk.text for t in texts))


def events_of(service: RagService, question: str = QUESTION) -> list[dict[str, Any]]:
    return list(service.ask_stream(question))


def done_answer(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The final answer as /ask would return it (JSON)."""
    assert events[-1]["type"] == "done" and isinstance(events[-1]["answer"], Answer)
    assert all(e["type"] != "done" for e in events[:-1])
    return events[-1]["answer"].to_dict()


# ---------------------------------------------------------------- scripted cases: whole answers


def test_well_cited_answer_is_verified_and_cited(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    n = number_of(hits, FACT)
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]"))
    answer = service.ask(QUESTION)
    assert answer.fallback is None and not answer.refused
    assert answer.answer == f"{GOOD_1}[{n}]{GOOD_2}[{n}]"
    assert [(s.supported, s.rule, s.citations) for s in answer.sentences] == [(True, "cited", [n]), (True, "cited", [n])]
    [citation] = answer.citations
    assert citation.n == n and "1459" in citation.quote
    doc = service.store.document(citation.doc_id)
    assert doc is not None and doc.text[citation.start : citation.end] == citation.quote
    assert answer.short_answer is not None and "1459" in answer.short_answer
    assert "fallback" not in answer.to_dict()


def test_wrong_citation_number_is_reattached_to_the_supporting_passage(
    fake: FakeOpenAIServer, service: RagService, hits: list[Hit]
) -> None:
    n, wrong = number_of(hits, FACT), number_without(hits, "1459")
    fake.script(Reply(f"{GOOD_1}[{wrong}]"))
    answer = service.ask(QUESTION)
    assert answer.fallback is None
    assert answer.sentences[0].rule == "reattached" and answer.sentences[0].citations == [n]
    assert answer.answer == f"{GOOD_1}[{n}]" and f"[{wrong}]" not in answer.answer
    assert [c.n for c in answer.citations] == [n]


def test_unsupported_number_is_dropped_and_marked(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    n = number_of(hits, FACT)
    fake.script(Reply(f"{WRONG_NUMBER}[{n}]{GOOD_2}[{n}]"))
    answer = service.ask(QUESTION)
    assert answer.fallback is None
    wrong, right = answer.sentences
    assert (wrong.supported, wrong.rule, wrong.citations) == (False, "unsupported_number", [])
    assert right.supported and right.citations == [n]
    assert "1500" not in answer.answer and "10.5万" in answer.answer
    assert answer.confidence == pytest.approx(0.5)


def test_only_unsupported_sentences_fall_back_to_extractive(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    fake.script(Reply(f"{WRONG_NUMBER}[{number_of(hits, FACT)}]"))
    answer = service.ask(QUESTION)
    assert answer.fallback == "extractive" and answer.fallback_reason is not None
    assert answer.fallback_reason.startswith("unsupported")
    assert "1459" in answer.answer and "1500" not in answer.answer
    assert answer.to_dict()["fallback"] == "extractive"


def test_marker_to_missing_passage_is_removed(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    n = number_of(hits, FACT)
    assert len(hits) < 9
    fake.script(Reply(f"{GOOD_1}[9]"), Reply(f"{GOOD_1}[{n}][9]"))
    alone = service.ask(QUESTION)
    assert "[9]" not in alone.answer and alone.answer == f"{GOOD_1}[{n}]"
    assert alone.sentences[0].rule == "attached" and alone.sentences[0].citations == [n]
    beside = service.ask(QUESTION)
    assert beside.answer == f"{GOOD_1}[{n}]" and beside.sentences[0].rule == "cited"
    assert all(c.n != 9 for c in alone.citations + beside.citations)


def test_answer_without_citations_falls_back(fake: FakeOpenAIServer, service: RagService) -> None:
    fake.script(Reply(GOOD_1 + GOOD_2))
    answer = service.ask(QUESTION)
    assert answer.fallback == "extractive" and answer.fallback_reason.startswith("no_citations")
    assert "1459" in answer.answer and answer.citations  # the extractive answer, cited
    assert all(s.rule == "extractive" for s in answer.sentences)


def test_timeout_falls_back_without_waiting_for_the_server(fake: FakeOpenAIServer, seed_index_dir: Path, embedder: Embedder) -> None:
    service = llm_service(fake, seed_index_dir, embedder, llm_timeout_s=0.5)
    fake.script(Reply(GOOD_1 + "[1]", delay_s=60))
    started = time.perf_counter()
    answer = service.ask(QUESTION)
    assert time.perf_counter() - started < 30  # the client gave up long before the server answered
    assert answer.fallback == "extractive" and answer.fallback_reason.startswith("timeout")
    assert "1459" in answer.answer


def test_server_error_is_retried_then_falls_back(fake: FakeOpenAIServer, seed_index_dir: Path, embedder: Embedder) -> None:
    service = llm_service(fake, seed_index_dir, embedder, llm_max_retries=1)
    fake.script(Reply(status=500), Reply(status=500))
    answer = service.ask(QUESTION)
    assert len(fake.requests) == 2  # one retry
    assert answer.fallback == "extractive" and answer.fallback_reason.startswith("http_500")


def test_retry_recovers_from_one_server_error(fake: FakeOpenAIServer, seed_index_dir: Path, embedder: Embedder, hits: list[Hit]) -> None:
    service = llm_service(fake, seed_index_dir, embedder, llm_max_retries=1)
    fake.script(Reply(status=503), Reply(f"{GOOD_1}[{number_of(hits, FACT)}]"))
    answer = service.ask(QUESTION)
    assert len(fake.requests) == 2
    assert answer.fallback is None and answer.sentences[0].supported


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(raw="<html><body>502 Bad Gateway</body></html>", content_type="text/html"), "malformed_output"),
        (Reply(raw="{not json at all"), "malformed_output"),
        (Reply(raw='{"object": "list", "data": []}'), "malformed_output"),
        (Reply(""), "empty_output"),
    ],
)
def test_garbage_from_the_server_falls_back(fake: FakeOpenAIServer, service: RagService, reply: Reply, reason: str) -> None:
    fake.script(reply)
    answer = service.ask(QUESTION)
    assert answer.fallback == "extractive" and answer.fallback_reason.startswith(reason)
    assert "1459" in answer.answer


def test_gibberish_text_falls_back(fake: FakeOpenAIServer, service: RagService) -> None:
    fake.script(Reply("asdf qwer zxcv 乱码乱码 ###"))
    answer = service.ask(QUESTION)
    assert answer.fallback == "extractive" and answer.fallback_reason.startswith("no_citations")


def test_connection_refused_falls_back(seed_index_dir: Path, embedder: Embedder) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = RagService(Settings(index_dir=seed_index_dir, llm_base_url=f"http://127.0.0.1:{port}/v1", llm_max_retries=0), embedder)
    answer = service.ask(QUESTION)
    assert answer.fallback == "extractive" and answer.fallback_reason.startswith("connection_error")


def test_refusal_is_passed_through(fake: FakeOpenAIServer, service: RagService) -> None:
    fake.script(Reply(f"{REFUSAL_PHRASE}。"))
    answer = service.ask("阿里地区一共有多少人口？")
    assert answer.refused and answer.fallback is None
    assert answer.answer == REFUSAL_MESSAGE and answer.citations == []
    assert [(s.supported, s.rule) for s in answer.sentences] == [(True, "refusal")]


def test_thinking_is_not_shown(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    n = number_of(hits, FACT)
    fake.script(Reply(f"<think>用户问项目数量，资料[{n}]里有1459。</think>\n{GOOD_1}[{n}]"))
    answer = service.ask(QUESTION)
    assert answer.answer == f"{GOOD_1}[{n}]"


@pytest.mark.parametrize(
    ("question", "expected"),
    [("扎囊縣今年接待了多少遊客？", "十五万人次"), ("扎囊县今年的旅游收入是多少？", "两千三百万元")],
)
def test_short_answer_of_a_generated_sentence_is_the_quantity_asked(
    fake: FakeOpenAIServer, seed_service_rw: RagService, embedder: Embedder, tmp_path: Path, question: str, expected: str
) -> None:
    """The reader alone ranks 两千三百万元 first in this sentence, whichever was asked."""
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("山南市乡村旅游", 0)
    document.add_paragraph("山南市扎囊县今年接待游客十五万人次，旅游收入达到两千三百万元。")
    document.save(tmp_path / "tour.docx")
    seed_service_rw.add_files([tmp_path / "tour.docx"])
    service = llm_service(fake, seed_service_rw.settings.index_dir, embedder)
    n = number_of(service.search(question), "扎囊县")
    fake.script(Reply(f"扎囊县今年接待游客十五万人次，旅游收入达到两千三百万元。[{n}]"))
    answer = service.ask(question)
    assert answer.fallback is None and [s.supported for s in answer.sentences] == [True]
    assert answer.short_answer == expected


# ---------------------------------------------------------------- circuit breaker


def test_circuit_breaker_stops_calling_a_failing_server(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    fake.script(*[Reply(status=500)] * 3)
    reasons = [service.ask(QUESTION).fallback_reason for _ in range(4)]
    assert len(fake.requests) == 3  # the fourth question never reached the server
    assert all(r.startswith("http_500") for r in reasons[:3]) and reasons[3].startswith("circuit_open")
    breaker = breaker_for(fake.base_url)
    breaker.cooldown_s = 0.2
    time.sleep(0.3)
    fake.script(Reply(f"{GOOD_1}[{number_of(hits, FACT)}]"))
    recovered = service.ask(QUESTION)  # the half-open trial call goes out and succeeds
    assert recovered.fallback is None and len(fake.requests) == 4
    assert breaker.state == "closed"


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.5
    assert breaker.allow() and not breaker.allow()  # one trial call at a time
    breaker.record_failure()  # the trial failed: open again
    assert breaker.state == "open"
    now[0] = 21.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


# ---------------------------------------------------------------- streaming


def test_stream_forwards_text_and_verifies_each_sentence(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    n = number_of(hits, FACT)
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]", chunk_chars=2))
    events = events_of(service)
    types = [e["type"] for e in events]
    deltas = [e["text"] for e in events if e["type"] == "delta"]
    assert len(deltas) > 10  # forwarded as it arrived, not in one piece
    assert "".join(deltas) == GOOD_1 + GOOD_2  # markers are not streamed raw
    sentences = [e for e in events if e["type"] == "sentence"]
    assert [(s["index"], s["supported"], s["citations"]) for s in sentences] == [(0, True, [n]), (1, True, [n])]
    assert "1459" in sentences[0]["sources"][0]["quote"]
    # The first sentence's event comes after its own text and before the second sentence's text.
    first_event = types.index("sentence")
    assert "".join(deltas_before(events, first_event)) == GOOD_1
    answer = done_answer(events)
    assert answer["answer"] == f"{GOOD_1}[{n}]{GOOD_2}[{n}]" and "fallback" not in answer
    assert set(answer["timings_ms"]) == {"retrieve", "compose", "total"}
    assert fake.requests[0]["body"]["stream"] is True


def deltas_before(events: list[dict[str, Any]], index: int) -> list[str]:
    return [e["text"] for e in events[:index] if e["type"] == "delta"]


def test_stream_marks_unsupported_sentence_and_final_answer_drops_it(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    n, wrong = number_of(hits, FACT), number_without(hits, "1459", "10.5万")
    fake.script(Reply(f"{WRONG_NUMBER}[{n}]{GOOD_2}[{wrong}][9]", chunk_chars=4))
    events = events_of(service)
    first, second = [e for e in events if e["type"] == "sentence"]
    assert (first["supported"], first["rule"], first["citations"]) == (False, "unsupported_number", [])
    assert "1500" in first["detail"]
    assert second["rule"] == "reattached" and second["removed_markers"] == [9]
    assert second["citations"] and second["citations"] != [wrong]
    answer = done_answer(events)
    assert "1500" not in answer["answer"] and "[9]" not in answer["answer"]
    assert [s["supported"] for s in answer["sentences"]] == [False, True]


def test_stream_stall_falls_back_to_extractive(fake: FakeOpenAIServer, seed_index_dir: Path, embedder: Embedder) -> None:
    service = llm_service(fake, seed_index_dir, embedder, llm_timeout_s=0.5)
    fake.script(Reply(GOOD_1 + "[1]", chunk_chars=2, stall_after=6, stall_s=60))
    events = events_of(service)
    types = [e["type"] for e in events]
    fallback = types.index("fallback")
    assert "delta" in types[:fallback]  # some text had been forwarded before the stall
    assert events[fallback]["reason"] == "timeout"
    answer = done_answer(events)
    assert answer["fallback"] == "extractive" and "1459" in answer["answer"]
    assert "".join(deltas_before(events[fallback:], len(events) - fallback)).startswith(answer["sentences"][0]["text"])


@pytest.mark.parametrize("reply", [Reply(status=500), Reply(raw="{broken"), Reply(GOOD_1)])
def test_stream_faults_end_in_a_fallback_answer(fake: FakeOpenAIServer, service: RagService, reply: Reply) -> None:
    fake.script(reply)
    events = events_of(service)
    assert [e["type"] for e in events].count("fallback") == 1
    answer = done_answer(events)
    assert answer["fallback"] == "extractive" and answer["fallback_reason"]
    assert not answer["refused"] and "1459" in answer["answer"]


def test_stream_closed_by_the_client_is_not_a_server_failure(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    n = number_of(hits, FACT)
    fake.script(Reply(f"{GOOD_1}[{n}]{GOOD_2}[{n}]", chunk_chars=2), Reply(f"{GOOD_1}[{n}]"))
    events = service.ask_stream(QUESTION)
    assert next(e for e in events if e["type"] == "delta")
    events.close()  # the user went away mid-answer
    assert breaker_for(fake.base_url).state == "closed"
    assert service.ask(QUESTION).fallback is None


def test_a_verification_bug_falls_back_instead_of_failing(
    fake: FakeOpenAIServer, service: RagService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, sentence: RawSentence) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("rag.generative.AnswerVerifier.verify", broken)
    fake.script(Reply(f"{GOOD_1}[1]"), Reply(f"{GOOD_1}[1]"))
    answer = service.ask(QUESTION)
    assert answer.fallback == "extractive" and answer.fallback_reason == "verification_error: ZeroDivisionError"
    streamed = done_answer(events_of(service))
    assert streamed["fallback_reason"] == "verification_error: ZeroDivisionError" and "1459" in streamed["answer"]


def test_stream_without_llm_gives_the_extractive_answer(extractive: RagService) -> None:
    events = events_of(extractive)
    answer = done_answer(events)
    assert "fallback" not in answer and "1459" in answer["answer"]
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "".join(s["text"] for s in answer["sentences"])


def test_stream_rejects_a_bad_question_before_streaming(service: RagService) -> None:
    from rag.service import QuestionError

    with pytest.raises(QuestionError):
        service.ask_stream("   ")


# ---------------------------------------------------------------- configuration and prompts


def test_composer_is_generative_only_when_an_llm_is_configured(service: RagService, extractive: RagService) -> None:
    assert isinstance(service.composer(), GenerativeComposer)
    assert isinstance(extractive.composer(), ExtractiveComposer | ReaderComposer)


def test_request_carries_the_prompt_and_settings(fake: FakeOpenAIServer, service: RagService, hits: list[Hit]) -> None:
    fake.script(Reply(f"{GOOD_1}[{number_of(hits, FACT)}]"))
    service.ask(QUESTION)
    [request] = fake.requests
    body = request["body"]
    assert request["headers"]["authorization"] == "Bearer sk-test-key"
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("fake-model", 300, 0.2)
    system, user = body["messages"]
    assert system == {"role": "system", "content": ANSWER_SYSTEM_PROMPT}
    assert REFUSAL_PHRASE in system["content"] and "[2]" in system["content"] and "只能根据" in system["content"]
    content = user["content"]
    assert content.rstrip().endswith("每句话末尾标注资料编号。") and f"问题：{QUESTION}" in content
    positions = [content.index(f"[{n}] 《{h.chunk.title}》") for n, h in enumerate(hits, 1)]
    assert positions == sorted(positions)  # numbered in rank order
    passages = content.split("\n\n问题：")[0].removeprefix("资料：\n").split("\n\n")
    assert len(passages) == len(hits)  # a blank line separates passages and nothing else
    for block, hit in zip(passages, hits, strict=True):
        assert "".join(block.split("\n", 1)[1].split()) == "".join(hit.chunk.text.split())  # the whole passage


def test_approx_tokens_counts_cjk_chars_latin_words_and_digit_groups() -> None:
    assert approx_tokens("昌都市") == 3
    assert approx_tokens("hello world") == 2
    assert approx_tokens("1459") == 2  # digits count per 3
    assert approx_tokens("共有 1459 个 projects。") == 1 + 1 + 2 + 1 + 1 + 1
    assert approx_tokens("") == 0


def _hit(n: int, text: str, title: str = "标题") -> Hit:
    return Hit(Chunk(f"d{n}:0", f"d{n}", title, 0, len(text), text), 1.0 / n)


def test_context_budget_trims_whole_passages_from_the_lowest_rank() -> None:
    hits = [_hit(i, f"第{i}段。" + "资料内容" * 50) for i in range(1, 6)]
    one = approx_tokens(render_passage(1, hits[0], hits[0].chunk.text)) + 1
    kept = fit_passages(hits, budget=3 * one)
    assert [p.n for p in kept] == [1, 2, 3]
    assert all(p.text == h.chunk.text for p, h in zip(kept, hits, strict=False))  # whole passages
    roomy = answer_prompt("问题？", hits, context_tokens=100_000, max_answer_tokens=512)
    assert len(roomy.passages) == 5 and roomy.dropped == 0
    tight = answer_prompt("问题？", hits, context_tokens=1024, max_answer_tokens=512)
    assert 1 <= len(tight.passages) < 5 and tight.dropped == 5 - len(tight.passages)
    assert [p.n for p in tight.passages] == list(range(1, len(tight.passages) + 1))
    assert tight.estimated_tokens + 512 <= 1024


def test_an_over_long_best_passage_is_cut_to_the_budget() -> None:
    [only] = fit_passages([_hit(1, "很长的资料" * 500)], budget=200)
    assert only.n == 1 and 100 < approx_tokens(render_passage(1, only.hit, only.text)) <= 200


# ---------------------------------------------------------------- follow-up rewriting

HISTORY = [
    {"role": "user", "content": "八宿县然乌镇然乌村的党支部书记是谁？"},
    {"role": "assistant", "content": "然乌村党支部书记是蒋雄。[1]"},
]


def test_followup_is_rewritten_by_the_llm(fake: FakeOpenAIServer, service: RagService) -> None:
    fake.script(Reply("改写后的问题：蒋雄带领然乌村发展了什么产业？"))
    assert service.rewrite_followup(HISTORY, "他带领村里发展了什么产业？") == "蒋雄带领然乌村发展了什么产业？"
    [request] = fake.requests
    system, user = request["body"]["messages"]
    assert "不依赖上下文" in system["content"]
    assert "用户：八宿县然乌镇然乌村的党支部书记是谁？" in user["content"] and "助手：然乌村党支部书记是蒋雄。" in user["content"]
    assert "[1]" not in user["content"]  # markers are not history
    assert "最后的问题：他带领村里发展了什么产业？" in user["content"]
    assert request["body"]["max_tokens"] == 128


def test_followup_rewrite_gives_none_when_it_cannot(fake: FakeOpenAIServer, service: RagService, extractive: RagService) -> None:
    assert extractive.rewrite_followup(HISTORY, "他是谁？") is None  # no LLM configured
    fake.script(Reply(status=500))
    assert service.rewrite_followup(HISTORY, "他是谁？") is None
    fake.script(Reply(""))
    assert service.rewrite_followup(HISTORY, "他是谁？") is None
    requests = len(fake.requests)
    assert service.rewrite_followup([], "  蒋雄是谁？ ") == "蒋雄是谁？"  # nothing to resolve: no call
    assert len(fake.requests) == requests


def test_followup_prompt_keeps_the_last_turns_only() -> None:
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"第{i}轮"} for i in range(10)]
    history.insert(0, {"role": "system", "content": "系统提示不应出现"})
    user = followup_messages(history, "那呢？")[1]["content"]
    assert "第3轮" not in user and "第4轮" in user and "第9轮" in user and "系统提示" not in user


def test_clean_rewrite() -> None:
    assert clean_rewrite("“然乌村在哪个县？”\n解释：……", 500) == "然乌村在哪个县？"
    assert clean_rewrite("谁写了《红楼梦》", 500) == "谁写了《红楼梦》"
    assert clean_rewrite("   ", 500) is None
    assert clean_rewrite("很长" * 300, 500) is None


def test_rewrite_followup_uses_a_given_client(fake: FakeOpenAIServer) -> None:
    client = LLMClient(LLMConfig(fake.base_url, max_retries=0), CircuitBreaker())
    fake.script(Reply("然乌村的党支部书记是谁？"))
    assert rewrite_followup(HISTORY, "那个村的书记呢？", llm=client) == "然乌村的党支部书记是谁？"


# ---------------------------------------------------------------- verification units


def test_splitter_is_the_same_whole_or_char_by_char() -> None:
    text = "昌都市有44名领导带头。[1][2] 全市建成项目1459个[3]。\n书记是蒋雄。【2】数字3.5很好。最后一句[1, 2]"
    whole = SentenceSplitter()
    expected = whole.feed(text) + whole.flush()
    incremental = SentenceSplitter()
    got: list[RawSentence] = []
    for char in text:
        got += incremental.feed(char)
    got += incremental.flush()
    assert got == expected
    assert [(s.text, s.markers) for s in got] == [
        ("昌都市有44名领导带头。", [1, 2]),
        ("全市建成项目1459个。", [3]),
        ("书记是蒋雄。", [2]),
        ("数字3.5很好。", []),
        ("最后一句", [1, 2]),
    ]


def test_sentence_waits_for_markers_after_the_full_stop() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("项目1459个。") == []
    assert splitter.feed("[") == []  # may be a marker
    assert splitter.feed("2]") == []
    [sentence] = splitter.feed("带")
    assert sentence.markers == [2]


def test_marker_stripper_holds_back_partial_markers() -> None:
    stripper = MarkerStripper()
    pieces = [stripper.feed(p) for p in ["项目", "1459个。[", "2", "][3]带", "动[注]"]] + [stripper.flush()]
    assert pieces[1] == "1459个。" and pieces[2] == ""
    assert "".join(pieces) == "项目1459个。带动[注]"
    assert marker_numbers("a[1]b［2］c【3、4】d[资料5][1]") == [1, 2, 3, 4, 5]


def test_numbers_compare_by_value() -> None:
    assert chinese_number("一千四百五十九") == 1459 and chinese_number("四十四") == 44 and chinese_number("十五") == 15
    values = passage_numbers("建成项目1459个，带动群众10.5万余人，八大电视台")
    assert {1459.0, 105000.0} <= set(values) and 8.0 not in values
    assert values[1459.0] == {"个"} and values[105000.0] == {"人"}
    facts = {f.text: f.value for f in sentence_facts("建成1,459个项目，带动10.5万人，四十四名领导，十分重要")}
    assert facts == {"1,459": 1459.0, "10.5万": 105000.0, "四十四": 44}


def test_facts_include_dates_and_names() -> None:
    facts = sentence_facts("2020年4月，老党员卓嘎介绍了情况。")
    assert ("date", "2020年4月") in [(f.kind, f.text) for f in facts]
    assert ("name", "卓嘎") in [(f.kind, f.text) for f in facts]
    assert all(f.kind != "number" for f in facts)  # 2020 and 4 are parts of the date


PASSAGES = [
    "八宿县然乌镇然乌村党支部书记蒋雄如是说。然乌村依托冰川旅游资源，带动群众增收。",
    "如今，在各级党组织的带领下，全市共建成村级集体经济项目1459个，带动群众10.5万余人增收致富。",
    "拉萨“三级”政务服务大厅自2020年4月面向公众运行以来，累计办理业务50余万件。",
]


def _verify(answer: str, embedder: Embedder) -> list[tuple[bool, str, list[int]]]:
    passages = [PromptPassage(n, _hit(n, text, "党建引领"), text) for n, text in enumerate(PASSAGES, 1)]
    return [(v.supported, v.rule, v.citations) for v in verify_answer(answer, passages, embedder.embed_passages)]


def test_verification_rules(embedder: Embedder) -> None:
    assert _verify("然乌村党支部书记是蒋雄。[1]", embedder) == [(True, "cited", [1])]
    assert _verify("然乌村党支部书记是张伟。[1]", embedder)[0][:2] == (False, "unsupported_name")
    assert _verify("政务服务大厅自2021年4月面向公众运行。[3]", embedder)[0][:2] == (False, "unsupported_date")
    assert _verify("全市共建成村级集体经济项目一千四百五十九个。[2]", embedder) == [(True, "cited", [2])]
    assert _verify("全市共建成村级集体经济项目1459项。[2]", embedder)[0][:2] == (False, "unsupported_number")  # 项 ≠ 个
    assert _verify("政务服务大厅自2020年4月面向公众运行。[3]", embedder) == [(True, "cited", [3])]
    assert _verify("全市共建成村级集体经济项目1459个。[3]", embedder) == [(True, "reattached", [2])]
    assert _verify("全市共建成村级集体经济项目1459个。", embedder) == [(True, "attached", [2])]
    assert _verify("月球表面的温差非常大，白天很热夜晚很冷。[2]", embedder)[0][:2] == (False, "low_lexical_overlap")
    assert _verify(f"{REFUSAL_PHRASE}。[1]", embedder) == [(True, "refusal", [])]


def test_verification_without_passages() -> None:
    [verdict] = verify_answer("全市共建成项目1459个。[1]", [], None)
    assert not verdict.supported and verdict.rule == "no_passages" and verdict.invalid_markers == [1]


def test_generative_composer_directly(fake: FakeOpenAIServer, extractive: RagService, hits: list[Hit]) -> None:
    """The composer works without the service too (same compose signature as the extractive one)."""
    client = LLMClient(LLMConfig(fake.base_url, max_retries=0), CircuitBreaker())
    fallback = extractive.extractive_composer()
    composer = GenerativeComposer(client, fallback, extractive.embedder.embed_passages, extractive.store.document)
    fake.script(Reply(f"{GOOD_1}[{number_of(hits, FACT)}]"))
    query_vector: np.ndarray = extractive.retriever().query_vector(QUESTION)
    answer = composer.compose(QUESTION, query_vector, hits)
    assert isinstance(answer, Answer) and answer.sentences[0].supported
    empty = composer.compose(QUESTION, query_vector, [])
    assert empty.refused and len(fake.requests) == 1  # no passages: no LLM call
