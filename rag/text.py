"""Character-level text helpers for Chinese: width normalisation and sentence spans.

Everything here works on spans (start, end) into the text it is given, so callers can
cite exact substrings of the original and only *match* on normalised forms.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache

SENTENCE_END = "。！？；!?;…"
CLOSING_QUOTES = "”’」』)）\"'"
_SENTENCE_RE = re.compile(rf"[^{SENTENCE_END}\n]*(?:[{SENTENCE_END}]+[{re.escape(CLOSING_QUOTES)}]*|\n+|$)")


def normalize_width(text: str) -> str:
    """Full-width ASCII/punctuation to half-width, lower-cased: for matching only.

    NFKC maps full-width forms (，：（ＡＢＣ１２３) to their ASCII twins while leaving CJK
    ideographs alone; the output has the same length as the input for these forms.
    """
    return "".join(_fold_char(c) for c in text).lower()


def match_form(text: str) -> str:
    """The form every comparison uses: traditional → simplified (OpenCC t2s) plus width
    folding and lower case. Same length as `text`, character for character, so a span found
    in the match form cites the same span of the original.

    Variant characters: OpenCC's t2s tables fold traditional forms and the variants they
    list into the simplified standard (裏/裡 → 里, 爲 → 为, 綫 → 线, 峯 → 峰, 臺/台灣 → 台湾),
    by phrase where one character has two simplified forms (乾燥 → 干燥 but 乾隆 stays);
    what the tables leave alone (看著, 妳) is compared as written. Where a phrase rule would
    change the length (none in CMRC, DRCD or the seed), the text is converted character by
    character instead.
    """
    return _match_form_cached(text) if len(text) <= 64 else _match_form(text)


@lru_cache(maxsize=65536)
def _match_form_cached(text: str) -> str:
    return _match_form(text)


def _match_form(text: str) -> str:
    return normalize_width(simplified(text))


def simplified(text: str) -> str:
    """`text` in simplified script (OpenCC t2s), same length as `text`: what the embedder
    reads, so a question and a passage meet in one script whatever they were written in."""
    converted = _t2s()(text)
    if len(converted) != len(text):
        converted = "".join(c if len(t := _t2s()(c)) != 1 else t for c in text)
    return converted


def script_of(text: str) -> str:
    """'traditional' when OpenCC would change any character of `text`, else 'simplified'."""
    return "traditional" if _t2s()(text) != text else "simplified"


def to_script(text: str, script: str) -> str:
    """`text` written in `script` ('simplified' or 'traditional'); same use as display only."""
    return _converter("t2s" if script == "simplified" else "s2t")(text)


def _t2s():  # type: ignore[no-untyped-def]
    return _converter("t2s")


@cache
def _converter(config: str):  # type: ignore[no-untyped-def]
    import opencc  # 8 ms; only when text is compared

    return opencc.OpenCC(config).convert


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
