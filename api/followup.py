"""Rule-based rewriting of follow-up questions into standalone ones.

Two kinds of follow-up are recognised:

* ellipsis — 「那阿里地区呢？」 / "what about Ngari?": the previous question is repeated with
  its entity of the same kind (place of the same level, person, time) swapped for the new one;
* reference — 「该村…」「当地…」「他…」: the demonstrative is replaced by the place named in
  the previous question, or the person the previous answer named.

Anything else is taken as a standalone question (`rewrite` returns None). The rules only
need word segmentation (jieba), so they cost microseconds and never call a model. With an
LLM configured the routes ask it first (`RagService.rewrite_followup`, given the turns as
messages from `turns_as_messages`) and fall back to these rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Administrative levels: a follow-up swaps a place for another of the same level.
_LEVELS: dict[str, int] = {
    "省": 1, "自治区": 1,
    "市": 2, "地区": 2, "自治州": 2, "州": 2, "盟": 2,
    "县": 3, "区": 3, "旗": 3,
    "镇": 4, "乡": 4, "街道": 4,
    "村": 5, "社区": 5, "居委会": 5,
}  # fmt: skip
_SUFFIXES = sorted(_LEVELS, key=len, reverse=True)
_PLACE_FLAGS = {"ns", "nrt"}  # jieba tags many Tibetan place names (拉萨, 林芝, 阿里) as nrt
_ENTITY_FLAGS = {"ns", "nrt", "nr", "nt", "nz"}
_GLUE_STOP = set("在的和与了是到从向对于及或被把将给为")
_WH = re.compile(r"多少|什么|谁|哪|几|怎么|为什么|为何|是否|吗|how|what|which|who|when|where|why", re.I)
_TIME = re.compile(r"\d{2,4}年(?:\d{1,2}月)?(?:\d{1,2}日)?|\d{1,2}月(?:\d{1,2}日)?|去年|今年|前年|明年")

_ELLIPSIS_ZH = re.compile(
    r"^(?:那么|那|还有|另外|再问|换成)?\s*(?P<x>[^，,。？?！!]{1,15}?)\s*(?:呢|又如何|又怎样|又怎么样|怎么样|如何)\s*[？?。.!！]*$"
)
_ELLIPSIS_EN = re.compile(r"^(?:and\s+)?(?:what|how)\s+about\s+(?P<x>.{1,60}?)\s*[?.!]*$|^and\s+(?P<y>(?:in\s+)?.{1,60}?)\s*\?$", re.I)
_DEMONSTRATIVE = re.compile(r"(?:该|这个|那个|此|本)(?P<suffix>" + "|".join(_SUFFIXES) + r")|当地|那里|这里")
_PRONOUN = re.compile(r"^(?:他|她|此人|这个人|这位|那位)")
_WHO = re.compile(r"谁|叫什么|什么名字|哪位|who", re.I)
_EN_STOP = {"How", "What", "Which", "Who", "When", "Where", "Why", "Is", "Are", "Was", "Were", "Do", "Does", "Did", "The", "In", "A", "An"}


@dataclass(frozen=True)
class Turn:
    """One earlier exchange: the standalone question and the short answer it got (and the
    whole answer, which an LLM rewriting a follow-up reads)."""

    question: str
    short_answer: str | None = None
    answer: str | None = None


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    kind: str  # place | person | time | entity
    level: int | None = None


def rewrite(question: str, previous: Sequence[Turn]) -> str | None:
    """The standalone form of `question` given earlier turns, or None if it already stands alone."""
    if not previous:
        return None
    question = question.strip()
    base = previous[-1]
    rewritten = _rewrite_ellipsis(question, base.question) or _rewrite_reference(question, base)
    return rewritten if rewritten and rewritten != question else None


def turns_from_messages(messages: Iterable[tuple[str, str]]) -> list[Turn]:
    """Standalone turns from (role, content) pairs, resolving each user turn against the last."""
    turns: list[Turn] = []
    for role, content in messages:
        if role == "user" and content.strip():
            turns.append(Turn(rewrite(content, turns) or content.strip()))
    return turns


def turns_as_messages(turns: Iterable[Turn]) -> list[dict[str, str]]:
    """Earlier turns as OpenAI-style messages (for an LLM rewriting the next follow-up)."""
    messages: list[dict[str, str]] = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.question})
        reply = turn.answer or turn.short_answer
        if reply:
            messages.append({"role": "assistant", "content": reply})
    return messages


# ---------------------------------------------------------------- ellipsis


def _rewrite_ellipsis(question: str, base: str) -> str | None:
    x = _elided_subject(question)
    if x is None:
        return None
    if _is_english(base):
        return _swap_english(base, x)
    target = _classify(x)
    span = _best_span(_spans(base), target)
    if span is None:
        return f"关于{x}，{base}"
    replacement = x
    x_suffix = _suffix_of(x) if target.kind == "place" else None
    if target.kind == "place" and target.level is None and span.level is not None:
        replacement = x + (_suffix_of(span.text) or "")  # 林芝 for 昌都市 → 林芝市
    elif x_suffix and span.level is None and base[span.end :].startswith(x_suffix):
        replacement = x[: -len(x_suffix)]  # 山南市 for 林芝(市委) → 山南(市委)
    return base[: span.start] + replacement + base[span.end :]


def _elided_subject(question: str) -> str | None:
    match = _ELLIPSIS_ZH.match(question) or _ELLIPSIS_EN.match(question)
    if not match:
        return None
    x = (match.groupdict().get("x") or match.groupdict().get("y") or "").strip()
    if match.re is _ELLIPSIS_ZH and question.startswith("那") and len(x) == 1:
        x = "那" + x  # 那曲 is a place, not 那 + 曲
    if not x or _WH.search(x):
        return None
    return x


def _classify(x: str) -> Span:
    if _TIME.fullmatch(x):
        return Span(0, len(x), x, "time")
    suffix = _suffix_of(x)
    if suffix and len(x) > len(suffix):
        return Span(0, len(x), x, "place", _LEVELS[suffix])
    flags = {flag for _, flag in _tag(x)}
    if flags & _PLACE_FLAGS:
        return Span(0, len(x), x, "place")
    if "nr" in flags:
        return Span(0, len(x), x, "person")
    return Span(0, len(x), x, "entity")


def _best_span(spans: list[Span], target: Span) -> Span | None:
    same_kind = [s for s in spans if s.kind == target.kind]
    if target.kind == "place" and target.level is not None:
        same_level = [s for s in same_kind if s.level == target.level]
        if same_level:
            return same_level[0]
    if same_kind:
        return same_kind[0]
    return next((s for s in spans if s.kind != "time"), None)


# ---------------------------------------------------------------- spans in the base question


def _tag(text: str) -> list[tuple[str, str]]:
    import jieba.posseg

    return [(pair.word, pair.flag) for pair in jieba.posseg.cut(text)]


def _suffix_of(text: str) -> str | None:
    return next((s for s in _SUFFIXES if text.endswith(s)), None)


def _spans(text: str) -> list[Span]:
    """Places (with level when a suffix shows it), people, times and other named entities."""
    tokens = _tag(text)
    starts = [0]
    for word, _ in tokens:
        starts.append(starts[-1] + len(word))
    spans = [Span(m.start(), m.end(), m.group(), "time") for m in _TIME.finditer(text)]
    i = 0
    while i < len(tokens):
        word, flag = tokens[i]
        start, end = starts[i], starts[i + 1]
        nxt = tokens[i + 1][0] if i + 1 < len(tokens) else ""
        if _suffix_of(word) and len(word) >= 2 and flag in {"ns", "n"}:
            start = _glue_left(tokens, starts, i)
            spans.append(_place(text, start, end))
        elif nxt in _LEVELS and (flag in _PLACE_FLAGS or (flag in {"n", "nr", "nz"} and len(word) >= 2)):
            spans.append(_place(text, start, starts[i + 2]))
            i += 1
        elif flag in _PLACE_FLAGS:
            spans.append(Span(start, end, word, "place"))
        elif flag == "nr" and len(word) >= 2:
            spans.append(Span(start, end, word, "person"))
        elif flag in _ENTITY_FLAGS and len(word) >= 2:
            spans.append(Span(start, end, word, "entity"))
        i += 1
    return sorted(spans, key=lambda s: s.start)


def _place(text: str, start: int, end: int) -> Span:
    name = text[start:end]
    suffix = _suffix_of(name)
    return Span(start, end, name, "place", _LEVELS[suffix] if suffix else None)


def _glue_left(tokens: list[tuple[str, str]], starts: list[int], i: int) -> int:
    """Segmentation often splits a village name (然|乌村, 来|古村): take back one single
    character that is not a function word."""
    if i > 0 and len(tokens[i - 1][0]) == 1 and tokens[i - 1][0] not in _GLUE_STOP and tokens[i - 1][1] != "x":
        return starts[i - 1]
    return starts[i]


# ---------------------------------------------------------------- references


def _rewrite_reference(question: str, base: Turn) -> str | None:
    if _PRONOUN.match(question) and base.short_answer and _WHO.search(base.question):
        return _PRONOUN.sub(base.short_answer, question, count=1)
    match = _DEMONSTRATIVE.search(question)
    if not match:
        return None
    places = [s for s in _spans(base.question) if s.kind == "place"]
    suffix = match.group("suffix")
    if suffix:
        level = _LEVELS[suffix]
        places = [s for s in places if s.level == level] or [s for s in places if s.text.endswith(suffix)]
    if not places:
        return None
    # The most specific place is named last (八宿县然乌镇然乌村).
    return question[: match.start()] + places[-1].text + question[match.end() :]


# ---------------------------------------------------------------- English


def _is_english(text: str) -> bool:
    return not re.search(r"[\u4e00-\u9fff]", text)


def _swap_english(base: str, x: str) -> str:
    x = re.sub(r"^in\s+", "", x, flags=re.I)
    for match in re.finditer(r"[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*", base):
        if match.group() not in _EN_STOP:
            return base[: match.start()] + x + base[match.end() :]
    return f"{base.rstrip('?')} ({x})?"
