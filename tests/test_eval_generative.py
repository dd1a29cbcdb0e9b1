"""The evaluation harness on the generative composer: with an LLM configured (here the
in-repo fake that speaks the OpenAI protocol), reports carry the supported-sentence rate
and citation metrics of what the LLM wrote."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.config import Settings
from rag.embedders import Embedder
from rag.eval.harness import InProcessAnswerer, evaluate
from rag.service import RagService
from tests.conftest import SEED_QA
from tests.fake_openai_server import FakeOpenAIServer, Reply

PASSAGE_RE = re.compile(r"^\[(\d+)\] 《[^》]*》[^\n]*\n(.+?)(?=\n\[\d+\] 《|\Z)", re.M | re.S)


def copy_first_sentence_then_invent(body: dict[str, Any]) -> Reply:
    """A model that quotes passage [1]'s first sentence (supported), then adds a sentence
    with a number no passage contains (unsupported)."""
    prompt = "\n".join(m["content"] for m in body["messages"])
    n, text = PASSAGE_RE.search(prompt).groups()
    first = re.match(r".+?[。！？]", text.strip(), re.S)
    sentence = (first.group() if first else text.strip()[:60]).strip()
    return Reply(f"{sentence}[{n}]另外还有98765个项目。[{n}]")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def test_report_has_supported_sentence_rate_for_llm_answers(
    fake: FakeOpenAIServer, seed_index_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    fake.script(*[copy_first_sentence_then_invent] * 40)
    settings = Settings(index_dir=seed_index_dir, llm_base_url=fake.base_url, llm_model="fake-model", llm_max_retries=0, llm_timeout_s=5)
    dataset = tmp_path / "answerable.jsonl"
    rows = [json.loads(line) for line in SEED_QA.read_text(encoding="utf-8").splitlines()][:4]
    dataset.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")

    report = evaluate(dataset, InProcessAnswerer(RagService(settings, embedder)), warmup=0)
    answer = report.metrics["answer"]
    # Each LLM answer had one quoted and one invented sentence; an answer whose quote failed
    # verification fell back to extractive sentences (all supported). So: at least half,
    # and never all, of the judged sentences are supported; the invented ones are counted
    # even though the answer text leaves them out.
    rows = report.questions
    judged = sum(r["flagged_sentences"] for r in rows)
    assert judged > len(rows)
    assert 0.5 <= answer["supported_sentence_rate"] < 1.0
    assert answer["supported_sentence_rate"] == pytest.approx(sum(r["supported_sentences"] for r in rows) / judged, abs=1e-4)
    assert answer.get("fallback_rate", 0.0) < 0.5  # reported only when some answer fell back
    assert 0.0 <= report.metrics["citation"]["precision"] <= 1.0
    assert len(fake.requests) >= 4
