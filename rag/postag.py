"""Part-of-speech tagging as `jieba.posseg.lcut(text)` does it (HMM on), for a tokenizer
whose FREQ holds only the entries the text needs and a matching {word: tag} table.

Ported from jieba 0.42.1, jieba/posseg/__init__.py (POSTokenizer.__cut_internal,
__cut_DAG, __cut_detail, __cut), MIT licence, © 2013 Sun Junyi. Importing `jieba.posseg`
builds a tagger over the whole of dict.txt (~0.4 s); this port takes its tags from the
caller and loads the posseg HMM (`rag.posseg_hmm`) only when a text needs it, without
importing the package. Quirks are kept on purpose: output must equal jieba's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from rag.posseg_hmm import PossegHmm, load_hmm

Pair = tuple[str, str]

_RE_HAN_DETAIL = re.compile("([\u4e00-\u9fd5]+)")
_RE_SKIP_DETAIL = re.compile(r"([\.0-9]+|[a-zA-Z0-9]+)")
_RE_HAN_INTERNAL = re.compile(r"([\u4E00-\u9FD5a-zA-Z0-9+#&\._]+)")
_RE_SKIP_INTERNAL = re.compile(r"(\r\n|\s)")
_RE_ENG = re.compile("[a-zA-Z0-9]+")
_RE_NUM = re.compile(r"[\.0-9]+")


def cut(sentence: str, tokenizer: Any, tags: Mapping[str, str]) -> list[Pair]:
    """(word, flag) pairs of `sentence`; `tokenizer` is a jieba.Tokenizer (its get_DAG, calc
    and FREQ), `tags` the dictionary's tags for (at least) the words in `sentence`."""
    out: list[Pair] = []
    for blk in _RE_HAN_INTERNAL.split(sentence):
        if _RE_HAN_INTERNAL.match(blk):
            out.extend(_cut_dag(blk, tokenizer, tags))
        else:
            out.extend(_cut_skipped(blk))
    return out


def _cut_skipped(blk: str) -> Iterator[Pair]:
    for x in _RE_SKIP_INTERNAL.split(blk):
        if _RE_SKIP_INTERNAL.match(x):
            yield x, "x"
            continue
        for xx in x:
            if _RE_NUM.match(xx):
                yield xx, "m"
            elif _RE_ENG.match(x):  # jieba tests the whole chunk here, not the character
                yield xx, "eng"
            else:
                yield xx, "x"


def _cut_dag(sentence: str, tokenizer: Any, tags: Mapping[str, str]) -> Iterator[Pair]:
    dag = tokenizer.get_DAG(sentence)
    route: dict[int, tuple[float, int]] = {}
    tokenizer.calc(sentence, dag, route)
    x, buf, n = 0, "", len(sentence)
    while x < n:
        y = route[x][1] + 1
        word = sentence[x:y]
        if y - x == 1:
            buf += word
        else:
            if buf:
                yield from _flush(buf, tokenizer, tags)
                buf = ""
            yield word, tags.get(word, "x")
        x = y
    if buf:
        yield from _flush(buf, tokenizer, tags)


def _flush(buf: str, tokenizer: Any, tags: Mapping[str, str]) -> Iterator[Pair]:
    """A run of single characters: one word, an HMM guess when the run is no dictionary
    word, else character by character."""
    if len(buf) == 1:
        yield buf, tags.get(buf, "x")
    elif not tokenizer.FREQ.get(buf):
        yield from _cut_detail(buf)
    else:
        for elem in buf:
            yield elem, tags.get(elem, "x")


def _cut_detail(sentence: str) -> Iterator[Pair]:
    for blk in _RE_HAN_DETAIL.split(sentence):
        if _RE_HAN_DETAIL.match(blk):
            yield from _cut_hmm(blk)
            continue
        for x in _RE_SKIP_DETAIL.split(blk):
            if x:
                yield x, "m" if _RE_NUM.match(x) else "eng" if _RE_ENG.match(x) else "x"


def _cut_hmm(sentence: str) -> Iterator[Pair]:
    pos_list = _hmm().viterbi(sentence)
    begin, nexti = 0, 0
    for i, char in enumerate(sentence):
        pos = pos_list[i][0]
        if pos == "B":
            begin = i
        elif pos == "E":
            yield sentence[begin : i + 1], pos_list[i][1]
            nexti = i + 1
        elif pos == "S":
            yield char, pos_list[i][1]
            nexti = i + 1
    if nexti < len(sentence):
        yield sentence[nexti:], pos_list[nexti][1]


# The posseg HMM: loaded only when a text has a run of characters jieba has no word for.

_hmm_lock = threading.Lock()
_hmm_tables: list[PossegHmm] = []


def _hmm() -> PossegHmm:
    if not _hmm_tables:
        with _hmm_lock:
            if not _hmm_tables:
                _hmm_tables.append(load_hmm())
    return _hmm_tables[0]
