"""Answers chosen by the trained reader.

The heuristic composer's sentence scores pick the windows worth reading (the best few
candidate sentences with a neighbour on each side, merged where they touch); the reader
reads them best first and stops once a span is probable enough; every n-best span is
scored by a small logistic combination of the reader's span score with the heuristic
features (fitted on held-out DRCD by `benchmarks/fit_reader_combiner.py`); the best span
becomes `short_answer`, the sentence that holds it the first cited sentence, followed by
the heuristic composer's own picks that do not overlap it. Below the calibrated
probability: refusal."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.answer_types import AnswerType, answers_other_quantity, asked_quantity, question_type, question_unit, trim_name
from rag.compose import REFUSAL_MESSAGE, Candidate, ExtractiveComposer, dense_scale, repeats
from rag.reader import Reader
from rag.reader.features import Span
from rag.reader.layout import MODEL_DIR
from rag.text import match_form, sentence_spans
from rag.types import Answer, Hit, ShortAnswerSpan

FEATURES = (
    "span_score",
    "span_logits",
    "null_logit",
    "sentence_score",
    "coverage",
    "type_match",
    "inverse_rank",
    "dense",
    "anchor",
    "crosses_clause",
)
# Before a combiner is fitted: the reader's own score decides.
DEFAULT_WEIGHTS = {"span_score": 0.5, "bias": 0.0}
EDGE_JUNK = " \t\n，。、；：！？,.;:!?"
# A span running over a clause break: 5-fold on held-out DRCD (fit_reader_combiner.py), adding
# this feature took EM 0.642 → 0.661 and F1 0.750 → 0.767.
CLAUSE_BREAK = re.compile(r"[，。；！？;!?]|(?<!\d),|,(?!\d)")  # not the comma of 6,476
# Windows are read best candidate first, and reading stops once a span is this probable.
# Held-out DRCD (benchmarks/reader_windows.py, results/reader_windows.json): 1.51 windows a
# question instead of 3.91, reading p50 112 ms instead of 233, EM 0.656 / F1 0.758 against
# 0.656 / 0.755; lower values save ~5% more, and a margin above the refusal threshold (0.35)
# keeps a barely answerable first window from ending the search.
STOP_READING_AT: float | None = 0.5
SPANS_PER_WINDOW = 5


@dataclass(frozen=True)
class Combiner:
    """Logistic regression over FEATURES; `probability` is P(the span answers the question)."""

    weights: dict[str, float]
    threshold: float = 0.5  # refusal threshold on the probability

    @classmethod
    def load(cls, path: Path = MODEL_DIR / "combiner.json") -> Combiner:
        if not path.exists():
            return cls(DEFAULT_WEIGHTS)
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["weights"], data.get("threshold", 0.5))

    def probability(self, features: dict[str, float]) -> float:
        z = self.weights.get("bias", 0.0) + sum(self.weights.get(k, 0.0) * v for k, v in features.items())
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


@dataclass
class ReadWindow:
    hit_rank: int
    hit: Hit
    text: str  # the document text (or the chunk text when the document is unknown)
    start: int
    end: int
    in_document: bool = True  # False: offsets are into the chunk text


@dataclass
class ScoredSpan:
    window: ReadWindow
    start: int  # offsets into window.text
    end: int
    sentence: tuple[int, int]  # the sentence(s) holding the span
    features: dict[str, float]
    probability: float
    raw: tuple[int, int] = (0, 0)  # the reader's own edges (trimmed), before the asked unit is added

    @property
    def raw_text(self) -> str:
        return self.window.text[self.raw[0] : self.raw[1]]

    @property
    def text(self) -> str:
        return self.window.text[self.start : self.end]


class ReaderComposer:
    def __init__(
        self,
        reader: Reader,
        heuristic: ExtractiveComposer,
        combiner: Combiner | None = None,
        refusal_threshold: float | None = None,
        windows: int = 4,
        neighbours: int = 1,
        max_length: int = 192,
        stride: int | None = None,
        stop_reading_at: float | None = STOP_READING_AT,
    ) -> None:
        self.reader = reader
        self.heuristic = heuristic
        self.combiner = combiner or Combiner.load()
        self.refusal_threshold = self.combiner.threshold if refusal_threshold is None else refusal_threshold
        self.windows = windows
        self.neighbours = neighbours
        self.max_length = max_length
        self.stride = stride or max_length // 2
        self.stop_reading_at = stop_reading_at  # None: read every window

    def compose(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> Answer:
        ranked = self.rank_sentences(question, query_vector, hits)
        scored = self.read_spans(question, ranked)
        confidence = scored[0].probability if scored else 0.0
        if not scored or confidence < self.refusal_threshold:
            return Answer(question, REFUSAL_MESSAGE, None, True, passages=hits, confidence=confidence)
        return self.answer(question, scored[0], ranked, hits)

    def answer(self, question: str, best: ScoredSpan, ranked: list[Candidate], hits: list[Hit]) -> Answer:
        """The sentence holding the span first, then the heuristic composer's own picks (its best
        sentence and close runners-up) that do not overlap it, up to its sentence limit."""
        w = best.window
        s, e = best.sentence
        cand = Candidate(w.hit_rank, w.hit, s, e, w.text[s:e], score=best.probability)
        others = [c for c in self.heuristic.select(ranked) if not repeats(c, cand)]
        citations, sentences = self.heuristic.cite([cand, *others][: self.heuristic.max_sentences])
        text = "".join(f"{x.text}[{x.citations[0]}]" for x in sentences)
        span = ShortAnswerSpan(w.hit.chunk.doc_id, best.start, best.end, citations[0].n) if w.in_document else None
        return Answer(question, text, best.text, False, citations, hits, sentences, confidence=best.probability, short_answer_span=span)

    def short_answer_for(self, question: str, text: str) -> str | None:
        """The reader's span in one sentence (the generative composer's verified sentences)."""
        return reader_answer(self.reader, question, [text], self.max_length)

    # ------------------------------------------------------------ reading

    def score_spans(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> list[ScoredSpan]:
        return self.read_spans(question, self.rank_sentences(question, query_vector, hits))

    def rank_sentences(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> list[Candidate]:
        """The heuristic composer's candidate sentences, best first."""
        candidates = self.heuristic.candidates(hits)
        if candidates:
            self.heuristic.score(question, query_vector, candidates)
        return sorted(candidates, key=lambda c: -c.score)

    def read_spans(self, question: str, ranked: list[Candidate]) -> list[ScoredSpan]:
        """Every scored span of the windows read, most probable first."""
        scored: list[ScoredSpan] = []
        for window_spans in self.read_windows(question, ranked):
            scored += window_spans
            if window_spans and stops_reading(window_spans[0].probability, self.stop_reading_at):
                break
        return sorted(scored, key=lambda x: -x.probability)

    def read_windows(self, question: str, ranked: list[Candidate]) -> Iterator[list[ScoredSpan]]:
        """Per window to read, best candidate's first: its scored spans, most probable first.
        A window's spans do not depend on the other windows, so reading can stop early."""
        if not ranked:
            return
        by_sentence = {(c.hit.chunk.doc_id, c.start): c for c in ranked}
        unit = question_unit(question)
        person = question_type(question) is AnswerType.PERSON
        asked = asked_quantity(question)
        for window in self.windows_to_read(ranked):
            spans = self.reader.read(question, [window.text[window.start : window.end]], max_length=self.max_length, stride=self.stride)
            scored: dict[tuple[int, int], ScoredSpan] = {}
            for span in spans[:SPANS_PER_WINDOW]:
                item = self.score_span(span, window, by_sentence, unit, ranked[0].score, person)
                if item.start >= item.end:  # only punctuation: nothing to answer with
                    continue
                if answers_other_quantity(asked, item.text):  # 两千三百万元 for 多少游客: DRCD has no such case to fit
                    continue
                key = (item.start, item.end)
                if key not in scored or scored[key].probability < item.probability:
                    scored[key] = item
            yield sorted(scored.values(), key=lambda x: -x.probability)

    def windows_to_read(self, ranked: list[Candidate]) -> list[ReadWindow]:
        """The top candidates' sentences with `neighbours` sentences each side, merged per document."""
        picked: list[ReadWindow] = []
        for cand in ranked:
            if len(picked) >= self.windows:
                break
            text, known = _context_text(self.heuristic, cand)
            sents = sentence_spans(text, max(0, cand.start - 400), min(len(text), cand.end + 400))
            here = next((i for i, (s, e) in enumerate(sents) if s <= cand.start < e or s >= cand.start), None)
            if here is None:
                continue
            lo, hi = sents[max(0, here - self.neighbours)][0], sents[min(len(sents) - 1, here + self.neighbours)][1]
            merged = False
            for w in picked:
                same = w.hit.chunk.doc_id == cand.hit.chunk.doc_id and (known or w.hit.chunk.chunk_id == cand.hit.chunk.chunk_id)
                # ==, not is: the Milvus store hands out a new Document (and text) per call.
                if same and w.text == text and lo <= w.end and w.start <= hi:
                    w.start, w.end, merged = min(w.start, lo), max(w.end, hi), True
                    break
            if not merged:
                picked.append(ReadWindow(cand.hit_rank, cand.hit, text, lo, hi, known))
        return picked

    def score_span(
        self,
        span: Span,
        window: ReadWindow,
        by_sentence: dict[tuple[str, int], Candidate],
        unit: str | None,
        best_heuristic: float,
        person: bool = False,
    ) -> ScoredSpan:
        text = window.text
        start, end = trim(text, window.start + span.start, window.start + span.end)
        raw = (start, end)
        sentence = covering_sentence(text, start, end, window)
        start, end = with_unit(text, start, end, unit)
        if person:  # 蒋雄|如是说: the name ends before the verb after it, even one the span cut into
            end = start + min(end - start, len(trim_name(match_form(text[start : end + 2]))))
        cand = by_sentence.get((window.hit.chunk.doc_id, sentence[0]))
        features = span_features(span, window, cand, best_heuristic, text[start:end])
        return ScoredSpan(window, start, end, sentence, features, self.combiner.probability(features), raw)


def reader_answer(reader: Reader, question: str, contexts: list[str], max_length: int = 192) -> str | None:
    """The reader alone: its best span over `contexts`, trimmed and with the asked unit; as
    in the composer, never the other kind of quantity than the one asked."""
    unit, asked = question_unit(question), asked_quantity(question)
    for span in reader.read(question, contexts, max_length=max_length, stride=max_length // 2):
        text = contexts[span.context_index]
        start, end = trim(text, span.start, span.end)
        start, end = with_unit(text, start, end, unit)
        if end > start and not answers_other_quantity(asked, text[start:end]):
            return text[start:end]
    return None


def stops_reading(best_probability: float, stop_reading_at: float | None) -> bool:
    """Whether reading ends after a window whose best span is this probable (None: never)."""
    return stop_reading_at is not None and best_probability >= stop_reading_at


def span_features(span: Span, window: ReadWindow, cand: Candidate | None, best_heuristic: float, answer: str) -> dict[str, float]:
    hit = window.hit
    return {
        "span_score": span.score / 10.0,
        "span_logits": (span.start_logit + span.end_logit) / 10.0,
        "null_logit": span.null_logit / 10.0,
        "sentence_score": cand.score if cand else 0.0,
        "coverage": cand.coverage if cand else 0.0,
        "type_match": cand.type_match if cand else 0.0,
        "inverse_rank": 1.0 / window.hit_rank,
        "dense": dense_scale(hit.dense_score or 0.0),
        "anchor": best_heuristic,
        "crosses_clause": float(bool(CLAUSE_BREAK.search(answer))),
    }


def _context_text(heuristic: ExtractiveComposer, cand: Candidate) -> tuple[str, bool]:
    doc = heuristic.document(cand.hit.chunk.doc_id)
    return (doc.text, True) if doc else (cand.hit.chunk.text, False)


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in EDGE_JUNK:
        start += 1
    while end > start and text[end - 1] in EDGE_JUNK:
        end -= 1
    # The tokenizer glues the particle 的 to what follows (县区|的三|百|二十|名): a span cannot
    # start after it, so 的三百二十名 came back. No answer starts with 的 (的确, 的士 aside).
    if end - start > 1 and text[start] == "的" and text[start + 1] not in "确士卢哥":
        start += 1
    return start, end


def with_unit(text: str, start: int, end: int, unit: str | None) -> tuple[int, int]:
    """44 → 44名 when the question asks 多少名 and the unit follows the span."""
    if unit and not match_form(text[start:end]).endswith(unit) and match_form(text[end : end + len(unit)]) == unit:
        return start, end + len(unit)
    return start, end


def covering_sentence(text: str, start: int, end: int, window: ReadWindow) -> tuple[int, int]:
    """The sentence(s) of the window that hold [start, end)."""
    sents = [s for s in sentence_spans(text, window.start, window.end) if s[1] > start and s[0] < max(end, start + 1)]
    if not sents:
        return window.start, window.end
    return sents[0][0], sents[-1][1]
