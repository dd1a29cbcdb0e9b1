"""Bytes → text for the text formats (.txt .md .html .jsonl), and the name of the encoding used.

Order: a byte-order mark; NUL bytes (UTF-16 without a BOM, else binary); strict UTF-8 (the fast
path, and short UTF-8 text is never second-guessed); the charset an HTML page declares; then
charset-normalizer's candidates plus gb18030 and big5, re-ranked by how plausible the decoded
text is. The re-ranking matters: on a short Chinese paragraph charset-normalizer's first guess
is often Korean (cp949) or UTF-16, while the right decoding reads as common hanzi.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata

from rag.ingest import IngestError

_BOMS = (  # UTF-32 LE first: its BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Reported and decoded as gb18030, the superset: a "GBK" file often holds GB18030-only characters.
_GB_FAMILY = {"gb2312", "gbk", "gb18030", "hz"}
# Tried in this order: plain Big5, Microsoft's (Taiwan Windows), then the Hong Kong superset.
_BIG5_FAMILY = ("big5", "cp950", "big5hkscs")
_DECLARED_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{2,40})""", re.I)
_SAMPLE_CHARS = 20_000  # plausibility is measured on the start of the text: enough, and fast
_MIN_PLAUSIBLE = 0.75
_MIN_UTF16 = 0.9


def decode_text(raw: bytes, name: str, declared: str | None = None) -> tuple[str, str]:
    """The text of `raw` and the encoding it was read with ("utf-8", "utf-8-sig", "utf-16",
    "gb18030", "big5", ...); IngestError with a one-line reason for binary or undecodable data."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return _decode_with_bom(raw, encoding, name), encoding
    if b"\x00" in raw:
        return _bomless_utf16(raw, name)
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as err:
        utf8_error = err.start
    if declared is not None:
        decoded = _decode_as(raw, canonical_encoding(declared))
        if decoded is not None:
            return decoded
    return _detect(raw, name, utf8_error)


def declared_html_charset(raw: bytes) -> str | None:
    """The charset a page declares in `<meta charset=…>` or `<meta http-equiv … charset=…>`."""
    match = _DECLARED_RE.search(raw[:4096])
    return match.group(1).decode("ascii") if match else None


def canonical_encoding(label: str) -> str:
    """Python's name for an encoding label, GBK family folded into gb18030 ("GB2312" → "gb18030")."""
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return label.lower()
    return "gb18030" if name in _GB_FAMILY else name


def _decode_with_bom(raw: bytes, encoding: str, name: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise IngestError(f"{name}: starts with a {encoding} byte-order mark but is not valid {encoding} (byte {err.start})") from None


def _bomless_utf16(raw: bytes, name: str) -> tuple[str, str]:
    """NUL bytes: UTF-16 text without a BOM (ASCII characters have a zero byte), else binary."""
    best: tuple[float, str, str] | None = None
    for encoding in ("utf-16-le", "utf-16-be"):
        text = _strict(raw, encoding)
        if text is not None and "\x00" not in text:
            score = plausibility(text[:_SAMPLE_CHARS])
            if score >= _MIN_UTF16 and (best is None or score > best[0]):
                best = (score, text, encoding)
    if best is None:
        raise IngestError(f"{name}: looks like a binary file, not text (NUL byte at {raw.index(0)})")
    return best[1], best[2]


def _detect(raw: bytes, name: str, utf8_error: int) -> tuple[str, str]:
    import charset_normalizer

    guesses = [match.encoding for match in charset_normalizer.from_bytes(raw)][:5]
    candidates = dict.fromkeys(canonical_encoding(e) for e in (*guesses, "gb18030", "big5"))
    scored = []
    for rank, encoding in enumerate(candidates):
        decoded = _decode_as(raw, encoding)
        if decoded is not None:
            scored.append((plausibility(decoded[0][:_SAMPLE_CHARS]), -rank, *decoded))
    if not scored or max(scored)[0] < _MIN_PLAUSIBLE:
        tried = ", ".join(candidates)
        raise IngestError(f"{name}: not valid UTF-8 (byte {utf8_error}) nor text in {tried}; binary file? Save it as UTF-8")
    _, _, text, encoding = max(scored)
    return text, encoding


def _decode_as(raw: bytes, encoding: str) -> tuple[str, str] | None:
    """(text, encoding actually used), trying the Big5 variants in turn; None if it fails."""
    for variant in _BIG5_FAMILY if encoding in _BIG5_FAMILY else (encoding,):
        text = _strict(raw, variant)
        if text is not None:
            return text, variant
    return None


def _strict(raw: bytes, encoding: str) -> str | None:
    try:
        return raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def plausibility(text: str) -> float:
    """Share of the non-space characters that ordinary Chinese or Latin text is made of: ASCII,
    common hanzi (GB2312 and Big5's common set), punctuation, digits, Latin letters. Rare hanzi,
    kana, hangul and Bopomofo count 0.3 (a wrong decoding is full of them); symbols, private-use
    and control characters 0."""
    common = _common_hanzi()
    good = total = 0.0
    for ch in text:
        if ch.isspace():
            continue
        total += 1
        if ch.isascii():
            good += ch.isprintable()
        elif ch in common or unicodedata.category(ch)[0] in "PN" or (ch < "\u0250" and ch.isalpha()):
            good += 1
        elif ch.isalpha():
            good += 0.3
    return good / total if total else 0.0


@functools.cache
def _common_hanzi() -> frozenset[str]:
    """GB2312's 6763 hanzi and Big5's 5401 common ones: most of any real Chinese text."""
    gb = _decode_pairs("gb2312", range(0xB0, 0xF8), range(0xA1, 0xFF))
    big5 = _decode_pairs("big5", range(0xA4, 0xC7), [*range(0x40, 0x7F), *range(0xA1, 0xFF)])
    return frozenset(gb + big5)


def _decode_pairs(encoding: str, leads: range, trails: list[int] | range) -> str:
    chars = []
    for lead in leads:
        for trail in trails:
            ch = _strict(bytes((lead, trail)), encoding)
            if ch is not None and unicodedata.category(ch) == "Lo":
                chars.append(ch)
    return "".join(chars)
