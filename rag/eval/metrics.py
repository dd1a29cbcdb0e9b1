"""Evaluation metrics: CMRC 2018 EM/F1, retrieval ranking, citation support, latency.

Pure functions (no I/O, stdlib + numpy only) so benchmark reports can cite the
definitions in these docstrings verbatim.

The CMRC 2018 part transcribes the official evaluation script
``cmrc2018_evaluate.py`` (ymcui/cmrc2018; versions v4, v5 and v6 share the same
``mixed_segmentation``, ``remove_punctuation``, ``find_lcs``, ``calc_f1_score`` and
``calc_em_score``). The only intended differences are listed in ``mixed_segmentation``
and ``cmrc_f1``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

# ``sp_char`` from the official script, in its order. It is NOT string.punctuation:
# ASCII . , ? ! ( ) ; ' " % etc. are absent, so the official metrics treat them as
# content. The script compares single characters against this list, so the
# two-character entry "……" never matches and a lone "…" is kept too.
CMRC_PUNCTUATION: frozenset[str] = frozenset([
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
])  # fmt: skip

# Stand-in for nltk.word_tokenize on the non-Chinese runs (see mixed_segmentation).
_RUN_TOKEN = re.compile(r"\w+(?:\.\w+|,\d+)*|\.{2,}|\S")


def _is_chinese(char: str) -> bool:
    # Same range as the official regex [\u4e00-\u9fa5] (CJK Unified Ideographs up to
    # U+9FA5); rarer ideographs beyond it fall into the "other" runs, as officially.
    return "\u4e00" <= char <= "\u9fa5"


def mixed_segmentation(text: str, rm_punc: bool = False) -> list[str]:
    """Tokenise like the official CMRC 2018 ``mixed_segmentation``.

    The text is lower-cased and stripped. Each Chinese character (U+4E00..U+9FA5)
    and each character of ``CMRC_PUNCTUATION`` becomes its own token; with
    ``rm_punc=True`` those punctuation characters are dropped instead (without
    ending the current run, so "2018-2019" becomes the one token "20182019", as in
    the official script). Every maximal run of other characters (Latin letters,
    digits, spaces, ASCII punctuation outside the list, ...) is split into words.

    Deviation: the official script splits those runs with ``nltk.word_tokenize``;
    here a regex without nltk does it: a token is a word/number (``\\w+``) that
    may contain inner "." or ",<digits>" ("3.14", "1,000", "u.s"), an ellipsis
    "..", or any other single non-space character ("50%" -> "50", "%";
    "u.s." -> "u.s", "."). This matches nltk on ordinary words, numbers, and
    brackets, %, $, &, @, #, ?, !, ;, "..." and a final "." (checked against
    nltk 3.10's tokenizer). It differs on apostrophes (nltk: "don't" -> "do",
    "n't" and "o'clock" whole; here "don", "'", "t"), on double quotes (nltk
    rewrites them as `` and ''), on a non-final period after a word ("no. 1":
    nltk keeps "no."), and on the non-ASCII symbols "…", "【", "】" (nltk leaves
    them attached to the neighbouring word, here each is its own token).
    """
    tokens: list[str] = []
    run = ""
    for char in text.lower().strip():
        if rm_punc and char in CMRC_PUNCTUATION:
            continue
        if _is_chinese(char) or char in CMRC_PUNCTUATION:
            tokens += _RUN_TOKEN.findall(run)
            run = ""
            tokens.append(char)
        else:
            run += char
    return tokens + _RUN_TOKEN.findall(run)


def remove_punctuation(text: str) -> str:
    """Official CMRC 2018 EM normalisation: lower-case, strip, drop ``CMRC_PUNCTUATION``.

    Inner whitespace and ASCII punctuation outside the list (e.g. "." or ",") are
    kept, so "1459个." does not equal "1459个".
    """
    return "".join(c for c in text.lower().strip() if c not in CMRC_PUNCTUATION)


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of tokens shared by ``a`` and ``b``.

    Official ``find_lcs``: a common *substring*, not a common subsequence, so
    shared tokens that are not adjacent in both sequences do not add up.
    """
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else 0)
        best = max(best, *cur)
        prev = cur
    return best


def _lcs_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    lcs = longest_common_substring(gold_tokens, pred_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(pred_tokens)
    recall = lcs / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def cmrc_f1(prediction: str, answers: list[str]) -> float:
    """Official CMRC 2018 F1 of one prediction, in [0, 1].

    Both strings are tokenised with ``mixed_segmentation(rm_punc=True)``. With
    ``lcs`` = length of the longest common token substring (``longest_common_substring``),
    precision = lcs / len(prediction tokens), recall = lcs / len(answer tokens),
    F1 = 2 * precision * recall / (precision + recall), or 0 when lcs = 0. The score
    is the maximum over the gold answers. The official script reports the mean over
    questions times 100.

    Deviation: with no gold answers this returns 0.0; the official script raises
    (``max`` of an empty list).
    """
    pred_tokens = mixed_segmentation(prediction, rm_punc=True)
    return max(
        (_lcs_f1(pred_tokens, mixed_segmentation(a, rm_punc=True)) for a in answers),
        default=0.0,
    )


def cmrc_em(prediction: str, answers: list[str]) -> float:
    """Official CMRC 2018 exact match: 1.0 if ``remove_punctuation(prediction)``
    equals ``remove_punctuation(answer)`` for any gold answer, else 0.0 (also 0.0
    when there are no answers)."""
    normalized = remove_punctuation(prediction)
    return float(any(remove_punctuation(a) == normalized for a in answers))


def _squash(text: str) -> str:
    return "".join(remove_punctuation(text).split())


def answer_contains(text: str, answers: list[str]) -> bool:
    """True if some gold answer occurs in ``text`` after normalisation.

    Normalisation: ``remove_punctuation`` (lower-case, strip, drop the official
    CMRC punctuation list), then delete all whitespace, so "全市共建成 1459 个。"
    contains "1459个". No width folding (full-width "１４５９" is not "1459").
    Answers that normalise to "" are skipped: they would be contained in anything.
    """
    haystack = _squash(text)
    return any(needle and needle in haystack for needle in map(_squash, answers))


def _first_hit_ranks(
    ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int
) -> list[int]:
    """0-based ranks in the top ``k`` where a relevant id first appears."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    seen: set[Hashable] = set()
    ranks = []
    for rank, doc_id in enumerate(ranked[:k]):
        # Count each relevant id once, so a duplicated hit cannot push scores above 1.
        if doc_id in relevant and doc_id not in seen:
            seen.add(doc_id)
            ranks.append(rank)
    return ranks


def recall_at_k(
    ranked: Sequence[Hashable],
    relevant: Collection[Hashable],
    k: int,
    *,
    fraction: bool = False,
) -> float:
    """Recall@k of one query.

    Default (hit rate): 1.0 if at least one relevant id is among the first ``k``
    ranked ids, else 0.0. With ``fraction=True``: |relevant ∩ top k| / |relevant|.
    Returns 0.0 when ``relevant`` is empty; raises ValueError if k < 1.
    """
    relevant = set(relevant)
    if not relevant:
        return 0.0
    hits = _first_hit_ranks(ranked, relevant, k)
    return len(hits) / len(relevant) if fraction else float(bool(hits))


def mrr_at_k(
    ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = 10
) -> float:
    """Reciprocal rank of one query: 1 / (1-based rank of the first relevant id in
    the top ``k``), or 0.0 if none is there. MRR@k is its mean over queries."""
    hits = _first_hit_ranks(ranked, set(relevant), k)
    return 1.0 / (hits[0] + 1) if hits else 0.0


def ndcg_at_k(
    ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = 10
) -> float:
    """nDCG@k of one query with binary gains.

    DCG@k = sum over 1-based ranks i <= k holding a relevant id (each id counted
    once) of 1 / log2(i + 1). The ideal DCG puts min(k, |relevant|) relevant ids
    at ranks 1.. : sum_{i=1}^{min(k, |relevant|)} 1 / log2(i + 1).
    nDCG@k = DCG@k / ideal DCG; 0.0 when ``relevant`` is empty.
    """
    relevant = set(relevant)
    hits = _first_hit_ranks(ranked, relevant, k)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return sum(1 / math.log2(r + 2) for r in hits) / ideal if ideal else 0.0


@dataclass
class CitedSentence:
    """One sentence of a generated answer and the passage quotes it cites."""

    text: str
    quotes: list[str]


def quote_supports(quote: str, evidence: str, answers: list[str]) -> bool:
    """A quote supports a sentence if it contains the gold evidence string or any
    gold answer, by ``answer_contains`` normalisation (an empty evidence is ignored)."""
    return answer_contains(quote, [evidence, *answers])


def citation_precision(
    sentences: list[CitedSentence], evidence: str, answers: list[str]
) -> float:
    """Supporting citations / all citations, pooled over the answer's sentences.

    In the spirit of ALCE, but support is string containment (``quote_supports``),
    not NLI entailment. Returns 0.0 when there are no citations at all (uncited
    answers earn no precision, and the result is never NaN).
    """
    quotes = [q for s in sentences for q in s.quotes]
    if not quotes:
        return 0.0
    return sum(quote_supports(q, evidence, answers) for q in quotes) / len(quotes)


def citation_recall(
    sentences: list[CitedSentence], evidence: str, answers: list[str]
) -> float:
    """Sentences with at least one supporting citation / all sentences.

    Support as in ``quote_supports``; 0.0 when there are no sentences.
    """
    if not sentences:
        return 0.0
    supported = sum(
        any(quote_supports(q, evidence, answers) for q in s.quotes) for s in sentences
    )
    return supported / len(sentences)


def percentiles(
    values_ms: Sequence[float], ps: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """Latency percentiles keyed "p50", "p95", "p99.9", ... (``f"p{p:g}"``).

    numpy's default "linear" method: the p-th percentile of n sorted values
    v[0..n-1] sits at position h = (n - 1) * p / 100 and is interpolated between
    v[floor(h)] and v[ceil(h)]. An empty input returns {} (no NaN).
    """
    if len(values_ms) == 0:
        return {}
    values = np.percentile(np.asarray(values_ms, dtype=float), ps, method="linear")
    return {f"p{p:g}": float(v) for p, v in zip(ps, values, strict=True)}
