"""Span-extraction pre- and post-processing, in the shape of `transformers`' run_qa example:
question + context → fixed-length windows (doc stride) with each token's character offsets
into the context; start/end logits → n-best spans mapped back to characters.

Input layout (XLM-R pairs): <s> query: QUESTION </s></s> CONTEXT </s>, token type 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rag.reader.tokenizer import E5Tokenizer, Encoding

QUESTION_PREFIX = "query: "
MAX_QUESTION_TOKENS = 48


@dataclass(frozen=True)
class Window:
    input_ids: list[int]
    # Character span in the context for each token; None for question and special tokens.
    offsets: list[tuple[int, int] | None]
    context_index: int = 0  # which context of a batch this window reads


@dataclass(frozen=True)
class Span:
    start: int  # character offsets into the context
    end: int
    score: float  # start logit + end logit − the window's no-answer logit
    start_logit: float
    end_logit: float
    null_logit: float
    context_index: int = 0


def encode_question(tokenizer: E5Tokenizer, question: str) -> list[int]:
    return tokenizer.encode(QUESTION_PREFIX + question).ids[:MAX_QUESTION_TOKENS]


def windows_for(
    tokenizer: E5Tokenizer,
    question_ids: list[int],
    context: Encoding,
    max_length: int = 256,
    stride: int = 128,
    context_index: int = 0,
) -> list[Window]:
    """Cut the context into windows that fit `max_length` with the question, overlapping so
    that consecutive windows start `stride` tokens apart (run_qa's doc stride). Tokens that
    cover no character (a lone `▁` before a word) are left out, as in training."""
    context = _visible(context)
    head = [tokenizer.bos, *question_ids, tokenizer.eos, tokenizer.eos]
    room = max(8, max_length - len(head) - 1)
    step = max(1, min(stride, room))
    windows: list[Window] = []
    n = len(context.ids)
    start = 0
    while True:
        end = min(n, start + room)
        ids = head + context.ids[start:end] + [tokenizer.eos]
        offsets: list[tuple[int, int] | None] = [None] * len(head)
        offsets += list(context.offsets[start:end])
        offsets.append(None)
        windows.append(Window(ids, offsets, context_index))
        if end >= n:
            return windows
        start += step


def _visible(context: Encoding) -> Encoding:
    keep = [i for i, (s, e) in enumerate(context.offsets) if e > s]
    return Encoding([context.ids[i] for i in keep], [context.offsets[i] for i in keep])


def best_spans(
    window: Window,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_tokens: int = 30,
) -> list[Span]:
    """n-best valid spans of one window: start ≤ end, both inside the context, short enough."""
    valid = np.array([o is not None for o in window.offsets] + [False] * (len(start_logits) - len(window.offsets)))
    null = float(start_logits[0] + end_logits[0])
    starts = np.argsort(np.where(valid, start_logits, -np.inf))[::-1][:n_best]
    ends = np.argsort(np.where(valid, end_logits, -np.inf))[::-1][:n_best]
    spans: list[Span] = []
    for s in starts:
        if not valid[s]:
            continue
        for e in ends:
            if not valid[e] or e < s or e - s + 1 > max_answer_tokens:
                continue
            first, last = window.offsets[s], window.offsets[e]
            assert first is not None and last is not None
            score = float(start_logits[s] + end_logits[e])
            spans.append(Span(first[0], last[1], score - null, float(start_logits[s]), float(end_logits[e]), null, window.context_index))
    spans.sort(key=lambda sp: sp.score, reverse=True)
    return spans[:n_best]


def pad_batch(windows: list[Window], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input ids and attention mask, right-padded to the longest window."""
    width = max(len(w.input_ids) for w in windows)
    ids = np.full((len(windows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(windows), width), dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, : len(window.input_ids)] = window.input_ids
        mask[row, : len(window.input_ids)] = 1
    return ids, mask
