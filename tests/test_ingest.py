"""Article splitting, line repair and offset maps on the seed page; other file formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.ingest import IngestError, documents_from_text, load_documents
from rag.text import normalize_width, sentence_spans
from tests.conftest import SEED_FILE

ORIGINAL = SEED_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def seed_docs():
    return {d.title: d for d in load_documents(SEED_FILE)}


def test_seed_page_splits_into_its_articles(seed_docs) -> None:
    assert list(seed_docs) == [
        "藏东披锦绣 田畴奏强音",
        "多举措增强基层党组织政治功能和组织功能",
        "林芝市委组织部 开展“三访”解民忧办实事",
        "林芝市巴宜区白玛岗街道白玛岗社区 在职党员“双报到”工作取得实效",
        "服务贴心 凝聚人心",
        "党建促业务 业务强党建",
    ]


def test_bylines_datelines_and_subtitles(seed_docs) -> None:
    changdu = seed_docs["藏东披锦绣 田畴奏强音"]
    assert changdu.byline == "万慧"
    assert changdu.subtitle == "昌都市以党建引领助推乡村振兴走笔"
    ali = seed_docs["多举措增强基层党组织政治功能和组织功能"]
    assert ali.dateline == "本报拉萨讯(记者 耿晓仙)"
    assert ali.byline == "耿晓仙"
    assert seed_docs["服务贴心 凝聚人心"].byline == "扎西顿珠"
    # Section headings stay inside their article instead of starting new ones.
    assert "固本—— 建强“红色支部花”" in changdu.text


def test_broken_lines_are_joined(seed_docs) -> None:
    changdu = seed_docs["藏东披锦绣 田畴奏强音"].text
    assert "比较单一" in changdu
    assert "先后荣获了全国先进基层党组织" in changdu
    assert "比\n" not in changdu


def test_out_of_order_column_is_moved_to_its_article(seed_docs) -> None:
    shigatse = seed_docs["服务贴心 凝聚人心"].text
    lhasa = seed_docs["党建促业务 业务强党建"].text
    assert "全市共有快递企业(含网点)40家" in shigatse
    assert shigatse.index("全国组织工作会议强调") < shigatse.index("南骑士")
    assert "快递" not in lhasa


def test_lead_quote_above_a_headline_joins_that_article(seed_docs) -> None:
    shigatse = seed_docs["服务贴心 凝聚人心"].text
    assert shigatse.startswith("“我将立足岗位")
    assert "阿旺洛桑" not in seed_docs["林芝市巴宜区白玛岗街道白玛岗社区 在职党员“双报到”工作取得实效"].text


def test_offsets_map_back_to_the_original_exactly(seed_docs) -> None:
    for doc in seed_docs.values():
        covered = 0
        for seg in doc.source_map:
            assert doc.text[seg.doc_start : seg.doc_start + seg.length] == ORIGINAL[seg.orig_start : seg.orig_start + seg.length]
            covered += seg.length
        # Everything except the paragraph separators we insert comes from the file.
        assert covered == len(doc.text) - 2 * doc.text.count("\n\n")
        for i, char in enumerate(doc.text):
            if char != "\n":
                assert ORIGINAL[doc.source_offset(i)] == char


def test_joined_word_maps_to_both_sides_of_the_break(seed_docs) -> None:
    doc = seed_docs["藏东披锦绣 田畴奏强音"]
    at = doc.text.index("比较单一")
    left, right = doc.source_offset(at), doc.source_offset(at + 1)
    assert ORIGINAL[left] == "比" and ORIGINAL[right] == "较"
    assert ORIGINAL[left + 1 : right].strip() == ""


def test_document_ids_are_content_hashes(seed_docs) -> None:
    again = {d.title: d.doc_id for d in load_documents(SEED_FILE)}
    assert again == {t: d.doc_id for t, d in seed_docs.items()}
    edited = documents_from_text(ORIGINAL.replace("卓嘎", "卓玛"), SEED_FILE.name)
    assert edited[0].doc_id != seed_docs["藏东披锦绣 田畴奏强音"].doc_id
    assert edited[0].key == seed_docs["藏东披锦绣 田畴奏强音"].key


def test_width_normalisation_is_for_matching_only() -> None:
    assert normalize_width("（ＡＢＣ１２３），") == "(abc123),"
    assert normalize_width("党建") == "党建"
    assert len(normalize_width("“引号”（括号）")) == len("“引号”（括号）")


def test_sentence_spans_split_on_chinese_punctuation() -> None:
    text = "第一句。第二句！“第三句？”第四句；\n第五句"
    assert [text[s:e] for s, e in sentence_spans(text)] == ["第一句。", "第二句！", "“第三句？”", "第四句；", "第五句"]


def test_html_keeps_visible_text_only(tmp_path: Path) -> None:
    page = tmp_path / "a.html"
    page.write_text(
        "<html><head><title>标题</title><style>p{color:red}</style></head>"
        "<body><h1>林芝新闻</h1><script>alert('x')</script><p>林芝市开展“三访”。</p></body></html>",
        encoding="utf-8",
    )
    [doc] = load_documents(page)
    assert doc.title == "林芝新闻"
    assert doc.text == "林芝市开展“三访”。"


def test_markdown_heading_becomes_title_and_offsets_hold(tmp_path: Path) -> None:
    raw = "# 拉萨新闻\n\n拉萨市政务服务大厅自2020年4月面向公众运行。\n"
    path = tmp_path / "n.md"
    path.write_text(raw, encoding="utf-8")
    [doc] = load_documents(path)
    assert doc.title == "拉萨新闻"
    seg = doc.source_map[0]
    assert raw[seg.orig_start : seg.orig_start + seg.length] == doc.text


def test_jsonl_records(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"title": "甲", "text": "甲文。", "date": "2024-01-02", "url": "http://x/1"}\n\n{"title": "乙", "text": "乙文。"}\n',
        encoding="utf-8",
    )
    docs = load_documents(path)
    assert [(d.title, d.date, d.key) for d in docs] == [("甲", "2024-01-02", "http://x/1"), ("乙", None, "a.jsonl#乙")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"title": "甲", "text": "x"}\n{"title": 3, "text": "y"}\n', "bad.jsonl:2: missing or empty 'title'"),
        ("bad2.jsonl", "{not json}\n", "bad2.jsonl:1: invalid JSON"),
        ("empty.txt", "  \n\n", "file is empty"),
        ("a.doc", "x", "unsupported file type"),
        ("a.pdf", "x", "not a readable PDF"),
    ],
)
def test_bad_files_have_one_line_reasons(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(IngestError, match=message.replace("(", r"\(")) as err:
        load_documents(path)
    assert "\n" not in str(err.value)


def test_gbk_is_read_and_binary_is_rejected(tmp_path: Path) -> None:
    """GBK text used to be refused as "not valid UTF-8"; it is detected now (tests/test_formats.py)."""
    path = tmp_path / "gbk.txt"
    path.write_bytes("党建引领\n\n党建引领乡村振兴，各地持续推进基层组织建设。".encode("gbk"))
    [doc] = load_documents(path)
    assert (doc.title, doc.text, doc.meta["encoding"]) == ("党建引领", "党建引领乡村振兴，各地持续推进基层组织建设。", "gb18030")
    path.write_bytes(b"\x00\x01\x02binary\x00")
    with pytest.raises(IngestError, match="binary file"):
        load_documents(path)
