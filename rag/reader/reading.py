"""Read a question against one or more contexts with any start/end-logit function (the
onnxruntime session when serving, the torch model when training): windows in one batch,
n-best spans from every window, best first."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rag.reader.features import Span, Window, best_spans, encode_question, pad_batch, windows_for
from rag.reader.tokenizer import E5Tokenizer

LogitsFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def read_windows(logits_fn: LogitsFn, pad_id: int, windows: list[Window], batch_size: int = 16, n_best: int = 20) -> list[Span]:
    spans: list[Span] = []
    for i in range(0, len(windows), batch_size):
        part = windows[i : i + batch_size]
        ids, mask = pad_batch(part, pad_id)
        start_logits, end_logits = logits_fn(ids, mask)
        for row, window in enumerate(part):
            spans.extend(best_spans(window, start_logits[row], end_logits[row], n_best=n_best))
    spans.sort(key=lambda sp: sp.score, reverse=True)
    return spans


def read(
    logits_fn: LogitsFn,
    tokenizer: E5Tokenizer,
    question: str,
    contexts: Sequence[str],
    max_length: int = 256,
    stride: int = 128,
    n_best: int = 20,
    batch_size: int = 16,
) -> list[Span]:
    question_ids = encode_question(tokenizer, question)
    windows: list[Window] = []
    for index, context in enumerate(contexts):
        windows += windows_for(tokenizer, question_ids, tokenizer.encode(context), max_length, stride, index)
    return read_windows(logits_fn, tokenizer.pad, windows, batch_size, n_best)
