"""HTML → articles: the main content (trafilatura drops navigation, header, footer, sidebars),
then the plain-text page parser (titles, bylines, datelines, broken lines), with the page's
metadata: title, published date, author, canonical URL.

`Document.source_map` points into the extracted main text (the title line first), not into
the HTML: markup and boilerplate between the characters cannot be mapped back usefully.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.ingest import documents_from_text, looks_like_heading, visible_text
from rag.types import Document

# Footer lines that survive into the main content on some sites.
_BOILERPLATE_RE = re.compile(r"版权所有|©|copyright|all rights reserved|ICP[备证]|公网安备|未经.{0,6}授权.{0,6}(?:转载|使用)", re.I)
_BOILERPLATE_MAX = 100  # a longer line is article text that happens to mention copyright
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Only the page's markup (meta tags, <time>, JSON-LD, URL) dates an article: htmldate's extensive
# search would read the footer's "© 2024" as a publication date.
_DATE_PARAMS = {"extensive_search": False, "original_date": True, "outputformat": "%Y-%m-%d"}
_AUTHOR_META = ("author", "article:author", "byline", "dc.creator", "sailthru.author")


@dataclass
class Page:
    title: str | None
    text: str
    date: str | None
    url: str | None
    author: str | None


def documents_from_html(original: str, source: str) -> list[Document]:
    page = extract_page(original)
    title = page.title or Path(source).stem
    # The title as the first line, set apart, so the parser takes it as the article's title; a
    # title the parser would not take (long, or with clause punctuation) becomes the fallback.
    if page.title and looks_like_heading(page.title):
        docs = documents_from_text(f"{title}\n\n\n{page.text}", source, title)
    else:
        docs = documents_from_text(page.text, source, title)
    for doc in docs:
        doc.date = doc.date or page.date
        doc.url = doc.url or page.url
        doc.byline = doc.byline or page.author  # the parsed 本报记者 line, whose source the citations quote, wins
    return docs


def extract_page(original: str) -> Page:
    """Main text and metadata; the plain visible text when trafilatura finds no main content
    (it gives up on some tiny or unusual pages; then nav and footer may stay in)."""
    import trafilatura

    page = without_page_chrome(original)
    result = trafilatura.bare_extraction(page, with_metadata=True, include_comments=False, include_tables=True, date_extraction_params=_DATE_PARAMS)
    body = None if result is None or result.body is None else _body_text(result.body, result.title)
    if body and "\n" not in body:
        body = _with_block_breaks(body, page)
    if not body:
        fallback_title, body = visible_text(original)
        return Page(fallback_title or None, _drop_boilerplate(body), None, None, _author(original))
    date = result.date if result.date and _ISO_DATE_RE.match(result.date) else None
    return Page(result.title or None, body, date, result.url or None, result.author or _author(original))


_CHROME_XPATH = (
    "//nav | //aside | //*[@role='navigation' or @role='banner' or @role='contentinfo' or @role='complementary']"
    " | //header[not(ancestor::article or ancestor::main)] | //footer[not(ancestor::article or ancestor::main)]"
)


def without_page_chrome(original: str) -> str:
    """The page without the elements HTML itself marks as site chrome (nav, aside, the page's
    header and footer; an article's own header and footer stay). trafilatura drops them on a
    full page but keeps them on a small one, where its fallback takes all visible text
    (「首页 | 新闻 | 联系我们」 became the title of a two-paragraph news page)."""
    import lxml.html

    try:
        tree = lxml.html.document_fromstring(original)
    except (ValueError, lxml.etree.ParserError):
        return original
    for element in tree.xpath(_CHROME_XPATH):
        if element.getparent() is not None:
            element.drop_tree()
    return lxml.html.tostring(tree, encoding="unicode")


def _with_block_breaks(body: str, page: str) -> str:
    """trafilatura's baseline, which it falls back to on a short page (one whose 来源 line sits in
    a class="meta" paragraph it discards), runs every block into one paragraph with spaces:
    headline, source line and paragraphs in one run, cited as one sentence. Where the page's
    visible text has exactly those characters, its block breaks are kept."""
    title, visible = visible_text(page)
    if "\n" in visible and _squeezed(body) in (_squeezed(visible), _squeezed(title + visible)):
        return _drop_boilerplate(visible)
    return body


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _body_text(body: Any, title: str | None) -> str:
    """trafilatura's XML (head, p, list/item, table/row/cell, quote, code) as lines with a blank
    line between blocks; the heading that repeats the title and copyright lines are dropped."""
    lines: list[str] = []
    for element in body:
        if element.tag == "list":
            lines.extend(line for item in element if item.tag == "item" for line in _lines(item))
        elif element.tag == "table":
            lines.extend(" ".join(" ".join(_lines(cell)) for cell in row if cell.tag == "cell") for row in element if row.tag == "row")
        else:
            lines.extend(_lines(element))
    lines = [line for line in lines if line]
    if lines and title and lines[0] == " ".join(title.split()):
        lines = lines[1:]
    return _drop_boilerplate("\n\n".join(lines))


def _lines(element: Any) -> list[str]:
    """An element's text, a line per line break (trafilatura's fallback puts a tiny page's
    blocks into one element, one per line), spaces collapsed."""
    return [" ".join(line.split()) for line in "".join(element.itertext()).split("\n")]


def _drop_boilerplate(text: str) -> str:
    lines = [line for line in text.split("\n") if not (_BOILERPLATE_RE.search(line) and len(line) <= _BOILERPLATE_MAX)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _author(original: str) -> str | None:
    """The author from meta tags or JSON-LD. trafilatura drops names without a space, which
    is every Chinese name (次仁卓嘎), so it is read here too."""
    import lxml.html

    try:
        tree = lxml.html.fromstring(original)
    except (ValueError, lxml.etree.ParserError):
        return None
    for name in _AUTHOR_META:
        for content in tree.xpath(f"//meta[@name='{name}' or @property='{name}']/@content"):
            if content.strip():
                return content.strip()
    for script in tree.xpath("//script[@type='application/ld+json']/text()"):
        author = _json_ld_author(script)
        if author:
            return author
    return None


def _json_ld_author(script: str) -> str | None:
    try:
        data = json.loads(script)
    except json.JSONDecodeError:
        return None
    for item in data if isinstance(data, list) else [data]:
        author = item.get("author") if isinstance(item, dict) else None
        author = author[0] if isinstance(author, list) and author else author
        name = author.get("name") if isinstance(author, dict) else author
        if isinstance(name, str) and name.strip():
            return name.strip()
    return None
