"""Lexical tokens for BM25: jieba words over the match form (simplified script, folded
width), without stop-words and punctuation. The same function is used at index and at
query time, so a traditional question matches a simplified article and the reverse."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from rag.text import match_form

# Function words and question words: they match everywhere and rank nothing.
STOPWORDS = frozenset(
    """的 了 和 与 及 或 是 在 有 为 对 把 被 将 从 向 以 于 之 而 并 也 都 就 还 又 等 着 过 个 这 那 其 该 此 吗 呢 吧 啊 呀 么 什么 哪 哪个 哪些 哪里 哪儿 谁
    多少 几 怎么 怎样 如何 为什么 是否 请问 一个 一些 我们 你们 他们 它们 及其 以及 通过 进行 开展 一 二 三 个 名 位 方面 问题 情况 叫 叫做 一共 共 总共 分别 主要 目前
    指 指的是 哪三项 the a an of to in and or is are was were""".split()
)
# Recorded in each index's manifest: an index tokenized another way is rebuilt by `rag index`.
TOKENIZER_ID = "jieba.lcut_for_search+opencc-t2s+width-normalised+stopwords"
_PUNCT_OR_SPACE = re.compile(r"^[\W_]+$", re.UNICODE)


@lru_cache(maxsize=1)
def _jieba():  # type: ignore[no-untyped-def]
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def tokenize(text: str) -> list[str]:
    """Search-mode jieba tokens (long words also yield their sub-words)."""
    words = _jieba().lcut_for_search(match_form(text))
    return [w for w in (w.strip() for w in words) if w and w not in STOPWORDS and not _PUNCT_OR_SPACE.match(w)]


def words(text: str, hmm: bool = True) -> list[str]:
    """Plain jieba segmentation (nothing dropped), cut where jieba cuts the match form:
    the pieces are slices of `text` itself, in its own script. `hmm=False`: dictionary
    words only (no HMM-guessed new words)."""
    return _slices(text, _jieba().lcut(match_form(text), HMM=hmm))


def pos_words(text: str) -> list[tuple[str, str]]:
    """jieba words with part-of-speech flags (nr person, ns place, n noun, m numeral…);
    tagged on the match form (jieba's dictionary is simplified), returned as slices of `text`."""
    _jieba()
    import jieba.posseg

    pairs = jieba.posseg.lcut(match_form(text))
    pieces = _slices(text, [p.word for p in pairs])
    return [(piece, pair.flag) for piece, pair in zip(pieces, pairs, strict=True)]


def _slices(text: str, segmented: list[str]) -> list[str]:
    """`text` cut at the lengths of `segmented` (a segmentation of a same-length form of it)."""
    out, pos = [], 0
    for word in segmented:
        out.append(text[pos : pos + len(word)])
        pos += len(word)
    return out
