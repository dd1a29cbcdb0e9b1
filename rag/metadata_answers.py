"""Questions about an article itself: who wrote it, who took its photos, when and where it
was filed, which paper ran it, what its title is.

The answers come from the document's metadata (parsed from the page's byline, dateline,
headline and credit lines, or given by the file: JSON-lines fields, HTML and Word
properties), never guessed from the body. Each answer sentence cites the line the value
was read from, with its offsets in the raw file, or the stored field when the file gave the
value directly. A metadata question the articles cannot answer is refused with a message
that says what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from rag.compose import coverage, weighted_query_terms
from rag.text import match_form
from rag.types import Answer, AnswerSentence, Citation, Document, Hit

# A question must point at the article (or ask for a reporter) before a metadata cue counts:
# 「《红楼梦》是谁写的？」 and 「这款游戏什么时候发布？」 are questions about the body.
_ARTICLE = re.compile(r"报道|文章|新闻|稿件|消息|通讯|本文|该文|此文|这篇|那篇|该篇|本篇|原文")
# Only a question about "this article" is refused when no article has the field; others may
# be about the body after all (「…由哪家报纸独家报道？」) and go on to the composer.
_THIS_ARTICLE = re.compile(r"这篇|那篇|该篇|本篇|本文|该文|此文|这则|这条")
_FIELD_CUES: list[tuple[str, re.Pattern[str], bool]] = [  # (field, cue, needs an article reference)
    ("credit", re.compile(r"(?:照片|图片|配图|图)\S{0,8}?(?:谁|哪位|哪个)\S{0,4}?(?:拍|摄)|摄影(?:记者|师)?(?:是谁|叫什么)|谁(?:拍|摄)的"), False),
    ("byline", re.compile(r"哪[位个名]记者|什么记者|记者(?:是谁|叫什么|姓名)"), False),
    ("byline", re.compile(r"谁(?:写|采写|撰写|报道)的|作者(?:是谁|叫什么|是哪位)|由谁(?:撰写|采写|执笔|报道)|撰稿人|出自谁"), True),
    ("date", re.compile(r"(?:什么时候|何时|哪天|哪一天|几月几日|几号|哪年|哪一年)\S{0,4}?(?:发布|发表|刊发|刊登|刊出|见报|登出|发出|报道|出版)"), True),
    ("date", re.compile(r"(?:发布|发表|刊发|刊登|出版|见报)(?:的)?(?:日期|时间)|日期是"), True),
    ("dateline", re.compile(r"(?:从|在)?(?:哪里|哪儿|何地|什么地方|哪个地方|哪座城市)\S{0,3}?(?:发出|发来|发稿|采写|报道)|发自(?:哪里|何地)|电头"), True),
    ("source", re.compile(r"哪[家个份](?:报纸|媒体|报社|报|网站)|什么(?:报纸|媒体|报)"), False),
    ("source", re.compile(r"(?:来源|出处)(?:是|是什么)"), True),
    ("title", re.compile(r"(?:标题|题目|篇名)(?:是什么|叫什么|是)|什么(?:标题|题目)"), True),
]
_META_WORDS = re.compile(
    r"这篇|那篇|该篇|本篇|该文|本文|此文|报道|文章|新闻|稿件|消息|通讯|原文|记者|作者|撰稿人|照片|图片|配图|摄影|标题|题目|"
    r"写的|撰写|采写|执笔|发布|发表|刊发|刊登|刊出|见报|发出|发来|发稿|日期|时间|报纸|媒体|报社|网站|来源|出处|电头|拍摄|拍|摄"
)
_DATELINE_PLACE = re.compile(r"本报(?:驻\S{1,4}?记者站)?(?P<place>\S{1,8}?)(?:\d{1,2}月\d{1,2}日)?[讯电]")
_CREDIT_NAME = re.compile(r"记者\s*(?P<name>.+?)\s*摄")
_MISSING = {
    "byline": "资料中没有写明{which}的作者或记者。",
    "credit": "资料中没有写明{which}的图片作者。",
    "date": "资料中没有写明{which}的发布日期。",
    "dateline": "资料中没有写明{which}的发稿地点（电头）。",
    "source": "资料中没有写明{which}出自哪家报纸或媒体。",
    "title": "资料中没有找到{which}的标题。",
}
_MAX_ARTICLES = 3  # a question that names no article gets the metadata of the top few


@dataclass(frozen=True)
class MetaQuestion:
    field: str
    subject: str  # the question without its metadata words: what picks the article
    this_article: bool  # 这篇报道…: refused, not handed on, when the field is missing


@dataclass(frozen=True)
class FieldValue:
    value: str  # the short answer
    quote: str  # what the value was read from
    source_start: int | None = None
    source_end: int | None = None
    text_start: int | None = None  # the quote is document text[text_start:...] (datelines)


def meta_question(question: str) -> MetaQuestion | None:
    """The metadata field a question asks for, or None for a question about the body."""
    q = match_form(question)
    names_article = bool(_ARTICLE.search(q))
    for field, cue, needs_article in _FIELD_CUES:
        if cue.search(q) and (names_article or not needs_article):
            return MetaQuestion(field, _META_WORDS.sub(" ", cue.sub(" ", q)), bool(_THIS_ARTICLE.search(q)))
    return None


def field_value(doc: Document, field: str) -> FieldValue | None:
    """The value of `field` in `doc`, with the line it came from; None when it has none."""
    lines = doc.meta.get("fields", {}) if isinstance(doc.meta, dict) else {}
    line = lines.get(field)
    value = _value(doc, field, line["quote"] if line else None)
    if not value:
        return None
    if line is None or value not in line["quote"]:
        return FieldValue(value, value)
    quote = line["quote"]
    text_start = doc.text.find(quote) if field in ("dateline", "byline") else -1
    return FieldValue(value, quote, line["source_start"], line["source_end"], text_start if text_start >= 0 else None)


def _value(doc: Document, field: str, line: str | None) -> str | None:
    if field == "byline":
        return doc.byline
    if field == "title":  # a page without a headline is titled after its file: not a title
        return doc.title if line is not None or doc.title != PurePath(doc.source).stem else None
    if field == "date":
        return doc.date
    if field == "dateline":
        return _group(_DATELINE_PLACE, doc.dateline or "", "place")
    if field == "credit":
        return _group(_CREDIT_NAME, line or "", "name")
    if field == "source":
        return publisher(doc)
    return None


def _group(pattern: re.Pattern[str], text: str, name: str) -> str | None:
    """A named group matched on the match form (本報拉薩訊 too), sliced from `text` as written."""
    match = pattern.search(match_form(text))
    return text[match.start(name) : match.end(name)] if match else None


def publisher(doc: Document) -> str | None:
    """The paper or site the article came from, when the file said so (not a file name)."""
    named = doc.meta.get("publisher") if isinstance(doc.meta, dict) else None
    if isinstance(named, str) and named.strip():
        return named.strip()
    source = (doc.source or "").strip()
    if not source or source == "api" or PurePath(source).suffix or ":" in source or "/" in source:
        return None
    return source


def answer_sentence(doc: Document, field: str, value: FieldValue) -> str:
    title = f"《{doc.title}》"
    return {
        "byline": f"{title}的记者（作者）是{value.value}。",
        "credit": f"{title}的图片由{value.value}拍摄。",
        "date": f"{title}发布于{value.value}。",
        "dateline": f"{title}是从{value.value}发出的报道（电头“{value.quote}”）。",
        "source": f"{title}出自{value.value}。",
        "title": f"这篇报道的标题是{title}。",
    }[field]


class MetadataAnswerer:
    """Answers metadata questions from the retrieved articles; None hands the question on."""

    def __init__(self, document: Callable[[str], Document | None]) -> None:
        self.document = document

    def answer(self, question: str, hits: list[Hit]) -> Answer | None:
        asked = meta_question(question)
        if asked is None:
            return None
        docs = self.articles(asked, hits)
        found = [(doc, value) for doc in docs if (value := field_value(doc, asked.field)) is not None]
        if not found:
            if not asked.this_article or not docs:
                return None  # maybe a question about the body after all: the composer decides
            which = f"《{docs[0].title}》" if len(docs) == 1 else "这些报道"
            return Answer(question, _MISSING[asked.field].format(which=which), None, True, passages=hits, confidence=0.0)
        return self.cited_answer(question, asked.field, found[:_MAX_ARTICLES], hits)

    def articles(self, asked: MetaQuestion, hits: list[Hit]) -> list[Document]:
        """The article the question names (best subject coverage), or the top few if it names none."""
        seen: dict[str, Document] = {}
        for hit in hits:
            doc = self.document(hit.chunk.doc_id)
            if doc is not None:
                seen.setdefault(doc.doc_id, doc)
        docs = list(seen.values())
        terms = weighted_query_terms(asked.subject)
        if not terms or not docs:
            return docs if len(docs) <= 1 else [d for d in docs if field_value(d, asked.field)][:_MAX_ARTICLES] or docs[:1]
        scores = [coverage(terms, d.text, d.title) for d in docs]
        best = max(scores)
        return [docs[scores.index(best)]] if best > 0 else docs[:1]

    def cited_answer(self, question: str, field: str, found: list[tuple[Document, FieldValue]], hits: list[Hit]) -> Answer:
        citations, sentences = [], []
        for n, (doc, value) in enumerate(found, 1):
            citations.append(citation(n, doc, field, value))
            sentences.append(AnswerSentence(answer_sentence(doc, field, value), [n], True, "metadata"))
        text = "".join(f"{s.text}[{s.citations[0]}]" for s in sentences)
        short = found[0][1].value if len(found) == 1 else None
        return Answer(question, text, short, False, citations, hits, sentences, confidence=1.0)


def citation(n: int, doc: Document, field: str, value: FieldValue) -> Citation:
    if value.text_start is not None:  # the dateline is article text: cite it there
        start = value.text_start
        return Citation(
            n, doc.doc_id, doc.title, "", start, start + len(value.quote), value.quote, 1.0, value.source_start, value.source_end
        )
    at = value.quote.find(value.value)
    return Citation(
        n, doc.doc_id, doc.title, "", at, at + len(value.value), value.quote, 1.0, value.source_start, value.source_end, field=field
    )
