"""SQuAD-format reading-comprehension data → examples in both scripts → training windows.

DRCD is traditional Chinese; every example is kept in its original script and converted to
simplified with OpenCC (paragraph by paragraph, the answer re-located in the converted text),
so the reader learns both scripts users write.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from rag.reader.features import Window, encode_question
from rag.reader.tokenizer import E5Tokenizer, Encoding
from rag.text import sentence_spans


@dataclass(frozen=True)
class QAExample:
    qid: str
    question: str
    context: str
    answers: list[str]
    answer_start: int  # of answers[0] in context
    group: str  # paragraph key: "file|article title#paragraph index"


def load_squad(path: str | Path) -> list[QAExample]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    examples = []
    for article in data:
        for p_index, paragraph in enumerate(article["paragraphs"]):
            group = f"{Path(path).name}|{article.get('title', '')}#{p_index}"
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                start = qa["answers"][0]["answer_start"]
                examples.append(QAExample(qa["id"], qa["question"], paragraph["context"], answers, start, group))
    return examples


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def is_holdout(example: QAExample, share: int = 20) -> bool:
    """A fixed 1/share of paragraphs (by article title hash) never seen in training."""
    title = example.group.split("|", 1)[-1].rsplit("#", 1)[0]
    return int(hashlib.md5(title.encode()).hexdigest(), 16) % share == 0


def to_simplified(examples: list[QAExample]) -> list[QAExample]:
    """OpenCC t2s of question, context and answers; examples whose answer cannot be found
    again in the converted context are dropped."""
    import opencc

    convert = opencc.OpenCC("t2s").convert
    contexts: dict[str, str] = {}
    out = []
    for ex in examples:
        context = contexts.setdefault(ex.context, convert(ex.context))
        answer = convert(ex.answers[0])
        guess = len(convert(ex.context[: ex.answer_start]))
        start = _find_near(context, answer, guess)
        if start < 0:
            continue
        out.append(QAExample(ex.qid + "-s", convert(ex.question), context, [convert(a) for a in ex.answers], start, ex.group))
    return out


def _find_near(text: str, needle: str, guess: int) -> int:
    if text[guess : guess + len(needle)] == needle:
        return guess
    hits = [i for i in range(len(text)) if text.startswith(needle, i)]
    return min(hits, key=lambda i: abs(i - guess)) if hits else -1


@dataclass
class PreparedExample:
    example: QAExample
    question_ids: list[int]
    context: Encoding
    sentences: list[tuple[int, int]]


def prepare(tokenizer: E5Tokenizer, examples: list[QAExample]) -> list[PreparedExample]:
    cache: dict[str, tuple[Encoding, list[tuple[int, int]]]] = {}
    prepared = []
    for ex in examples:
        if ex.context not in cache:
            cache[ex.context] = (tokenizer.encode(ex.context), sentence_spans(ex.context))
        encoding, sentences = cache[ex.context]
        prepared.append(PreparedExample(ex, encode_question(tokenizer, ex.question), encoding, sentences))
    return prepared


@dataclass(frozen=True)
class TrainingWindow:
    window: Window
    start: int  # token positions of the answer; 0, 0 = no answer in this window
    end: int


def sample_windows(
    tokenizer: E5Tokenizer,
    item: PreparedExample,
    rng: random.Random,
    max_length: int = 192,
    negative_rate: float = 0.3,
) -> list[TrainingWindow]:
    """The serving path reads a candidate sentence with a few neighbours: train on the same,
    a sentence window around the answer (0–2 neighbours each side), plus sometimes a window
    elsewhere in the paragraph whose target is "no answer"."""
    ex = item.example
    a_start, a_end = ex.answer_start, ex.answer_start + len(ex.answers[0])
    sents = item.sentences or [(0, len(ex.context))]
    first = next((i for i, (s, e) in enumerate(sents) if e > a_start), len(sents) - 1)
    last = next((i for i, (s, e) in enumerate(sents) if e >= a_end), len(sents) - 1)
    lo, hi = max(0, first - rng.randint(0, 2)), min(len(sents) - 1, last + rng.randint(0, 2))
    out = [_window(tokenizer, item, sents[lo][0], sents[hi][1], (a_start, a_end), max_length)]
    others = [i for i in range(len(sents)) if i < lo or i > hi]
    if others and rng.random() < negative_rate:
        i = rng.choice(others)
        j = min(len(sents) - 1, i + rng.randint(0, 2))
        if sents[j][1] <= a_start or sents[i][0] >= a_end:
            out.append(_window(tokenizer, item, sents[i][0], sents[j][1], None, max_length))
    return [w for w in out if w is not None]


def _window(
    tokenizer: E5Tokenizer,
    item: PreparedExample,
    char_lo: int,
    char_hi: int,
    answer: tuple[int, int] | None,
    max_length: int,
) -> TrainingWindow | None:
    head = [tokenizer.bos, *item.question_ids, tokenizer.eos, tokenizer.eos]
    room = max_length - len(head) - 1
    offs = item.context.offsets
    tokens = [i for i, (s, e) in enumerate(offs) if s >= char_lo and e <= char_hi and e > s]
    if not tokens:
        return None
    if len(tokens) > room:  # too long: keep the stretch centred on the answer
        if answer is None:
            tokens = tokens[:room]
        else:
            centre = next((k for k, t in enumerate(tokens) if offs[t][1] > answer[0]), 0)
            begin = max(0, min(centre - room // 2, len(tokens) - room))
            tokens = tokens[begin : begin + room]
    ids = head + [item.context.ids[t] for t in tokens] + [tokenizer.eos]
    offsets: list[tuple[int, int] | None] = [None] * len(head) + [offs[t] for t in tokens] + [None]
    window = Window(ids, offsets)
    if answer is None:
        return TrainingWindow(window, 0, 0)
    positions = [(k + len(head), offs[t]) for k, t in enumerate(tokens)]
    starts = [p for p, (s, e) in positions if s <= answer[0] < e]
    ends = [p for p, (s, e) in positions if s < answer[1] <= e]
    if not starts or not ends or ends[0] < starts[0]:
        return None
    return TrainingWindow(window, starts[0], ends[0])
