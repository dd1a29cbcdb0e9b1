"""Against a real OpenAI-compatible LLM server: runs only when RAG_LLM_BASE_URL is set
(see docs/llm.md), e.g.

    RAG_LLM_BASE_URL=http://127.0.0.1:11434/v1 RAG_LLM_MODEL=qwen2.5:3b python -m pytest -q tests/test_llm_integration.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.config import Settings
from rag.embedders import Embedder
from rag.generative import GenerativeComposer
from rag.service import RagService

pytestmark = pytest.mark.skipif(not os.environ.get("RAG_LLM_BASE_URL"), reason="RAG_LLM_BASE_URL is not set: no LLM server to test against")

# Faults of the server, not of the model's answer: these mean the setup is wrong.
SERVER_FAULTS = ("timeout", "connection_error", "http_", "malformed_output", "circuit_open", "llm_error")


@pytest.fixture(scope="module")
def service(seed_index_dir: Path, embedder: Embedder) -> RagService:
    return RagService(Settings(index_dir=seed_index_dir), embedder)  # RAG_LLM_* come from the environment


def test_llm_is_used(service: RagService) -> None:
    assert isinstance(service.composer(), GenerativeComposer)


def test_answers_are_generated_and_verified(service: RagService, seed_qa: list[dict]) -> None:
    answerable = [q for q in seed_qa if q["answerable"]][:4]
    found = 0
    for item in answerable:
        answer = service.ask(item["question"])
        assert not (answer.fallback_reason or "").startswith(SERVER_FAULTS), answer.fallback_reason
        numbers = {c.n for c in answer.citations}
        for sentence in answer.sentences:
            assert isinstance(sentence.supported, bool) and sentence.rule
            assert set(sentence.citations) <= numbers  # every kept marker has its citation
        found += any(gold in answer.answer for gold in item["answers"])
    assert found >= 1, "the LLM answered none of the seed questions with the gold answer"


def test_stream_forwards_tokens_then_the_answer(service: RagService, seed_qa: list[dict]) -> None:
    question = next(q for q in seed_qa if q["answerable"])["question"]
    events = list(service.ask_stream(question))
    assert events[-1]["type"] == "done"
    assert sum(e["type"] == "delta" for e in events) >= 1
    assert not (events[-1]["answer"].fallback_reason or "").startswith(SERVER_FAULTS)


def test_followup_rewrite(service: RagService) -> None:
    history = [
        {"role": "user", "content": "八宿县然乌镇然乌村的党支部书记是谁？"},
        {"role": "assistant", "content": "然乌村党支部书记是蒋雄。"},
    ]
    rewritten = service.rewrite_followup(history, "他带领村里发展了什么？")
    assert rewritten is not None and "他" not in rewritten[:2]
