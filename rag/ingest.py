"""Turn files into articles: a newspaper page is split into articles, broken lines are
repaired, and every character keeps a pointer back into the raw file."""

from __future__ import annotations

import datetime as dt
import html.parser
import itertools
import json
import re
from collections.abc import Container
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from rag.text import CLOSING_QUOTES, SENTENCE_END, is_cjk, match_form
from rag.types import Document, SourceSegment


class IngestError(ValueError):
    """A file that cannot become documents; the message is meant for the user."""


# Must list the suffixes of rag/formats/registry.py FORMAT_OF_SUFFIX (tests/test_formats.py checks).
SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".jsonl", ".pdf", ".docx")
MAX_FILE_BYTES = 50 * 1024 * 1024

_BYLINE_RE = re.compile(r"^本报(?:特约)?记者\s*(?P<name>[^\s摄]+(?:\s+[^\s摄]+)*?)\s*$")
_CREDIT_RE = re.compile(r"^本报(?:特约)?记者\s*\S+(?:\s+\S+)*\s*摄$")
_DATELINE_RE = re.compile(r"^(?P<dateline>本报\S{1,8}?[讯电]\s*[(（]\s*记者\s*(?P<name>[^)）]+?)\s*[)）])")
_CAPTION_RE = re.compile(r"^图[①-⑳\d]*[:：]")
# A publication date, perhaps with a weekday or a time (matched on the match form: ２０２４ too),
# e.g. 2024年4月8日, 2024-04-08 10:30, 2024/4/8 星期一.
_DATE_TEXT = (
    r"(?P<year>\d{4})\s*(?:年|[-/.])\s*(?P<month>\d{1,2})\s*(?:月|[-/.])\s*(?P<day>\d{1,2})\s*日?"
    r"(?:\s*(?:星期|周)[一二三四五六日天])?(?:\s*\d{1,2}[:：]\d{2}(?:[:：]\d{2})?)?"
)
_DATE_RE = re.compile(rf"^{_DATE_TEXT}$")
_TRAILING_DATE_RE = re.compile(rf"\s+(?={_DATE_TEXT}$)")  # 来源：新华网 2024-05-18
# The labelled fields news sites print under a headline, in segments apart by | or wide spaces:
# 来源：西藏日报　发布时间：2024-05-18 09:30, 2024-05-18 10:30 | 来源：新华网 | 作者：张三.
_DATE_LABELS = ("发布时间", "发布日期", "发表时间", "更新时间", "时间", "日期")
_BYLINE_LABELS = ("作者", "记者", "撰稿")
_SOURCE_LABELS = ("来源", "出处")
_OTHER_LABELS = ("责任编辑", "编辑", "通讯员", "浏览次数", "阅读量", "点击数", "浏览", "阅读", "点击", "字号", "字体")
_META_LABELS = "|".join(sorted((*_DATE_LABELS, *_BYLINE_LABELS, *_SOURCE_LABELS, *_OTHER_LABELS), key=len, reverse=True))
_META_FIELD = rf"(?P<label>{_META_LABELS})\s*[:：]\s*(?P<value>\S.*?)\s*(?=(?:{_META_LABELS})\s*[:：]|$)"
_META_FIELD_RE = re.compile(_META_FIELD)
_META_SEGMENT_RE = re.compile(rf"(?:{_META_FIELD})+|【[^】]*】|\[[^\]]*\]")  # 【字号 大 中 小】 is page furniture
_META_SEGMENTS_RE = re.compile(r"(?:(?![|｜丨]|\s{2}).)+")
_CLAUSE_PUNCT = "，,、：:；;"
_TERMINAL = SENTENCE_END + CLOSING_QUOTES + "—-"
_TITLE_MAX = 40
_NAME_MAX = 20  # characters of a source or author name in a meta line


@dataclass
class Paragraph:
    """A paragraph as a list of raw-file slices; several after a broken line is joined."""

    segments: list[tuple[int, int]]
    gap_before: int  # blank lines before it in the raw file
    raw: str = ""
    kind: str = "body"  # body | title | subtitle | byline | credit | caption | meta

    def text(self, original: str) -> str:
        return "".join(original[s:e] for s, e in self.segments)

    @cached_property
    def meta(self) -> dict[str, tuple[int, int]] | None:
        """What the line gives as a meta line (`meta_fields`), None for any other line."""
        return meta_fields(self.folded)

    @cached_property
    def folded(self) -> str:
        """`raw` in the match form: bylines and datelines are recognised in either script
        (本报记者 / 本報記者); names are sliced from `raw` at the same offsets."""
        return match_form(self.raw)

    def group(self, match: re.Match[str], name: str) -> str:
        return self.raw[match.start(name) : match.end(name)]


@dataclass
class Article:
    title: Paragraph | None = None
    subtitle: str | None = None
    byline: str | None = None
    dateline: str | None = None
    date: str | None = None  # YYYY-MM-DD, from a meta line (a date alone, or labelled fields)
    publisher: str | None = None  # a meta line's 来源
    credits: list[str] = field(default_factory=list)
    body: list[Paragraph] = field(default_factory=list)
    # raw-file spans of the lines the metadata was read from: {"byline": (start, end), ...}
    lines: dict[str, tuple[int, int]] = field(default_factory=dict)


# ---------------------------------------------------------------- paragraphs


def split_paragraphs(original: str) -> list[Paragraph]:
    """Non-blank lines become paragraphs (whitespace trimmed, offsets kept)."""
    paragraphs: list[Paragraph] = []
    blank_run = 0
    pos = 0
    for line in original.splitlines(keepends=True):
        stripped = line.strip()
        if not stripped:
            blank_run += 1
        else:
            start = pos + line.index(stripped[0])
            end = start + len(stripped)
            paragraphs.append(Paragraph([(start, end)], blank_run, stripped))
            blank_run = 0
        pos += len(line)
    return paragraphs


def classify(p: Paragraph) -> str:
    text = p.raw
    if _CREDIT_RE.match(p.folded):
        return "credit"
    if _BYLINE_RE.match(p.folded):
        return "byline"
    if text.startswith("——") and len(text) <= _TITLE_MAX + 10:
        return "subtitle"
    if _CAPTION_RE.match(p.folded):
        return "caption"
    if p.meta:  # a date alone is short and unpunctuated, but no headline
        return "meta"
    if looks_like_heading(text):
        return "heading"
    return "body"


def looks_like_heading(text: str) -> bool:
    """Short, no clause punctuation, not a quotation: a title or section heading."""
    if len(text) > _TITLE_MAX or text.startswith(("“", '"', "「")):
        return False
    return not (any(c in text for c in _CLAUSE_PUNCT) or text[-1] in SENTENCE_END)


def publication_date(text: str) -> str | None:
    """YYYY-MM-DD when the (match-form) text is only a real calendar date, perhaps with a
    weekday or a time."""
    match = _DATE_RE.match(text.strip())
    if match is None:
        return None
    try:
        return dt.date(int(match["year"]), int(match["month"]), int(match["day"])).isoformat()
    except ValueError:
        return None


def meta_fields(line: str) -> dict[str, tuple[int, int]] | None:
    """A (match-form) line made only of a publication date and labelled fields (来源, 发布时间,
    作者, 编辑, ...), in segments apart by | or wide spaces: {"date" | "byline" | "source": (start,
    end) of the first such value in the line}; None for any other line, a date that is no
    calendar day, or a line that gives none of the three."""
    found: dict[str, tuple[int, int]] = {}
    for segment in _META_SEGMENTS_RE.finditer(line):
        text = segment.group().strip()
        if not text:
            continue
        offset = segment.start() + segment.group().index(text)
        if publication_date(text):
            found.setdefault("date", (offset, offset + len(text)))
            continue
        if not _META_SEGMENT_RE.fullmatch(text):
            return None
        for match in _META_FIELD_RE.finditer(text):
            name, value, (start, end) = _meta_name(match["label"]), match["value"], match.span("value")
            if name is None:  # 编辑, 浏览次数, ...: allowed on the line, not kept
                continue
            if name == "date" and not publication_date(value):
                return None
            if name != "date" and not _looks_like_name(value):
                return None  # 记者：今年全区公路建设有哪些重点？ is an interview's question
            if name != "date" and (after := _TRAILING_DATE_RE.search(value)) and publication_date(value[after.end() :]):
                found.setdefault("date", (offset + start + after.end(), offset + end))  # 来源：新华网 2024-05-18
                end = start + after.start()
            found.setdefault(name, (offset + start, offset + end))
    return found or None


def _looks_like_name(value: str) -> bool:
    """A source or author as such lines give it: short, no sentence punctuation (a date may follow)."""
    name = _TRAILING_DATE_RE.split(value, maxsplit=1)[0]
    return len(name) <= _NAME_MAX and not any(c in name for c in "。.?!;；,、")


def _meta_name(label: str) -> str | None:
    if label in _DATE_LABELS:
        return "date"
    if label in _BYLINE_LABELS:
        return "byline"
    return "source" if label in _SOURCE_LABELS else None


def names_the_article(line: str) -> bool:
    """A byline, photo credit, dateline or meta line: the article's own, however often it recurs."""
    folded = match_form(line.strip())
    return any(r.match(folded) for r in (_BYLINE_RE, _CREDIT_RE, _DATELINE_RE)) or meta_fields(folded) is not None


def is_dangling(p: Paragraph) -> bool:
    """A body paragraph that stops mid-sentence (the page broke the line)."""
    text = p.raw
    if p.kind != "body" or text[-1] in _TERMINAL:
        return False
    unclosed_quote = text.count("“") > text.count("”")
    return unclosed_quote or any(c in text for c in _CLAUSE_PUNCT) or len(text) > _TITLE_MAX


# ---------------------------------------------------------------- articles


def find_title_indexes(paragraphs: list[Paragraph]) -> list[int]:
    """Headings that start an article: followed by a byline/dateline, or set apart by blank lines.

    Section headings inside an article (e.g. 「固本—— 建强…」) have neither.
    """
    titles: list[int] = []
    for i, p in enumerate(paragraphs):
        if p.kind != "heading":
            continue
        following = paragraphs[i + 1 : i + 3]
        has_byline = any(q.kind == "byline" or _DATELINE_RE.match(q.folded) for q in following)
        # A date or source line under it marks a headline only where no text comes before it (a
        # paper's running head may): in running text a short line over 时间：… is a heading.
        has_byline |= (i == 0 or paragraphs[i - 1].kind == "heading") and any(q.kind == "meta" for q in following)
        gap_after = paragraphs[i + 1].gap_before if i + 1 < len(paragraphs) else 0
        at_top = all(q.kind == "meta" for q in paragraphs[:i])  # the page's first line, or under its date
        set_apart = (p.gap_before >= 2 or at_top or gap_after >= 2) and "——" not in p.raw
        if has_byline or set_apart:
            titles.append(i)
    return titles


def reflow_columns(paragraphs: list[Paragraph], titles: list[int]) -> list[Paragraph]:
    """Move a block that the page printed out of order back in front of its continuation.

    A block ends in a dangling paragraph with no continuation where it stands (end of
    page, or set apart by blank lines); its continuation is an article's first body
    paragraph whose first characters finish the dangling word (jieba finds a word that
    spans the seam, e.g. 快递企 + 业 → 企业). Each pass moves every block it finds (blocks
    and their targets do not overlap), so a page costs a couple of passes, not one per move.
    """
    for _ in range(len(paragraphs)):
        moves = _find_misplaced_blocks(paragraphs)
        if not moves:
            return paragraphs
        paragraphs = _apply_moves(paragraphs, moves)
    return paragraphs


def _find_misplaced_blocks(paragraphs: list[Paragraph]) -> dict[int, tuple[int, int]]:
    """{target head: (block start, block end)} for blocks that do not overlap each other or a target."""
    heads_by_first_char: dict[str, list[int]] = {}
    for head in _article_first_body_paragraphs(paragraphs):
        if not _DATELINE_RE.match(paragraphs[head].folded):  # a dateline starts an article: it continues nothing
            heads_by_first_char.setdefault(paragraphs[head].folded[0], []).append(head)
    moves: dict[int, tuple[int, int]] = {}
    claimed: set[int] = set()
    for i, p in enumerate(paragraphs):
        nxt = paragraphs[i + 1] if i + 1 < len(paragraphs) else None
        stranded = nxt is None or nxt.gap_before >= 2 or nxt.kind != "body"
        if not (is_dangling(p) and stranded):
            continue
        block_start = _block_start(paragraphs, i)
        block = range(block_start, i + 1)
        if claimed.intersection(block):
            continue
        for head in _seam_candidates(p.folded, heads_by_first_char):
            if head not in claimed and not block_start <= head < i + 2 and _continues_word(p.folded[-6:], paragraphs[head].folded[:6]):
                moves[head] = (block_start, i + 1)
                claimed.update(block)
                claimed.add(head)
                break
    return moves


def _apply_moves(paragraphs: list[Paragraph], moves: dict[int, tuple[int, int]]) -> list[Paragraph]:
    moved = {i for start, end in moves.values() for i in range(start, end)}
    out: list[Paragraph] = []
    for i, p in enumerate(paragraphs):
        if i in moves:
            start, end = moves[i]
            out.extend(paragraphs[start:end])
        if i not in moved:
            out.append(p)
    return out


def _seam_candidates(tail: str, heads_by_first_char: dict[str, list[int]]) -> list[int]:
    """Heads whose first character can continue a dictionary word that `tail` ends in: a
    word spanning the seam starts with a suffix of `tail` followed by the head's first
    character, and jieba's dictionary holds every prefix of its words. This cheap test
    keeps the jieba check below off almost every pair, so the reflow stays linear in
    practice (500 headed paragraphs took 133 s when every pair was segmented)."""
    freq = _jieba_prefixes()
    suffixes = [tail[-a:] for a in range(1, min(5, len(tail)) + 1)]
    return sorted(h for c, heads in heads_by_first_char.items() if any(s + c in freq for s in suffixes) for h in heads)


def _jieba_prefixes() -> Container[str]:
    """jieba's words and word prefixes, as a membership test: the memory-mapped lexicon
    while jieba's full dictionary is not loaded (same keys, no ~0.9 s load)."""
    from rag.tokenize import dictionary_keys

    return dictionary_keys()


def _block_start(paragraphs: list[Paragraph], end: int) -> int:
    """Walk back to the first paragraph after blank-line separation or a non-body line."""
    start = end
    while start > 0 and paragraphs[start].gap_before < 2 and paragraphs[start - 1].kind == "body":
        start -= 1
    return start


def _article_first_body_paragraphs(paragraphs: list[Paragraph]) -> list[int]:
    return [
        i
        for i in range(1, len(paragraphs))
        if paragraphs[i].kind == "body" and paragraphs[i - 1].kind in {"title", "subtitle", "byline", "meta"}
    ]


@lru_cache(maxsize=4096)
def _continues_word(tail: str, head: str) -> bool:
    """Whether jieba reads a dictionary word across the seam of tail + head (their last and
    first 6 characters decide, so repeated seams are segmented once)."""
    from rag.tokenize import words

    if not (is_cjk(tail[-1]) and is_cjk(head[0])):
        return False
    left, right = tail[-6:], head[:6]
    pos = 0
    for word in words(left + right, hmm=False):  # dictionary words only, as _seam_candidates assumes
        if pos < len(left) < pos + len(word):
            return True
        pos += len(word)
    return False


def join_broken_lines(paragraphs: list[Paragraph]) -> list[Paragraph]:
    """Join a dangling body paragraph with the body paragraph that continues it."""
    joined: list[Paragraph] = []
    for p in paragraphs:
        prev = joined[-1] if joined else None
        if prev is not None and p.kind == "body" and is_dangling(prev):
            merged = Paragraph(prev.segments + p.segments, prev.gap_before, prev.raw + p.raw, "body")
            joined[-1] = merged
        else:
            joined.append(p)
    return joined


def group_articles(paragraphs: list[Paragraph]) -> list[Article]:
    articles: list[Article] = []
    current = Article()
    for p in paragraphs:
        if p.kind == "title":
            if current.title is not None or current.body:
                articles.append(current)
            # Meta lines printed above the headline, at the top of the page, are the article's.
            above = current if current.title is None and not current.body else None
            current = Article(title=p, lines={"title": _span(p)})
            if above is not None:
                current.date, current.byline, current.publisher = above.date, above.byline, above.publisher
                current.lines |= {k: v for k, v in above.lines.items() if k != "title"}
        elif p.kind == "subtitle" and current.subtitle is None and not current.body:
            current.subtitle = p.raw.lstrip("—").strip()
            current.lines["subtitle"] = _span(p)
        elif p.kind == "byline" and current.byline is None:
            current.byline = p.group(_BYLINE_RE.match(p.folded), "name")  # type: ignore[arg-type]
            current.lines["byline"] = _span(p)
        elif p.kind == "credit":
            current.credits.append(p.raw)
            current.lines.setdefault("credit", _span(p))
        elif p.kind == "meta" and not current.body:
            add_meta_line(current, p)
        else:
            match = _DATELINE_RE.match(p.folded)
            if match and current.dateline is None:
                current.dateline = p.group(match, "dateline")
                start = p.segments[0][0]
                current.lines["dateline"] = (start, start + match.end("dateline"))
                if current.byline is None:
                    current.byline = p.group(match, "name").strip()
                    current.lines["byline"] = current.lines["dateline"]
            current.body.append(p)
    if current.title is not None or current.body:
        articles.append(current)
    return [a for a in articles if a.body]


def add_meta_line(article: Article, p: Paragraph) -> None:
    """The date, byline and source a meta line gives (the first of each wins), values as written."""
    for name, (start, end) in (p.meta or {}).items():
        value = p.raw[start:end]
        if name == "date" and article.date is None:
            article.date = publication_date(p.folded[start:end])
        elif name == "byline" and article.byline is None:
            article.byline = value
        elif name == "source" and article.publisher is None:
            article.publisher = value
        else:
            continue
        article.lines[name] = _span(p)


def field_line(original: str, span: tuple[int, int]) -> dict[str, object]:
    """Where a metadata field was read from: the raw line and its offsets in the file."""
    return {"quote": original[span[0] : span[1]], "source_start": span[0], "source_end": span[1]}


def _span(p: Paragraph) -> tuple[int, int]:
    return p.segments[0][0], p.segments[-1][1]


def parse_page(original: str) -> list[Article]:
    """Split a page of run-together articles into repaired articles."""
    paragraphs = split_paragraphs(original)
    for p in paragraphs:
        p.kind = classify(p)
    titles = find_title_indexes(paragraphs)
    for i in titles:
        paragraphs[i].kind = "title"
    for i, p in enumerate(paragraphs):
        if p.kind == "heading":
            p.kind = "body"  # section headings stay in the article text
        # Metadata sits under a headline (or atop the page); in the running text a date line
        # is text, and may finish a sentence the page broke: 将于 / 2024年5月1日 / 正式运营.
        if p.kind == "meta" and i and paragraphs[i - 1].kind in ("body", "caption"):
            p.kind = "body"
    paragraphs = reflow_columns(paragraphs, titles)
    return move_leads_to_their_articles(group_articles(join_broken_lines(paragraphs)))


def move_leads_to_their_articles(articles: list[Article]) -> list[Article]:
    """A quotation printed just above the next article's headline is that article's lead:
    move it there when the places it names are in the next headline, not in its own.
    (「“我将立足岗位……”日喀则快递小哥阿旺洛桑满怀激情地说。」 above 「服务贴心 凝聚人心 ——日喀则市…」.)"""
    for current, following in itertools.pairwise(articles):
        if len(current.body) < 2 or not current.body[-1].raw.startswith("“"):
            continue
        places = _places(current.body[-1].raw)
        if places and places & _places(_headline(following)) and not places & _places(_headline(current)):
            following.body.insert(0, current.body.pop())
    return articles


def _headline(article: Article) -> str:
    return (article.title.raw if article.title else "") + (article.subtitle or "")


def _places(text: str) -> set[str]:
    from rag.answer_types import place_stems

    return set(place_stems(text))


def article_document(article: Article, original: str, source: str, fallback_title: str) -> Document:
    parts: list[str] = []
    source_map: list[SourceSegment] = []
    pos = 0
    for i, p in enumerate(article.body):
        if i:
            parts.append("\n\n")
            pos += 2
        for s, e in p.segments:
            source_map.append(SourceSegment(pos, s, e - s))
            parts.append(original[s:e])
            pos += e - s
    title = article.title.raw if article.title else fallback_title
    meta: dict[str, object] = {"fields": {name: field_line(original, span) for name, span in article.lines.items()}}
    if article.credits:
        meta["credits"] = article.credits
    if article.publisher:
        meta["publisher"] = article.publisher
    return Document(
        title=title,
        text="".join(parts),
        key=f"{source}#{title}",
        source=source,
        byline=article.byline,
        dateline=article.dateline,
        date=article.date,
        subtitle=article.subtitle,
        source_map=source_map,
        meta=meta,
    )


# ---------------------------------------------------------------- file formats
# The format table, encoding detection and the PDF/docx/Markdown/HTML loaders live in
# rag/formats/ (imported on first use: rag.formats imports this module); here stay the plain-text
# and JSONL loaders and the file-level functions everyone calls.


def documents_from_text(original: str, source: str, fallback_title: str | None = None) -> list[Document]:
    """The articles of a page of text; an article without a title line gets `fallback_title`
    (default: the file name without suffix)."""
    fallback_title = fallback_title or Path(source).stem
    docs = [article_document(a, original, source, fallback_title) for a in parse_page(original)]
    if not docs:
        raise IngestError(f"{source}: no article text found")
    return docs


class VisibleText(html.parser.HTMLParser):
    """The visible text of a page, blocks on their own lines; rag/formats/html.py falls back
    to it when trafilatura finds no main content."""

    _SKIP = {"script", "style", "noscript", "template", "head"}
    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip_depth = 0
        self._in_title = False
        self._in_h1 = False
        self.h1 = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        self._in_title |= tag == "title"
        self._in_h1 |= tag == "h1"
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        if tag == "title":
            self._in_title = False
        if tag == "h1":
            self._in_h1 = False
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip_depth:
            return
        if self._in_h1:
            self.h1 += data
        self.parts.append(data)


def visible_text(original: str) -> tuple[str, str]:
    """(title, body) of a page: the h1 or <title>, and the visible text after it."""
    parser = VisibleText()
    parser.feed(original)
    visible = "\n".join(line.strip() for line in "".join(parser.parts).splitlines())
    visible = re.sub(r"\n{3,}", "\n\n", visible).strip()
    title = (parser.h1 or parser.title).strip()
    body = visible[len(title) :].lstrip() if title and visible.startswith(title) else visible
    return title, body


def documents_from_jsonl(original: str, source: str) -> list[Document]:
    docs: list[Document] = []
    for line_no, line in enumerate(original.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise IngestError(f"{source}:{line_no}: invalid JSON ({err.msg})") from None
        except RecursionError:  # json.loads recurses once per nesting level: a hostile line ends here
            raise IngestError(f"{source}:{line_no}: invalid JSON (nested too deeply)") from None
        docs.append(document_from_record(record, f"{source}:{line_no}"))
    if not docs:
        raise IngestError(f"{source}: no records")
    return docs


def document_from_record(record: object, where: str) -> Document:
    """One article from a dict with `title`, `text` and optional `date`, `url`, `source`."""
    if not isinstance(record, dict):
        raise IngestError(f"{where}: expected a JSON object")
    title, text = record.get("title"), record.get("text")
    if not isinstance(title, str) or not title.strip():
        raise IngestError(f"{where}: missing or empty 'title'")
    if not isinstance(text, str) or not text.strip():
        raise IngestError(f"{where}: missing or empty 'text'")
    extra = {k: record.get(k) for k in ("date", "url", "source")}
    for name, value in extra.items():
        if value is not None and not isinstance(value, str):
            raise IngestError(f"{where}: '{name}' must be a string")
    source = extra["source"] or where.rsplit(":", 1)[0]
    key = extra["url"] or f"{source}#{title.strip()}"
    date = None if extra["date"] is None else record_date(extra["date"], where)
    return Document(title=title.strip(), text=text.strip(), key=key, source=source, date=date, url=extra["url"])


def record_date(value: str, where: str) -> str:
    """A record's date as YYYY-MM-DD: date filters compare these strings, so "2023-02-30" or
    "yesterday" would silently match the wrong articles."""
    from rag.dates import iso_date

    try:
        return iso_date(value)
    except ValueError as err:
        raise IngestError(f"{where}: 'date': {err}") from None


def load_documents(path: Path) -> list[Document]:
    """Documents from one file, by suffix; raises IngestError with a one-line reason.
    (`rag.formats.load_file` returns them with the detected format and encoding.)"""
    from rag.formats import load_file

    return load_file(path).documents


def iter_corpus_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
