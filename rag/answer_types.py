"""Expected answer types of Chinese questions and the spans in a sentence that fit them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from rag.text import match_form
from rag.tokenize import pos_words


class AnswerType(StrEnum):
    NUMBER = "number"
    DATE = "date"
    PERSON = "person"
    PLACE = "place"
    OTHER = "other"


# Order matters: the first pattern found in the question decides.
_TYPE_CUES: list[tuple[AnswerType, re.Pattern[str]]] = [
    (AnswerType.DATE, re.compile(r"什么时候|何时|哪一?年|哪个月|哪一?天|几月|几号|什么时间|哪个时间|多少年")),
    (AnswerType.NUMBER, re.compile(r"多少|几[个名位人户期次家项座条种岁年万亿千百]?|多大|多高|多长|多重|多远|多久|比例|百分之")),
    (AnswerType.PERSON, re.compile(r"谁|叫什么名字|名字是|哪位|什么人|姓名")),
    (AnswerType.PLACE, re.compile(r"哪里|哪儿|何地|何处|哪个(?:县|市|村|镇|乡|区|省|国家|地区|城市|地方)|什么地方|在哪")),
]
WH_WORDS = re.compile(r"多少|几|什么时候|何时|哪一年|哪年|谁|叫什么名字|什么|哪里|哪儿|哪个|哪些|哪位|哪|何|怎样|如何|怎么")

# Measure words and units, longest first so 平方公里 wins over 公里.
MULTI_CHAR_UNITS = sorted(
    "人次 万元 亿元 美元 平方公里 平方米 公里 千米 厘米 毫米 公斤 千克 公顷 小时 分钟 英尺 英里 摄氏度 年代 多年 周年 个月".split(),
    key=len,
    reverse=True,
)
SINGLE_CHAR_UNITS = "个名人户期次家项村所元米亩吨岁天届批条支座件场倍级层位种部集首枚架辆艘颗株只匹头本篇张分秒克度%‰"
_UNIT_ALTERNATION = "|".join(MULTI_CHAR_UNITS) + f"|[{SINGLE_CHAR_UNITS}]"
_NUMBER_RE = re.compile(
    r"(?:约|近|超过|逾)?(?:\d+(?:[.,]\d+)*|[零〇一二三四五六七八九十百千两][零〇一二三四五六七八九十百千万亿两]*)(?:万|亿|千|百)?(?:余|多)?"
    rf"(?:{_UNIT_ALTERNATION})?"
)
_DATE_RE = re.compile(r"\d{4}年(?:\d{1,2}月(?:\d{1,2}日)?)?|\d{1,2}月\d{1,2}日|\d{1,2}月(?:份|上旬|中旬|下旬)?|[上下本今去明]年")
_PLACE_SUFFIX = re.compile(r"[\u4e00-\u9fff]{1,8}?(?:省|自治区|市|地区|县|区|镇|乡|村|社区|街道)")
_ROLE_BEFORE_NAME = re.compile(r"(?:书记|主任|党员|记者|委员|局长|县长|市长|乡长|镇长|村长|队长|小哥|骑手|负责人|驾驶员|老师|同志)")


def question_type(question: str) -> AnswerType:
    q = match_form(question)
    for answer_type, cue in _TYPE_CUES:
        if cue.search(q):
            return answer_type
    return AnswerType.OTHER


def question_unit(question: str) -> str | None:
    """The measure word asked for: 多少名 → 名, 几个 → 个."""
    match = re.search(rf"(?:多少|几)({_UNIT_ALTERNATION})", match_form(question))
    return match.group(1) if match else None


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


def number_spans(sentence: str) -> list[Span]:
    """Quantities; a bare year (2023年) is a date, not an answer to 多少."""
    spans = []
    for m in _NUMBER_RE.finditer(sentence):
        is_year = sentence[m.end() : m.end() + 1] == "年" and re.fullmatch(r"\d{4}", m.group())
        text = m.group().lstrip("约近超过逾")
        if not is_year and text and (any(c.isdigit() for c in text) or len(text) > 1):
            spans.append(Span(m.start(), m.end(), m.group()))
    return spans


def date_spans(sentence: str) -> list[Span]:
    return [Span(m.start(), m.end(), m.group()) for m in _DATE_RE.finditer(sentence)]


def person_spans(sentence: str) -> list[Span]:
    """Person names: jieba's nr tags, plus 2-3 characters right after a role word
    (党支部书记蒋雄), which jieba often misses for Tibetan names."""
    spans: list[Span] = []
    pos = 0
    for word, flag in pos_words(sentence):
        if flag.startswith("nr") and len(word) >= 2:
            spans.append(Span(pos, pos + len(word), word))
        pos += len(word)
    for role in _ROLE_BEFORE_NAME.finditer(sentence):
        tail = re.match(r"[\u4e00-\u9fff]{2,4}", sentence[role.end() :])
        if tail:
            name = trim_name(tail.group())
            spans.append(Span(role.end(), role.end() + len(name), name))
    # jieba splits long Tibetan names (阿旺 | 洛桑): keep the longest of overlapping spans.
    return [s for s in spans if not any(o.start <= s.start and s.end <= o.end and o.end - o.start > s.end - s.start for o in spans)]


def trim_name(candidate: str) -> str:
    # Names end before verbs that usually follow them in news prose.
    cut = re.search(r"(?:如是|告诉|介绍|说|表示|带领|看着|指出|认为|兴奋|自豪|满怀|深入|在|的|是|和|等)", candidate)
    return candidate[: cut.start()] if cut and cut.start() >= 2 else candidate


def place_spans(sentence: str) -> list[Span]:
    spans: list[Span] = [Span(m.start(), m.end(), m.group()) for m in _PLACE_SUFFIX.finditer(sentence)]
    pos = 0
    for word, flag in pos_words(sentence):
        if flag == "ns":
            spans.append(Span(pos, pos + len(word), word))
        pos += len(word)
    return spans


_PLACE_SUFFIXES = ("自治区", "地区", "省", "市", "县", "区", "镇", "乡", "村")


def place_stems(text: str) -> list[str]:
    """Place names (jieba ns) without 市/县/地区 suffixes, so 阿里地区 also matches 阿里."""
    stems = []
    for word, flag in pos_words(text):
        if flag.startswith("ns"):
            stems.append(next((word[: -len(s)] for s in _PLACE_SUFFIXES if word.endswith(s) and len(word) - len(s) >= 2), word))
    return stems


def typed_spans(sentence: str, answer_type: AnswerType) -> list[Span]:
    finder = {
        AnswerType.NUMBER: number_spans,
        AnswerType.DATE: date_spans,
        AnswerType.PERSON: person_spans,
        AnswerType.PLACE: place_spans,
    }.get(answer_type)
    return finder(sentence) if finder else []


class QuantityKind(StrEnum):
    MONEY = "money"
    COUNT = "count"  # people, households, head of livestock, things: a number with its measure word


_MONEY_ASKED = re.compile(
    r"多少钱|多少元|多少万元|多少亿元|金额|收入|资金|投资|交易额|产值|营业额|销售额|价格|售价|费用|成本|预算|工资|奖金|总值|利润|营收|票房|赔偿|罚款|花费|造价|耗资"
)
_COUNT_ASKED = re.compile(
    r"(?:多少|几)(?:人次|人|名|位|户|头|只|匹|辆|个|家)|游客|人口|人数|居民|村民|群众|学生|观众|员工|职工|党员|干部|会员|旅客|乘客|用户"
)
_NUMERAL = r"[\d〇零一二三四五六七八九十百千万亿两][余多]?\s*"  # 三万多: 许多人 and 多元化 are no quantity
_CURRENCY = re.compile(_NUMERAL + r"(?:美元|欧元|港元|港币|台币|日元|韩元|英镑|美金|人民币|元|圆|镑|円)|[$¥￥€£]\s*\d")
_COUNTED = re.compile(_NUMERAL + r"(?:人次|人|名|位|户|口|头|只|匹|辆)")


def asked_quantity(question: str) -> QuantityKind | None:
    """Money or a count, where the question says which (收入 | 多少游客); None otherwise."""
    q = match_form(question)
    money, count = bool(_MONEY_ASKED.search(q)), bool(_COUNT_ASKED.search(q))
    return QuantityKind.MONEY if money and not count else QuantityKind.COUNT if count and not money else None


def answers_other_quantity(asked: QuantityKind | None, span: str) -> bool:
    """A sum of money does not answer how many visitors came, nor a head count what was
    earned; nor does a span that holds the other kind beside the one asked (十五万人次，旅游
    收入达到两千三百万元: the reader's runner-up once the sum alone is dropped)."""
    if asked is None:
        return False
    other = _CURRENCY if asked is QuantityKind.COUNT else _COUNTED
    return bool(other.search(match_form(span)))
