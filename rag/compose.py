"""The extractive composer: pick the retrieved sentences that best answer the question,
cite each one, pull out a short answer span, or refuse when the evidence is weak."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rag.answer_types import WH_WORDS, AnswerType, Span, place_stems, question_type, question_unit, typed_spans
from rag.text import match_form, sentence_spans
from rag.tokenize import STOPWORDS, pos_words, tokenize
from rag.types import Answer, AnswerSentence, Citation, Document, Hit

REFUSAL_MESSAGE = "资料中没有找到相关信息。"

# Calibrated by benchmarks/calibrate_refusal.py (see benchmarks/results/refusal_calibration.json):
# the confidence below which answering does more harm than refusing.
DEFAULT_REFUSAL_THRESHOLD = 0.57


class AnswerComposer(Protocol):
    """What answers from retrieved passages without an LLM: the heuristic composer or the reader's."""

    def compose(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> Answer: ...

    def short_answer_for(self, question: str, text: str) -> str | None: ...


@dataclass(frozen=True)
class ComposerWeights:
    coverage: float = 0.6
    dense: float = 0.3
    rank: float = 0.1
    # A sentence with no span of the expected type (no number for 多少) keeps only this share.
    type_floor: float = 0.55
    # A sentence whose article never names the place asked about keeps only this share.
    place_floor: float = 0.5


@dataclass
class Candidate:
    hit_rank: int
    hit: Hit
    start: int  # offsets into the document text
    end: int
    text: str
    coverage: float = 0.0
    dense: float = 0.0
    type_match: float = 0.0
    score: float = 0.0


def weighted_query_terms(question: str, idf: Callable[[str], float] | None = None) -> dict[str, float]:
    """Content terms of the question weighted by corpus idf (rare terms matter most; a term
    the corpus never uses weighs most of all), or by length when no idf is given."""
    terms: dict[str, float] = {}
    for token in tokenize(question):
        if not WH_WORDS.fullmatch(token):
            terms[token] = idf(token) if idf else float(min(len(token), 4))
    return terms


def coverage(terms: dict[str, float], text: str, title: str = "") -> float:
    """Share of the question's term weight found in the text (title matches count half)."""
    total = sum(terms.values())
    if not total:
        return 0.0
    body, head = match_form(text), match_form(title)
    found = sum(w if t in body else (0.5 * w if t in head else 0.0) for t, w in terms.items())
    return found / total


def dense_scale(cosine: float) -> float:
    """e5 cosines sit in a narrow band (~0.70 unrelated, ~0.90 on-topic): stretch it to [0, 1]."""
    return float(np.clip((cosine - 0.72) / 0.18, 0.0, 1.0))


class ExtractiveComposer:
    def __init__(
        self,
        embed_passages: Callable[[list[str]], np.ndarray] | None,
        document: Callable[[str], Document | None],
        idf: Callable[[str], float] | None = None,
        refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
        weights: ComposerWeights = ComposerWeights(),
        max_sentences: int = 3,
    ) -> None:
        self.embed_passages = embed_passages
        self.document = document
        self.idf = idf
        self.refusal_threshold = refusal_threshold
        self.weights = weights
        self.max_sentences = max_sentences

    # ------------------------------------------------------------ scoring

    def candidates(self, hits: list[Hit]) -> list[Candidate]:
        seen: set[tuple[str, int]] = set()
        out: list[Candidate] = []
        for rank, hit in enumerate(hits, 1):
            chunk = hit.chunk
            doc = self.document(chunk.doc_id)
            text = doc.text if doc else chunk.text
            base = chunk.start if doc else 0
            for s, e in sentence_spans(text, base, base + (chunk.end - chunk.start)):
                if (chunk.doc_id, s) not in seen and e - s >= 4:
                    seen.add((chunk.doc_id, s))
                    out.append(Candidate(rank, hit, s, e, text[s:e]))
        return out

    def score(self, question: str, query_vector: np.ndarray, candidates: list[Candidate]) -> None:
        terms = weighted_query_terms(question, self.idf)
        answer_type = question_type(question)
        unit = question_unit(question)
        places = question_places(question)
        place_shares: dict[str, float] = {}
        vectors = self.sentence_vectors(candidates)
        w = self.weights
        for cand, vector in zip(candidates, vectors, strict=True):
            cand.coverage = coverage(terms, cand.text, cand.hit.chunk.title)
            cand.dense = dense_scale(float(vector @ query_vector)) if vector is not None else dense_scale(cand.hit.dense_score or 0.0)
            cand.type_match = type_match(cand.text, answer_type, unit, question)
            base = w.coverage * cand.coverage + w.dense * cand.dense + w.rank / cand.hit_rank
            type_factor = w.type_floor + (1 - w.type_floor) * cand.type_match
            place_factor = w.place_floor + (1 - w.place_floor) * self.place_match(places, cand, place_shares)
            cand.score = base * type_factor * place_factor

    def place_match(self, places: list[str], cand: Candidate, seen: dict[str, float]) -> float:
        """Share of the places the question names that the candidate's article mentions:
        a sentence about 昌都 does not answer a question about 阿里地区. `seen` caches the
        share per article, so each article's text is normalised once per question."""
        if not places:
            return 1.0
        doc_id = cand.hit.chunk.doc_id
        if doc_id not in seen:
            doc = self.document(doc_id)
            context = match_form(cand.hit.chunk.title + (doc.text if doc else cand.text))
            seen[doc_id] = sum(place in context for place in places) / len(places)
        return seen[doc_id]

    def sentence_vectors(self, candidates: list[Candidate]) -> list[np.ndarray | None]:
        """Sentence embeddings when the composer is set to compute them; otherwise the
        passage's own dense score stands in (no extra model calls per question)."""
        if self.embed_passages is None:
            return [None] * len(candidates)
        return list(self.embed_passages([f"{c.hit.chunk.title}\n{c.text}" for c in candidates]))

    # ------------------------------------------------------------ answer

    def compose(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> Answer:
        candidates = self.candidates(hits)
        if candidates:
            self.score(question, query_vector, candidates)
        ranked = sorted(candidates, key=lambda c: -c.score)
        confidence = ranked[0].score if ranked else 0.0
        if not ranked or confidence < self.refusal_threshold:
            return Answer(question, REFUSAL_MESSAGE, None, True, passages=hits, confidence=confidence)
        chosen = self.select(ranked)
        citations, sentences = self.cite(chosen)
        short = short_answer(question, ranked[0].text)
        answer_text = "".join(f"{s.text}[{s.citations[0]}]" for s in sentences)
        return Answer(question, answer_text, short, False, citations, hits, sentences, confidence=confidence)

    def short_answer_for(self, question: str, text: str) -> str | None:
        """The short answer within one sentence (the generative composer's verified sentences)."""
        return short_answer(question, text)

    def select(self, ranked: list[Candidate]) -> list[Candidate]:
        """The best sentence first, then close runners-up that add new information."""
        best = ranked[0]
        chosen = [best]
        for cand in ranked[1 : self.max_sentences * 3]:
            if len(chosen) == self.max_sentences:
                break
            close = cand.score >= best.score - 0.05 and cand.coverage >= 0.6 * best.coverage
            if close and not any(repeats(cand, c) for c in chosen):
                chosen.append(cand)
        return chosen

    def cite(self, chosen: list[Candidate]) -> tuple[list[Citation], list[AnswerSentence]]:
        citations: list[Citation] = []
        sentences: list[AnswerSentence] = []
        for n, cand in enumerate(chosen, 1):
            doc = self.document(cand.hit.chunk.doc_id)
            src_start = doc.source_offset(cand.start) if doc else None
            src_end = doc.source_offset(cand.end - 1) if doc else None
            citations.append(
                Citation(
                    n=n,
                    doc_id=cand.hit.chunk.doc_id,
                    title=cand.hit.chunk.title,
                    chunk_id=cand.hit.chunk.chunk_id,
                    start=cand.start,
                    end=cand.end,
                    quote=cand.text,
                    score=round(cand.score, 4),
                    source_start=src_start,
                    source_end=None if src_end is None else src_end + 1,
                )
            )
            sentences.append(AnswerSentence(cand.text, [n], True, "extractive"))
        return citations, sentences


def overlaps(a: Candidate, b: Candidate) -> bool:
    return a.hit.chunk.doc_id == b.hit.chunk.doc_id and a.start < b.end and b.start < a.end


def repeats(a: Candidate, b: Candidate) -> bool:
    """The same text: overlapping in one article, or the same sentence in another (one story
    added from two sites, or a file added twice): an answer says it once."""
    return overlaps(a, b) or _sentence_key(a.text) == _sentence_key(b.text)


def _sentence_key(text: str) -> str:
    return "".join(match_form(text).split()).strip("。.,;:!?")  # match_form folds ，；：！？ to ASCII


def question_places(question: str) -> list[str]:
    return [match_form(stem) for stem in place_stems(question)]


def type_match(sentence: str, answer_type: AnswerType, unit: str | None, question: str) -> float:
    """1 when the sentence holds a span of the expected type not already in the question."""
    if answer_type is AnswerType.OTHER:
        return 1.0
    question = match_form(question)
    spans = [s for s in typed_spans(match_form(sentence), answer_type) if s.text not in question]
    if unit and answer_type is AnswerType.NUMBER:
        return 1.0 if any(s.text.endswith(unit) for s in spans) else (0.5 if spans else 0.0)
    return 1.0 if spans else 0.0


# ---------------------------------------------------------------- short answers


def short_answer(question: str, sentence: str) -> str | None:
    """The span of `sentence` that answers a factoid question, or None. Spans are found on
    the match forms (either script) and returned as written in `sentence`."""
    question, norm = match_form(question), match_form(sentence)
    answer_type = question_type(question)
    spans = [s for s in typed_spans(norm, answer_type) if s.text not in question]
    if answer_type is AnswerType.OTHER or not spans:
        spans = generic_spans(question, norm)
    if not spans:
        return None
    unit = question_unit(question)
    anchors = anchor_positions(question, norm)
    best = max(spans, key=lambda s: span_score(s, anchors, unit))
    # Open questions (什么/为什么/如何…) are answered by a clause, not a noun phrase: on the
    # first 400 CMRC trial questions the clause raised short-answer EM 0.100 → 0.140, F1 0.283 → 0.396.
    return clause_around(best, sentence) if answer_type is AnswerType.OTHER else sentence[best.start : best.end]


def clause_around(span: Span, sentence: str) -> str:
    """The clause (between ，；： and the next ，；。) that holds `span`."""
    breaks = [m.end() for m in re.finditer(r"[，,；;：:]", sentence[: span.start])]
    start = breaks[-1] if breaks else 0
    tail = re.search(r"[，,；;。！？!?]", sentence[span.end :])
    end = span.end + tail.start() if tail else len(sentence)
    return sentence[start:end]


def anchor_positions(question: str, sentence: str) -> list[tuple[int, float]]:
    """Where the question's terms occur in the sentence, with their weights."""
    norm = match_form(sentence)
    anchors = []
    for term, weight in weighted_query_terms(question).items():
        for m in re.finditer(re.escape(term), norm):
            anchors.append((m.start() + len(term) // 2, weight))
    return anchors


def span_score(span: Span, anchors: list[tuple[int, float]], unit: str | None) -> float:
    centre = (span.start + span.end) / 2
    proximity = sum(w * math.exp(-abs(pos - centre) / 8) for pos, w in anchors)
    unit_bonus = 2.0 if unit and span.text.endswith(unit) else 0.0
    digit_bonus = 0.5 if any(c.isdigit() for c in span.text) else 0.0  # 三个/一个 are rarely the asked quantity
    return proximity + unit_bonus + digit_bonus


_NOMINAL = ("n", "m", "eng", "t", "i", "l", "j", "x", "q")
_EDGE_JUNK = ("d", "p", "c", "u", "y", "r", "f", "uj", "ul", "zg")


def generic_spans(question: str, sentence: str) -> list[Span]:
    """Runs of sentence words that the question does not contain and that hold a noun,
    trimmed of adverbs, prepositions and particles at the edges: the part of the sentence
    that fills the question's gap (来古村党支部抓住[冰川旅游]“金饭碗”)."""
    q = match_form(question)
    spans: list[Span] = []
    run: list[tuple[int, str, str]] = []  # (start, word, flag)
    pos = 0
    for word, flag in [*pos_words(sentence), ("。", "x")]:
        norm = match_form(word)
        if not re.fullmatch(r"[\W_]+", norm) and norm not in q and norm not in STOPWORDS:
            run.append((pos, word, flag))
        else:
            spans.extend(_nominal_span(run, sentence))
            run = []
        pos += len(word)
    return spans


def _nominal_span(run: list[tuple[int, str, str]], sentence: str) -> list[Span]:
    while run and run[0][2].startswith(_EDGE_JUNK):
        run = run[1:]
    while run and (run[-1][2].startswith(_EDGE_JUNK) or run[-1][2] == "v"):
        run = run[:-1]
    if not any(flag.startswith(_NOMINAL) for _, _, flag in run):
        return []
    start, end = run[0][0], run[-1][0] + len(run[-1][1])
    return [Span(start, end, sentence[start:end])] if 2 <= end - start <= 30 else []
