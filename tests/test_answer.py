"""Extractive answers on the seed corpus (the reader's composer, the default, and the heuristic
one, RAG_READER=none): cited sentences, short answers, refusals."""

from __future__ import annotations

import re

import pytest

from rag.answer_types import AnswerType, question_type, typed_spans
from rag.compose import REFUSAL_MESSAGE
from rag.config import Settings
from rag.service import RagService
from tests.conftest import SEED_FILE

ORIGINAL = SEED_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def heuristic_service(seed_index_dir, embedder) -> RagService:  # type: ignore[no-untyped-def]
    return RagService(Settings(index_dir=seed_index_dir, reader="none"), embedder)


@pytest.mark.parametrize("composer", ["reader", "heuristic"])
def test_seed_dev_set(seed_service: RagService, heuristic_service: RagService, seed_qa: list[dict], composer: str) -> None:
    """Every answerable question: a citation quoting the evidence and a gold answer in the
    answer or short answer. Every unanswerable one: refused. Both composers."""
    service = seed_service if composer == "reader" else heuristic_service
    failures = []
    for item in seed_qa:
        answer = service.ask(item["question"])
        if not item["answerable"]:
            if not answer.refused:
                failures.append((item["id"], "not refused", answer.answer))
            continue
        quoted = any(item["evidence"] in c.quote for c in answer.citations)
        found = any(g in answer.answer or g in (answer.short_answer or "") for g in item["answers"])
        if answer.refused or not quoted or not found:
            failures.append((item["id"], answer.refused, answer.answer, answer.short_answer))
    assert failures == []


def test_citations_resolve_to_exact_quotes(seed_service: RagService) -> None:
    answer = seed_service.ask("白玛岗社区一共收集了多少个“微心愿”？")
    assert not answer.refused and answer.citations
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", answer.answer)]
    assert sorted(set(markers)) == [c.n for c in answer.citations]
    for citation in answer.citations:
        doc = seed_service.store.document(citation.doc_id)
        assert doc.text[citation.start : citation.end] == citation.quote
        assert citation.title == doc.title
        assert citation.chunk_id.startswith(citation.doc_id)
        # Back in the raw file, the quote is there too (modulo repaired line breaks).
        raw = ORIGINAL[citation.source_start : citation.source_end]
        assert re.sub(r"\s", "", raw) == re.sub(r"\s", "", citation.quote)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("昌都市有多少名市级以上领导带头抓党建促乡村振兴？", "44名"),
        ("“南骑士”志愿服务队聘用了多少名美团外卖骑手担任街道兼职网格员？", "18名"),
        ("八宿县然乌镇然乌村的党支部书记是谁？", "蒋雄"),
        ("拉萨“三级”政务服务大厅是从什么时候开始面向公众运行的？", "2020年4月"),
        ("昌都市全市共建成村级集体经济项目多少个？", "1459个"),
    ],
)
def test_heuristic_short_answers(heuristic_service: RagService, question: str, expected: str) -> None:
    assert heuristic_service.ask(question).short_answer == expected


def test_refusal_is_a_chinese_message_without_citations(seed_service: RagService) -> None:
    answer = seed_service.ask("林芝市的地区生产总值是多少？")
    assert answer.refused
    assert answer.answer == REFUSAL_MESSAGE and answer.citations == [] and answer.short_answer is None
    assert answer.passages  # what was looked at is still reported


def test_unrelated_question_is_refused(seed_service: RagService) -> None:
    assert seed_service.ask("量子计算机的工作原理是什么？").refused


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("阿里地区开展了多少期专题培训？", AnswerType.NUMBER),
        ("党支部书记是谁？", AnswerType.PERSON),
        ("大厅是从什么时候开始运行的？", AnswerType.DATE),
        ("段海深入哪个村？", AnswerType.PLACE),
        ("“金饭碗”是什么？", AnswerType.OTHER),
    ],
)
def test_question_types(question: str, kind: AnswerType) -> None:
    assert question_type(question) is kind


def test_years_are_not_quantities() -> None:
    spans = typed_spans("2023年以来,共排查16个组织", AnswerType.NUMBER)
    assert [s.text for s in spans] == ["16个"]


def test_open_questions_get_the_clause_that_answers_them() -> None:
    from rag.compose import short_answer

    sentence = "八宿县来古村党支部牢牢抓住冰川旅游“金饭碗”，带领群众开办来古村公益客栈、藏式茶馆。"
    assert short_answer("来古村党支部抓住的“金饭碗”是什么？", sentence) == "八宿县来古村党支部牢牢抓住冰川旅游“金饭碗”"


@pytest.mark.parametrize("reader", ["onnx", "none"])
def test_one_story_from_two_sites_is_said_once(tmp_path, embedder, reader: str) -> None:  # type: ignore[no-untyped-def]
    """The same article added from a PDF and a web page: the answer cited the same sentence
    twice, [1] from one and [2] from the other."""
    from rag.types import Document

    text = "第十届那曲赛马节8月9日在色尼区开幕，来自十一个县区的三百二十名骑手参加比赛。\n\n赛马节期间还举办了牦牛产品展销会，现场交易额达到一千二百万元。"
    copies = [
        Document(title="那曲市举办第十届赛马节", text=text, key="naqu.pdf#1", source="naqu.pdf"),
        Document(title="那曲市举办第十届赛马节", text=f"{text}\n\n责任编辑：卓玛", key="naqu.html#1", source="naqu.html"),
    ]
    service = RagService(Settings(index_dir=tmp_path / "index", reader=reader), embedder)
    service.add_documents(copies)
    assert len(service.store.documents()) == 2
    answer = service.ask("那曲赛马节现场交易额是多少？")
    quotes = [c.quote for c in answer.citations]
    assert quotes and len(quotes) == len(set(quotes)), answer.answer
    assert "一千二百万元" in answer.answer and answer.answer.count("现场交易额") == 1
