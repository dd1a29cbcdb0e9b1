"""Every prompt the service sends to an LLM, and the context budget that decides which
retrieved passages fit into it.

Token counts are estimates (no tokenizer of the serving model is available here):
`approx_tokens` counts 1 token per CJK character or other non-ASCII symbol (Chinese
punctuation included), 1 per Latin word, 1 per ASCII punctuation mark and 1 per 3 digits.
Real tokenizers spend ~0.6-0.8 tokens per Chinese character (Qwen, GLM, DeepSeek) to
~1-1.5 (Llama 3, Mistral, Llama 2), so the estimate is about right for the former and a
little low for the latter; `BUDGET_SAFETY` keeps a 10 % margin for that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rag.types import Hit

REFUSAL_PHRASE = "资料中没有找到相关信息"

ANSWER_SYSTEM_PROMPT = f"""你是一个严谨的中文问答助手。你只能根据用户消息中给出的编号资料回答问题，不得使用资料以外的知识，不得编造。
要求：
1. 用简洁、通顺的中文回答，一般不超过三句话。
2. 每句话都以句号结尾，并在句号后紧跟支持这句话的资料编号，格式如“……。[2]”；
   一句话由多条资料支持时写成“……。[1][3]”。只能使用资料中出现的编号。
3. 数字、人名、地名、日期必须与资料原文完全一致，不要换算，不要估计。
4. 如果资料中没有问题的答案，只回答：{REFUSAL_PHRASE}。"""

ANSWER_USER_TEMPLATE = """资料：
{passages}

问题：{question}
请只根据以上资料回答，每句话末尾标注资料编号。"""

PASSAGE_TEMPLATE = "[{n}] 《{title}》{date}\n{text}"

FOLLOWUP_SYSTEM_PROMPT = """你的任务是把对话中用户最后提出的问题改写成一个不依赖上下文、可以单独拿去检索的完整问题。
要求：
1. 把代词和省略的内容（例如“他”“那里”“这个项目”“还有呢”）换成对话中明确提到的人名、地名、事物。
2. 不要回答问题，不要加入对话中没有出现的信息。
3. 只输出改写后的问题，一行，不加引号、前缀或解释。如果问题本身已经完整，原样输出。"""

FOLLOWUP_USER_TEMPLATE = """对话记录：
{history}

最后的问题：{question}
改写后的问题："""

# Share of the context window the estimate may fill (the estimate can run low).
BUDGET_SAFETY = 0.9
# Minimum room for passages even when the configuration leaves less (the server may then reject the prompt).
MIN_PASSAGE_TOKENS = 128
FOLLOWUP_TURNS = 6
FOLLOWUP_TURN_CHARS = 300

_TOKEN_RE = re.compile(r"[A-Za-z]+|[0-9]+|\S")


def approx_tokens(text: str) -> int:
    """Estimated token count of `text` (see the module docstring for the rule)."""
    total = 0
    for piece in _TOKEN_RE.findall(text):
        total += math.ceil(len(piece) / 3) if piece[0].isdigit() and piece.isascii() else 1
    return total


@dataclass(frozen=True)
class PromptPassage:
    """A retrieved passage as numbered in the prompt: [n] is hits[n-1]."""

    n: int
    hit: Hit
    text: str  # possibly truncated when even the best passage alone is over budget

    @property
    def title(self) -> str:
        return self.hit.chunk.title


@dataclass(frozen=True)
class AnswerPrompt:
    messages: list[dict[str, str]]
    passages: list[PromptPassage]
    dropped: int  # passages trimmed for the budget
    estimated_tokens: int


def render_passage(n: int, hit: Hit, text: str) -> str:
    """[n] 《title》（date） and the text; blank lines inside a passage are closed up so that
    a blank line only ever separates two passages."""
    date = f"（{hit.chunk.date}）" if hit.chunk.date else ""
    body = re.sub(r"\s*\n\s*", "\n", text.strip())
    return PASSAGE_TEMPLATE.format(n=n, title=hit.chunk.title or "无标题", date=date, text=body)


def passage_budget(context_tokens: int, max_answer_tokens: int, question: str) -> int:
    """Tokens left for passages once the system prompt, the template, the question and the
    answer have their share of the window."""
    fixed = approx_tokens(ANSWER_SYSTEM_PROMPT) + approx_tokens(ANSWER_USER_TEMPLATE.format(passages="", question=question))
    usable = int(context_tokens * BUDGET_SAFETY) - max_answer_tokens - fixed
    return max(usable, MIN_PASSAGE_TOKENS)


def fit_passages(hits: Sequence[Hit], budget: int) -> list[PromptPassage]:
    """Passages in rank order while they fit; whole passages are trimmed from the lowest
    rank up. The best passage is always kept, cut to the budget if it alone is too long."""
    kept: list[PromptPassage] = []
    used = 0
    for n, hit in enumerate(hits, 1):
        cost = approx_tokens(render_passage(n, hit, hit.chunk.text)) + 1  # +1: the blank line between passages
        if used + cost > budget:
            break
        kept.append(PromptPassage(n, hit, hit.chunk.text))
        used += cost
    if not kept and hits:
        room = budget - approx_tokens(render_passage(1, hits[0], ""))
        kept.append(PromptPassage(1, hits[0], truncate_to_tokens(hits[0].chunk.text, room)))
    return kept


def truncate_to_tokens(text: str, budget: int) -> str:
    """The longest prefix of `text` whose estimate is within `budget` (at least one char)."""
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if approx_tokens(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def answer_prompt(question: str, hits: Sequence[Hit], context_tokens: int, max_answer_tokens: int) -> AnswerPrompt:
    passages = fit_passages(hits, passage_budget(context_tokens, max_answer_tokens, question))
    block = "\n\n".join(render_passage(p.n, p.hit, p.text) for p in passages)
    messages = [
        {"role": "system", "content": ANSWER_SYSTEM_PROMPT},
        {"role": "user", "content": ANSWER_USER_TEMPLATE.format(passages=block, question=question.strip())},
    ]
    estimate = sum(approx_tokens(m["content"]) for m in messages)
    return AnswerPrompt(messages, passages, len(hits) - len(passages), estimate)


# ---------------------------------------------------------------- follow-up rewriting

_MARKERS = re.compile(r"\s*[\[［【]\s*\d{1,3}(?:\s*[,，、]\s*\d{1,3})*\s*[\]］】]")
_SPEAKERS = {"user": "用户", "assistant": "助手"}


def followup_messages(history: Sequence[Mapping[str, str]], question: str) -> list[dict[str, str]]:
    """Messages asking the LLM to make `question` self-contained given earlier turns
    (OpenAI-style {"role", "content"} dicts; system turns are ignored)."""
    lines = []
    for turn in [t for t in history if t.get("role") in _SPEAKERS][-FOLLOWUP_TURNS:]:
        content = _MARKERS.sub("", str(turn.get("content", ""))).strip().replace("\n", " ")
        if len(content) > FOLLOWUP_TURN_CHARS:
            content = content[:FOLLOWUP_TURN_CHARS] + "…"
        lines.append(f"{_SPEAKERS[turn['role']]}：{content}")
    return [
        {"role": "system", "content": FOLLOWUP_SYSTEM_PROMPT},
        {"role": "user", "content": FOLLOWUP_USER_TEMPLATE.format(history="\n".join(lines) or "（无）", question=question.strip())},
    ]


_REWRITE_PREFIX = re.compile(r"^(?:改写后的问题|改写后|问题|独立问题|rewritten question)\s*[:：]\s*", re.IGNORECASE)
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』"}


def clean_rewrite(output: str, max_chars: int) -> str | None:
    """The rewritten question from the LLM's reply, or None when it is unusable
    (empty, several lines of prose, longer than a question may be)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return None
    text = _REWRITE_PREFIX.sub("", lines[0]).strip()
    if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    if not text or len(text) > max_chars or REFUSAL_PHRASE in text:
        return None
    return text
