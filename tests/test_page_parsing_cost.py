"""The page parser's work grows with the input, not with its square: the column reflow
segments only the seams that a dictionary word could span (issue 10's repro: 500 short
headed paragraphs took 133 s when every pair of paragraphs was run through jieba)."""

from __future__ import annotations

import pytest

import rag.tokenize
from rag import ingest
from tests.conftest import SEED_FILE


def headed_paragraphs(n: int) -> str:
    return "\n\n\n".join(f"标题{i}\n正文第{i}段，继续" for i in range(n))


@pytest.fixture
def seam_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every jieba segmentation the reflow asks for."""
    calls: list[str] = []
    segment = rag.tokenize.words

    def counted(text: str, hmm: bool = True) -> list[str]:
        calls.append(text)
        return segment(text, hmm)

    monkeypatch.setattr(rag.tokenize, "words", counted)
    ingest._continues_word.cache_clear()
    return calls


@pytest.mark.parametrize("n", [400, 4000])
def test_many_headed_paragraphs_need_no_pairwise_segmentation(seam_checks: list[str], n: int) -> None:
    docs = ingest.documents_from_text(headed_paragraphs(n), "h.txt")
    assert len(docs) == n and docs[7].title == "标题7" and docs[7].text == "正文第7段，继续"
    assert len(seam_checks) <= 5  # was n × n / 2


def test_the_seed_page_still_reflows_its_out_of_order_column(seam_checks: list[str]) -> None:
    docs = ingest.documents_from_text(SEED_FILE.read_text(encoding="utf-8"), SEED_FILE.name)
    courier = next(d for d in docs if d.title == "服务贴心 凝聚人心")
    assert "快递企业" in courier.text.replace("\n", "")  # 快递企 + 业 joined across the moved column
    assert 0 < len(seam_checks) < 50
    repeated = ingest.documents_from_text("\n\n\n".join([SEED_FILE.read_text(encoding="utf-8")] * 10), SEED_FILE.name)
    assert [d.text for d in repeated] == [d.text for d in docs] * 10
