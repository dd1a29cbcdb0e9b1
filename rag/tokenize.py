"""Lexical tokens for BM25: jieba words over the match form (simplified script, folded
width), without stop-words and punctuation. The same function is used at index and at
query time, so a traditional question matches a simplified article and the reverse."""

from __future__ import annotations

import logging
import re
from collections.abc import Container
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rag import postag
from rag.lexicon import default_lexicon
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


# Short texts are cut with only the dictionary entries they contain, read from the
# memory-mapped lexicon (rag/lexicon.py), instead of loading jieba's full dictionary (~0.9 s,
# plus ~0.4 s to import jieba.posseg). Looking entries up costs ~3.5 µs a character plus
# ~50 µs a call, about what jieba's cut itself costs, so a process keeps doing it until that
# adds up to the load (ski rental: never worse than twice the better choice), then loads the
# dictionary: a `rag ask` never loads it, `rag index` of a corpus loads it once, early.
FAST_PATH_BUDGET_CHARS = 250_000
_CALL_COST_CHARS = 16  # a call's fixed cost, in characters' worth of lookups
_fast_path_chars = 0  # spent so far (racing threads may undercount: harmless)


@lru_cache(maxsize=1)
def _jieba_module():  # type: ignore[no-untyped-def]
    """jieba imported (~30 ms), its dictionary not loaded."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


@lru_cache(maxsize=1)
def _jieba():  # type: ignore[no-untyped-def]
    """jieba with its full default dictionary loaded."""
    jieba = _jieba_module()
    jieba.initialize()
    return jieba


@dataclass(frozen=True)
class _Small:
    """A jieba.Tokenizer knowing only the dictionary entries inside one text, and their tags."""

    tokenizer: Any
    tags: dict[str, str]


def _small(text: str) -> _Small | None:
    """A tokenizer for `text` alone, or None where jieba's own dictionary should be used.

    jieba's DAG and route look up only substrings of the text they cut, and search mode's
    2/3-grams are substrings of its words, so FREQ restricted to the text's substrings (with
    the real total) gives the same words. Not once jieba's dictionary is loaded here: it is
    faster then, and words added to it at run time must count."""
    global _fast_path_chars
    jieba = _jieba_module()
    cost = len(text) + _CALL_COST_CHARS
    if _fast_path_chars + cost > FAST_PATH_BUDGET_CHARS or jieba.dt.initialized or jieba.dt.dictionary is not jieba.DEFAULT_DICT:
        return None
    lex = default_lexicon()
    if lex is None:
        return None
    _fast_path_chars += cost
    freq, tags = lex.substrings(text)
    tokenizer = jieba.Tokenizer()
    tokenizer.FREQ, tokenizer.total, tokenizer.initialized = freq, lex.total, True
    return _Small(tokenizer, tags)


def _search_cut(text: str) -> list[str]:
    small = _small(text)
    return (small.tokenizer if small else _jieba()).lcut_for_search(text)  # type: ignore[no-any-return]


def _cut(text: str, hmm: bool) -> list[str]:
    small = _small(text)
    return (small.tokenizer if small else _jieba()).lcut(text, HMM=hmm)  # type: ignore[no-any-return]


def tokenize(text: str) -> list[str]:
    """Search-mode jieba tokens (long words also yield their sub-words)."""
    words = _search_cut(match_form(text))
    return [w for w in (w.strip() for w in words) if w and w not in STOPWORDS and not _PUNCT_OR_SPACE.match(w)]


def words(text: str, hmm: bool = True) -> list[str]:
    """Plain jieba segmentation (nothing dropped), cut where jieba cuts the match form:
    the pieces are slices of `text` itself, in its own script. `hmm=False`: dictionary
    words only (no HMM-guessed new words)."""
    return _slices(text, _cut(match_form(text), hmm))


def pos_words(text: str) -> list[tuple[str, str]]:
    """jieba words with part-of-speech flags (nr person, ns place, n noun, m numeral…);
    tagged on the match form (jieba's dictionary is simplified), returned as slices of `text`."""
    pairs = pos_tag(match_form(text))
    pieces = _slices(text, [word for word, _ in pairs])
    return [(piece, flag) for piece, (_, flag) in zip(pieces, pairs, strict=True)]


def pos_tag(text: str) -> list[tuple[str, str]]:
    """`jieba.posseg.lcut(text)` as (word, flag) pairs, on `text` as given (no match form)."""
    small = _small(text)
    if small is not None:
        return postag.cut(text, small.tokenizer, small.tags)
    _jieba()
    import jieba.posseg

    return [(pair.word, pair.flag) for pair in jieba.posseg.lcut(text)]


def preload() -> None:
    """Load jieba's full dictionary and POS tags now (~1.3 s, ~150 MB): for a long-running
    server, whose requests would otherwise pay that load once the lexicon budget is spent,
    and for which the loaded dictionary is the faster path anyway."""
    _jieba()
    import jieba.posseg  # noqa: F401  (its import reads the tags)


def dictionary_keys() -> Container[str]:
    """Membership in jieba's prefix dictionary (its words and every prefix of them), from
    the lexicon unless jieba's dictionary is loaded (or the lexicon is unavailable)."""
    jieba = _jieba_module()
    lex = None if jieba.dt.initialized or jieba.dt.dictionary is not jieba.DEFAULT_DICT else default_lexicon()
    return lex if lex is not None else _jieba().dt.FREQ  # type: ignore[no-any-return]


def _slices(text: str, segmented: list[str]) -> list[str]:
    """`text` cut at the lengths of `segmented` (a segmentation of a same-length form of it)."""
    out, pos = [], 0
    for word in segmented:
        out.append(text[pos : pos + len(word)])
        pos += len(word)
    return out
