"""The library's front door: load an index, add and remove articles, search, and answer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from index.factory import IndexMissing, IndexStore, empty_store, open_store
from index.store import NO_FILTERS, DocChanges, EmbedderMismatch, Filters, StoreError, clean_leftovers, current_pointer, write_lock
from rag.chunking import ChunkingParams, chunk_document
from rag.compose import DEFAULT_REFUSAL_THRESHOLD, ExtractiveComposer
from rag.config import Settings
from rag.embedders import Embedder, make_embedder
from rag.retrieval import HybridRetriever
from rag.tokenize import TOKENIZER_ID, tokenize
from rag.types import Answer, Document, Hit

if TYPE_CHECKING:
    from rag.generative import GenerativeComposer
    from rag.reader import Reader
    from rag.reader.composer import Combiner, ReaderComposer

log = logging.getLogger(__name__)

# How often a reader looks at `CURRENT` for a version written by another process (the CLI,
# another server): a changed pointer is loaded before the next request uses the store.
WATCH_INTERVAL_S = 0.2


class QuestionError(ValueError):
    """A question the service will not run; the message is for the user."""


class UnknownDocumentError(ValueError):
    pass


@dataclass
class ChangeReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # new ids that replaced an older version
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Per file read (`add_files`, uploads): name, format, encoding (None for pdf/docx), documents (count).
    files: list[dict[str, Any]] = field(default_factory=list)
    chunks_embedded: int = 0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0  # embedding, tokenising, building both indexes and saving

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)

    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.replaced)} replaced, {len(self.removed)} removed, {len(self.unchanged)} unchanged"

    def throughput(self) -> str:
        """E.g. `766 chunks in 130.2 s: 5.9 chunks/s (embedding 127.5 s, 6.0 chunks/s)`."""
        n, total, embed = self.chunks_embedded, self.write_seconds, self.embed_seconds
        return f"{n} chunks in {total:.1f} s: {n / max(total, 1e-9):.1f} chunks/s (embedding {embed:.1f} s, {n / max(embed, 1e-9):.1f} chunks/s)"


def load_reader(settings: Settings) -> Reader | None:
    """The configured reader, loaded; None (logged) when it is 'none' or cannot load."""
    from rag.reader import make_reader
    from rag.reader.onnx_reader import ReaderUnavailable

    reader = make_reader(settings.reader, settings.reader_threads)
    if reader is None:
        return None
    try:
        reader.load()
    except ReaderUnavailable as err:
        log.warning("reader disabled, the heuristic composer answers: %s", err)
        return None
    return reader


def validate_question(question: object, max_chars: int) -> str:
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("the question is empty")
    question = question.strip()
    if len(question) > max_chars:
        raise QuestionError(f"the question is {len(question)} characters long; the limit is {max_chars}")
    return question


class RagService:
    """Holds the current index snapshot; writes build a new snapshot and swap it in."""

    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None) -> None:
        self.settings = settings or Settings()
        self.embedder = embedder or make_embedder(self.settings.embedder, self.settings.query_prefix, self.settings.passage_prefix)
        self.chunking = ChunkingParams(self.settings.chunk_chars, self.settings.chunk_overlap)
        self._store: IndexStore | None = None
        self._store_pointer: str | None = None  # the CURRENT the loaded FAISS snapshot came from
        self._store_checked = 0.0
        self._store_lock = threading.Lock()
        self._reader: Reader | bool | None = False  # False: not built yet
        self._reader_lock = threading.Lock()
        self._combiner: Combiner | None = None

    # ------------------------------------------------------------ index state

    @property
    def store(self) -> IndexStore:
        if self._store is None or self._pointer_moved():
            with self._store_lock:
                if self._store is None or self._pointer_moved(force=True):
                    self._store = self._load_or_empty()
        return self._store

    def _pointer_moved(self, force: bool = False) -> bool:
        """Whether another process repointed the FAISS index's CURRENT since we loaded it
        (checked at most every WATCH_INTERVAL_S; Milvus is read live from its server)."""
        if self.settings.store != "faiss":
            return False
        now = time.monotonic()
        if not force and now - self._store_checked < WATCH_INTERVAL_S:
            return False
        self._store_checked = now
        return current_pointer(Path(self.settings.index_dir)) != self._store_pointer

    def _load_or_empty(self) -> IndexStore:
        self._store_pointer = current_pointer(Path(self.settings.index_dir))
        try:
            store = open_store(self.settings)  # FAISS files or Milvus, per settings.store
        except IndexMissing:
            return self._empty_store()
        self.check_embedder(store)
        return store

    def _swap_in(self, store: IndexStore) -> None:
        """Make a store this process just saved the current one (no re-read from disk)."""
        self._store = store
        self._store_pointer = current_pointer(Path(self.settings.index_dir))

    def check_embedder(self, store: IndexStore) -> None:
        built_with = store.manifest["embedder"]["id"]
        if built_with != self.embedder.identity:
            raise EmbedderMismatch(
                f"the index was built with embedder {built_with!r} but {self.embedder.identity!r} is configured: "
                "re-index with `rag index --rebuild` (or set RAG_EMBEDDER back)"
            )

    def _chunking_manifest(self) -> dict[str, int]:
        return {"max_chars": self.chunking.max_chars, "overlap_sentences": self.chunking.overlap_sentences}

    def reload(self) -> None:
        self._store = self._load_or_empty()

    # ------------------------------------------------------------ writes

    def plan(self, documents: Iterable[Document], sources: set[str] | None = None) -> tuple[DocChanges, ChangeReport]:
        """What adding `documents` changes; with `sources`, documents from those files that
        are no longer produced are removed too (a re-parsed file replaces its old articles)."""
        store = self.store
        changes, report = DocChanges(), ChangeReport()
        incoming: dict[str, Document] = {}
        for doc in documents:
            incoming.setdefault(doc.doc_id, doc)
        for doc in incoming.values():
            stored = store.document(doc.doc_id)
            if stored is not None and stored.to_dict() == doc.to_dict():
                report.unchanged.append(doc.doc_id)
                continue
            previous = stored or store.document_by_key(doc.key)
            if previous is not None:
                changes.remove.add(previous.doc_id)
                report.replaced.append(doc.doc_id)
            else:
                report.added.append(doc.doc_id)
            chunks = chunk_document(doc, self.chunking)
            changes.add.append((doc, chunks, [], None))  # type: ignore[arg-type]
        if sources:
            stale = {d.doc_id for d in store.documents() if d.source in sources and d.doc_id not in incoming}
            new_stale = stale - changes.remove
            changes.remove |= stale
            report.removed.extend(sorted(new_stale))
        return changes, report

    def _embed_changes(self, changes: DocChanges, progress: bool, report: ChangeReport | None = None) -> None:
        all_chunks = [c for _, chunks, _, _ in changes.add for c in chunks]
        started = time.perf_counter()
        vectors = self.embedder.embed_passages([f"{c.title}\n{c.text}" for c in all_chunks], progress=progress)
        if report is not None:
            report.chunks_embedded, report.embed_seconds = len(all_chunks), time.perf_counter() - started
        offset = 0
        for i, (doc, chunks, _, _) in enumerate(changes.add):
            tokens = [tokenize(f"{c.title} {c.text}") for c in chunks]
            changes.add[i] = (doc, chunks, tokens, vectors[offset : offset + len(chunks)])
            offset += len(chunks)

    def apply(self, changes: DocChanges, progress: bool = False, report: ChangeReport | None = None) -> None:
        """Embed, build a new snapshot, persist it atomically, then swap it in."""
        started = time.perf_counter()
        with write_lock(self.settings.index_dir):
            self.reload()  # another process may have written since we loaded
            self._embed_changes(changes, progress, report)
            new_store = self.store.with_changes(changes)
            new_store.save(self.settings.index_dir)
            self._swap_in(new_store)
        if report is not None:
            report.write_seconds = time.perf_counter() - started

    def add_documents(self, documents: list[Document], sources: set[str] | None = None, progress: bool = False) -> ChangeReport:
        changes, report = self.plan(documents, sources)
        if report.changed:
            self.apply(changes, progress, report)
        return report

    def add_files(self, paths: list[Path], progress: bool = False) -> ChangeReport:
        """Parse every file first; one bad file means nothing is written. The report lists each
        file's detected format and encoding."""
        from rag.formats import load_file
        from rag.ingest import IngestError, iter_corpus_files

        loaded = [load_file(file) for path in paths for file in (iter_corpus_files(path) if path.is_dir() else [path])]
        documents = [doc for file in loaded for doc in file.documents]
        if not documents:
            raise IngestError(f"no supported files in {', '.join(map(str, paths))}")
        report = self.add_documents(documents, {file.name for file in loaded}, progress)
        report.files = [file.describe() for file in loaded]
        return report

    def remove(self, doc_id: str) -> ChangeReport:
        if self.store.document(doc_id) is None:
            raise UnknownDocumentError(f"unknown document id {doc_id!r}: see `rag docs`")
        changes = DocChanges(remove={doc_id})
        self.apply(changes)
        return ChangeReport(removed=[doc_id])

    def rebuild(self, corpus: Path | None = None, progress: bool = True) -> ChangeReport:
        """Re-chunk and re-embed every indexed article (plus `corpus`, which wins on conflicts)
        from scratch, e.g. after changing the embedder, chunking or index kind."""
        from rag.ingest import iter_corpus_files, load_documents  # parsers: only where files are read

        previous = self._documents_on_disk()
        incoming = [d for f in iter_corpus_files(corpus) for d in load_documents(f)] if corpus else []
        incoming_keys = {d.key for d in incoming}
        documents = incoming + [d for d in previous if d.key not in incoming_keys]
        started = time.perf_counter()
        with write_lock(self.settings.index_dir):
            self._swap_in(self._empty_store())  # the pointer still names the old version: no reload
            changes, report = self.plan(documents)
            self._embed_changes(changes, progress, report)
            new_store = self._store.with_changes(changes)
            new_store.save(self.settings.index_dir)
            self._swap_in(new_store)
        report.write_seconds = time.perf_counter() - started
        return report

    def repair(self) -> dict[str, Any]:
        """Bring the index on disk back into agreement after a crash (see index/store.py and
        index/milvus_store.py): what was done, for `rag repair`."""
        with write_lock(self.settings.index_dir):
            if self.settings.store == "milvus":
                from index.milvus_store import REPAIRS_ON_OPEN

                store = open_store(self.settings)
                target = store.target  # type: ignore[attr-defined]
                done_on_open = REPAIRS_ON_OPEN.pop((target.uri, target.collection), None)
                report = store.repair() or done_on_open or {"rolled": None, "dropped": [], "kept": []}  # type: ignore[attr-defined]
            else:
                report = {"removed": clean_leftovers(Path(self.settings.index_dir), locked=True) or []}
            self._store = None  # the next read loads what is on disk now
        return report

    def _documents_on_disk(self) -> list[Document]:
        try:
            return open_store(self.settings).documents()
        except StoreError:
            return []

    def _empty_store(self) -> IndexStore:
        return empty_store(self.settings, self.embedder.identity, self.embedder.dim, self._chunking_manifest())

    def is_stale(self) -> str | None:
        """Why the indexed chunks no longer match the chunking settings, or None."""
        built_with = self.store.manifest.get("chunking")
        if built_with != self._chunking_manifest():
            return f"chunking changed from {built_with} to {self._chunking_manifest()}"
        tokenized_with = self.store.manifest.get("tokenizer")
        if tokenized_with != TOKENIZER_ID:
            return f"the lexical tokenizer changed from {tokenized_with!r} to {TOKENIZER_ID!r}"
        return None

    def set_index_kind(self, kind: str) -> None:
        """Rebuild only the FAISS structure (flat/hnsw/ivf) from the stored vectors."""
        with write_lock(self.settings.index_dir):
            self.reload()
            new_store = self.store.with_index_kind(kind)
            new_store.save(self.settings.index_dir)
            self._swap_in(new_store)

    # ------------------------------------------------------------ reads

    def retriever(self) -> HybridRetriever:
        return HybridRetriever(self.store, self.embedder, self.settings.fetch_k)

    @property
    def reader(self) -> Reader | None:
        """The span reader (RAG_READER); None when set to 'none' or when its model cannot load,
        in which case the heuristic composer answers and the reason is logged."""
        with self._reader_lock:
            if self._reader is False:
                self._reader = load_reader(self.settings)
        return self._reader  # type: ignore[return-value]

    def composer(self) -> ExtractiveComposer | ReaderComposer | GenerativeComposer:
        """The generative composer when an LLM is configured (RAG_LLM_BASE_URL), else the extractive one."""
        extractive = self.extractive_composer()
        if not self.settings.llm_base_url:
            return extractive
        from rag.generative import GenerativeComposer  # imports openai: only when an LLM is configured

        generative = GenerativeComposer.from_settings(self.settings, extractive, self.embedder, self.store.document)
        return generative or extractive

    def extractive_composer(self) -> ExtractiveComposer | ReaderComposer:
        """The reader's composer when a reader is configured, else the heuristic one."""
        heuristic = self.heuristic_composer()
        if self.reader is None:
            return heuristic
        from rag.reader.composer import Combiner, ReaderComposer

        if self._combiner is None:
            self._combiner = Combiner.load(self.reader.combiner_path)
        return ReaderComposer(self.reader, heuristic, self._combiner, self.settings.reader_refusal_threshold)

    def heuristic_composer(self) -> ExtractiveComposer:
        threshold = self.settings.refusal_threshold
        return ExtractiveComposer(
            None,  # sentence embeddings cost ~1 s per question and did not change the dev results
            self.store.document,
            self.store.idf,
            DEFAULT_REFUSAL_THRESHOLD if threshold is None else threshold,
        )

    def search(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS, mode: str = "hybrid") -> list[Hit]:
        question = validate_question(question, self.settings.max_question_chars)
        return self.retriever().search(question, top_k or self.settings.top_k, filters, mode)

    def _retrieve(self, question: str, top_k: int | None, filters: Filters) -> tuple[str, np.ndarray, list[Hit], float, float]:
        """Validated question, its vector, the hits, and the start/end times of retrieval."""
        question = validate_question(question, self.settings.max_question_chars)
        started = time.perf_counter()
        retriever = self.retriever()
        query_vector = retriever.query_vector(question)
        hits = retriever.search(question, top_k or self.settings.top_k, filters, query_vector=query_vector)
        return question, query_vector, hits, started, time.perf_counter()

    @staticmethod
    def _timings(started: float, retrieved: float) -> dict[str, float]:
        done = time.perf_counter()
        return {
            "retrieve": round((retrieved - started) * 1000, 1),
            "compose": round((done - retrieved) * 1000, 1),
            "total": round((done - started) * 1000, 1),
        }

    def ask(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Answer:
        question, query_vector, hits, started, retrieved = self._retrieve(question, top_k, filters)
        answer = self.metadata_answer(question, hits) or self.composer().compose(question, query_vector, hits)
        answer.timings_ms = self._timings(started, retrieved)
        return self.in_answer_script(answer)

    def metadata_answer(self, question: str, hits: list[Hit]) -> Answer | None:
        """The answer to a question about an article's byline, date, dateline, source or title."""
        from rag.metadata_answers import MetadataAnswerer

        return MetadataAnswerer(self.store.document).answer(question, hits)

    def in_answer_script(self, answer: Answer) -> Answer:
        """With RAG_ANSWER_SCRIPT=question, the answer text is shown in the question's script;
        quotes, citations and short_answer_span stay the original characters."""
        if self.settings.answer_script != "question":
            return answer
        answer.answer = self._question_script(answer.question, answer.answer)
        answer.short_answer = answer.short_answer and self._question_script(answer.question, answer.short_answer)
        for sentence in answer.sentences:
            sentence.text = self._question_script(answer.question, sentence.text)
        return answer

    @staticmethod
    def _question_script(question: str, text: str) -> str:
        from rag.text import script_of, to_script

        return to_script(text, script_of(question))

    def ask_stream(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Iterator[dict[str, Any]]:
        """`ask` as events (see rag/generative.py): "delta" text as it is written, "sentence"
        once a sentence is verified, "fallback" when the LLM answer is abandoned, and last
        "done" with the Answer (timings filled in). All but the Answer are JSON-ready dicts.
        The question is validated and the passages retrieved before this returns, so bad
        input raises here, not mid-stream."""
        from rag.generative import GenerativeComposer, answer_events

        question, query_vector, hits, started, retrieved = self._retrieve(question, top_k, filters)
        composer = self.composer()

        known = self.metadata_answer(question, hits)

        def events() -> Iterator[dict[str, Any]]:
            if known is not None:
                stream = answer_events(known)
            elif isinstance(composer, GenerativeComposer):
                stream = composer.compose_stream(question, query_vector, hits)
            else:
                stream = answer_events(composer.compose(question, query_vector, hits))
            try:
                for event in stream:
                    if event["type"] == "done":
                        event["answer"].timings_ms = self._timings(started, retrieved)
                        self.in_answer_script(event["answer"])
                    elif event["type"] in ("delta", "sentence") and self.settings.answer_script == "question":
                        event = {**event, "text": self._question_script(question, event["text"])}
                    yield event
            finally:
                stream.close()  # a client that leaves must stop the LLM stream now, not at GC

        return events()

    def rewrite_followup(self, history: Sequence[Mapping[str, str]], question: str) -> str | None:
        """The follow-up made self-contained by the LLM; None without an LLM or when it fails
        (then use the rule-based rewrite)."""
        if not self.settings.llm_base_url:
            return None
        from rag.generative import rewrite_followup

        return rewrite_followup(history, question, settings=self.settings)
