"""Markdown → articles (markdown-it-py, CommonMark with tables and strikethrough).

The file is rendered to plain text, no markup (emphasis, links' URLs, images, code fences,
list markers, heading marks, HTML), with every copied character's offset in the raw file kept.
Headings of the file's top level are set apart by two blank lines, which is how the plain-text
page parser recognises article titles; deeper headings stay section lines inside the article.
After parsing, `Document.source_map` is composed back onto the raw Markdown: for each segment,
text[doc_start:doc_start+length] == raw[orig_start:orig_start+length]. Characters that are not
in the raw file (a space for a line break inside an English sentence, a decoded &#...; entity,
the space between table cells) are left out of the map, like the blank lines between paragraphs.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

from rag.ingest import documents_from_text
from rag.types import Document, SourceSegment

_LINE_END_RE = re.compile(r"\r\n|\r|\n")  # what markdown-it counts as a line end
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)---[ \t]*(?:\r?\n|\Z)", re.S)
_FRONT_KEY_RE = re.compile(r"^(title|date):[ \t]*[\"']?(.*?)[\"']?[ \t]*$", re.M)


def documents_from_markdown(original: str, source: str) -> list[Document]:
    front = _front_matter(original)
    rendered = render(original, len(front.group(0)) if front else 0)
    keys = dict(_FRONT_KEY_RE.findall(front.group(1))) if front else {}
    docs = documents_from_text(rendered.text, source, keys.get("title") or None)
    date = keys.get("date", "")[:10] if re.match(r"\d{4}-\d{2}-\d{2}", keys.get("date", "")) else None
    for doc in docs:
        doc.source_map = rendered.to_raw(doc.source_map or [])
        doc.date = doc.date or date
        _fields_to_raw(doc, rendered)
    return docs


def _front_matter(original: str) -> re.Match[str] | None:
    """A leading YAML block (Jekyll, Hugo): not article text; its title and date are used."""
    return _FRONT_MATTER_RE.match(original)


@dataclass
class Rendered:
    """Plain text built from pieces that are copies of the raw file (offset kept) or synthetic."""

    raw: str
    parts: list[str] = field(default_factory=list)
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (text start, raw start or -1, length)
    length: int = 0
    gap: int = 0  # line ends owed before the next text
    soft_break: bool = False
    space: bool = False  # a table cell boundary owed before the next text

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def need(self, line_ends: int) -> None:
        self.gap = max(self.gap, line_ends)

    def copy(self, content: str, cursor: int, limit: int) -> int:
        """Emit `content`, found in raw[cursor:limit] (character by character if it is not there
        verbatim: escapes and entities); return the new cursor."""
        pos = self.raw.find(content, cursor, limit) if content else -1
        if pos >= 0:
            self._emit(content, pos)
            return pos + len(content)
        for ch in content:
            pos = self.raw.find(ch, cursor, limit)
            self._emit(ch, pos)
            cursor = pos + 1 if pos >= 0 else cursor
        return cursor

    def _emit(self, piece: str, raw_start: int) -> None:
        self._separate(piece[0])
        self._append(piece, raw_start)

    def _separate(self, first: str) -> None:
        if self.gap and self.length:
            self._append("\n" * self.gap, -1)
        elif self.space or (self.soft_break and self.length and self.parts[-1][-1].isascii() and first.isascii()):
            self._append(" ", -1)
        self.gap, self.soft_break, self.space = 0, False, False

    def _append(self, piece: str, raw_start: int) -> None:
        last = self.runs[-1] if self.runs else None
        if last and raw_start >= 0 and last[1] >= 0 and last[1] + last[2] == raw_start:
            self.runs[-1] = (last[0], last[1], last[2] + len(piece))
        else:
            self.runs.append((self.length, raw_start, len(piece)))
        self.parts.append(piece)
        self.length += len(piece)

    def to_raw(self, segments: list[SourceSegment]) -> list[SourceSegment]:
        """Segments into the rendered text → segments into the raw file (synthetic text left out)."""
        starts = [run[0] for run in self.runs]
        mapped: list[SourceSegment] = []
        for seg in segments:
            pos, end = seg.orig_start, seg.orig_start + seg.length
            i = bisect.bisect_right(starts, pos) - 1
            while pos < end:
                run_start, raw_start, length = self.runs[i]
                stop = min(end, run_start + length)
                if raw_start >= 0:
                    mapped.append(SourceSegment(seg.doc_start + pos - seg.orig_start, raw_start + pos - run_start, stop - pos))
                pos, i = stop, i + 1
        return mapped

    def raw_offset(self, pos: int) -> int | None:
        run_start, raw_start, _ = self.runs[bisect.bisect_right([run[0] for run in self.runs], pos) - 1]
        return None if raw_start < 0 else raw_start + pos - run_start


def render(original: str, skip: int = 0) -> Rendered:
    """`original` as plain text, ignoring its first `skip` characters (front matter)."""
    from markdown_it import MarkdownIt

    masked = "\n" * len(_LINE_END_RE.findall(original[:skip])) + original[skip:]  # same line numbers
    tokens = MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(masked)
    line_starts = [0, *(m.end() for m in _LINE_END_RE.finditer(original))]
    levels = [int(t.tag[1:]) for t in tokens if t.type == "heading_open"]
    return _Walker(Rendered(original), line_starts, min(levels, default=1)).walk(tokens)


class _Walker:
    def __init__(self, out: Rendered, line_starts: list[int], top_level: int) -> None:
        self.out = out
        self.line_starts = line_starts
        self.top_level = top_level
        self.cursor = 0
        self.heading_gap = 2

    def walk(self, tokens: list[Any]) -> Rendered:
        for token in tokens:
            if token.type == "inline":
                self.inline(token)
            elif token.type in ("fence", "code_block"):
                self.code(token)
            else:
                self.block(token)
        return self.out

    def block(self, token: Any) -> None:
        kind = token.type
        if kind == "heading_open":
            self.heading_gap = 3 if int(token.tag[1:]) == self.top_level else 2
            self.out.need(self.heading_gap)
        elif kind == "heading_close":
            self.out.need(self.heading_gap)
        elif kind == "paragraph_open":
            self.out.need(1 if token.hidden else 2)  # hidden: an item of a tight list, one per line
        elif kind in ("tr_open", "list_item_open"):
            self.out.need(1)
        elif kind in ("th_open", "td_open"):
            self.out.space = self.out.gap == 0 and self.out.length > 0
        elif kind in ("hr", "html_block", "bullet_list_open", "ordered_list_open", "table_open", "blockquote_open"):
            self.out.need(2)

    def inline(self, token: Any) -> None:
        cursor, limit = self.span(token.map)
        for child in token.children or []:
            if child.type in ("text", "code_inline"):
                cursor = self.out.copy(child.content, cursor, limit)
            elif child.type == "softbreak":
                self.out.soft_break = True
            elif child.type == "hardbreak":
                self.out.need(1)
        self.cursor = cursor

    def code(self, token: Any) -> None:
        cursor, limit = self.span(token.map)
        self.out.need(2)
        for line in token.content.splitlines():
            if line.strip():
                cursor = self.out.copy(line.strip(), cursor, limit)
                self.out.need(1)
        self.out.need(2)
        self.cursor = cursor

    def span(self, line_map: list[int] | None) -> tuple[int, int]:
        """Where a block's text can be found in the raw file: from the cursor to its last line."""
        if line_map is None:
            return self.cursor, len(self.out.raw)
        start = self.line_starts[min(line_map[0], len(self.line_starts) - 1)]
        limit = self.line_starts[line_map[1]] if line_map[1] < len(self.line_starts) else len(self.out.raw)
        return max(self.cursor, start), limit


def _fields_to_raw(doc: Document, rendered: Rendered) -> None:
    """meta["fields"] offsets (where a title/byline/... line was read) from rendered to raw."""
    for info in (doc.meta.get("fields") or {}).values():
        if not isinstance(info, dict) or info.get("source_end") is None:
            continue
        start, end = rendered.raw_offset(info["source_start"]), rendered.raw_offset(info["source_end"] - 1)
        info["source_start"], info["source_end"] = (start, end + 1) if start is not None and end is not None else (None, None)
