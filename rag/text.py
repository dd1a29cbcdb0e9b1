"""Character-level text helpers for Chinese: width normalisation and sentence spans.

Everything here works on spans (start, end) into the text it is given, so callers can
cite exact substrings of the original and only *match* on normalised forms.
"""

from __future__ import annotations

import re
import unicodedata

SENTENCE_END = "。！？；!?;…"
CLOSING_QUOTES = "”’」』)）\"'"
_SENTENCE_RE = re.compile(rf"[^{SENTENCE_END}\n]*(?:[{SENTENCE_END}]+[{re.escape(CLOSING_QUOTES)}]*|\n+|$)")


def normalize_width(text: str) -> str:
    """Full-width ASCII/punctuation to half-width, lower-cased: for matching only.

    NFKC maps full-width forms (，：（ＡＢＣ１２３) to their ASCII twins while leaving CJK
    ideographs alone; the output has the same length as the input for these forms.
    """
    return "".join(_fold_char(c) for c in text).lower()


def _fold_char(c: str) -> str:
    folded = unicodedata.normalize("NFKC", c)
    # Keep one char per char so offsets computed on the folded text stay valid.
    return folded if len(folded) == 1 else c


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split text[start:end] into sentences, returned as (start, end) spans of non-blank text.

    A sentence ends at 。！？；… (and ASCII !?;), plus any closing quotes right after,
    or at a newline. Leading/trailing whitespace is excluded from each span.
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for match in _SENTENCE_RE.finditer(text, start, end):
        s, e = match.span()
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        if match.end() >= end:
            break
    return spans


def split_long_span(span: tuple[int, int], limit: int, text: str) -> list[tuple[int, int]]:
    """Cut a span longer than `limit` at commas if possible, else hard, into pieces <= limit."""
    s, e = span
    pieces: list[tuple[int, int]] = []
    while e - s > limit:
        window = text[s : s + limit]
        cut = max(window.rfind(p) for p in "，,、：:")
        cut = s + cut + 1 if cut > limit // 3 else s + limit
        pieces.append((s, cut))
        s = cut
    pieces.append((s, e))
    return pieces


def is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf"
