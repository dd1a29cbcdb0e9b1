"""The library's front door: load an index, add and remove articles, search, and answer."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from index.store import NO_FILTERS, DocChanges, EmbedderMismatch, FaissBm25Store, Filters, StoreError, write_lock
from rag.chunking import ChunkingParams, chunk_document
from rag.compose import DEFAULT_REFUSAL_THRESHOLD, ExtractiveComposer
from rag.config import Settings
from rag.embedders import Embedder, make_embedder
from rag.ingest import IngestError, iter_corpus_files, load_documents
from rag.retrieval import HybridRetriever
from rag.tokenize import tokenize
from rag.types import Answer, Document, Hit


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

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)

    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.replaced)} replaced, {len(self.removed)} removed, {len(self.unchanged)} unchanged"


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
        self._store: FaissBm25Store | None = None

    # ------------------------------------------------------------ index state

    @property
    def store(self) -> FaissBm25Store:
        if self._store is None:
            self._store = self._load_or_empty()
        return self._store

    def _load_or_empty(self) -> FaissBm25Store:
        try:
            store = FaissBm25Store.load(self.settings.index_dir)
        except StoreError:
            if (self.settings.index_dir / "CURRENT").exists():
                raise
            return FaissBm25Store.empty(self.embedder.identity, self.embedder.dim, self._chunking_manifest(), self.settings.index_kind)
        self.check_embedder(store)
        return store

    def check_embedder(self, store: FaissBm25Store) -> None:
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
            if store.document(doc.doc_id) is not None:
                report.unchanged.append(doc.doc_id)
                continue
            previous = store.document_by_key(doc.key)
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

    def _embed_changes(self, changes: DocChanges, progress: bool) -> None:
        all_chunks = [c for _, chunks, _, _ in changes.add for c in chunks]
        vectors = self.embedder.embed_passages([f"{c.title}\n{c.text}" for c in all_chunks], progress=progress)
        offset = 0
        for i, (doc, chunks, _, _) in enumerate(changes.add):
            tokens = [tokenize(f"{c.title} {c.text}") for c in chunks]
            changes.add[i] = (doc, chunks, tokens, vectors[offset : offset + len(chunks)])
            offset += len(chunks)

    def apply(self, changes: DocChanges, progress: bool = False) -> None:
        """Embed, build a new snapshot, persist it atomically, then swap it in."""
        with write_lock(self.settings.index_dir):
            self.reload()  # another process may have written since we loaded
            self._embed_changes(changes, progress)
            new_store = self.store.with_changes(changes)
            new_store.save(self.settings.index_dir)
            self._store = new_store

    def add_documents(self, documents: list[Document], sources: set[str] | None = None, progress: bool = False) -> ChangeReport:
        changes, report = self.plan(documents, sources)
        if report.changed:
            self.apply(changes, progress)
        return report

    def add_files(self, paths: list[Path], progress: bool = False) -> ChangeReport:
        """Parse every file first; one bad file means nothing is written."""
        documents: list[Document] = []
        sources: set[str] = set()
        for path in paths:
            for file in iter_corpus_files(path) if path.is_dir() else [path]:
                documents.extend(load_documents(file))
                sources.add(file.name)
        if not documents:
            raise IngestError(f"no supported files in {', '.join(map(str, paths))}")
        return self.add_documents(documents, sources, progress)

    def remove(self, doc_id: str) -> ChangeReport:
        if self.store.document(doc_id) is None:
            raise UnknownDocumentError(f"unknown document id {doc_id!r}: see `rag docs`")
        changes = DocChanges(remove={doc_id})
        self.apply(changes)
        return ChangeReport(removed=[doc_id])

    def rebuild(self, corpus: Path, progress: bool = True) -> ChangeReport:
        """Index `corpus` from scratch (e.g. after changing the embedder or chunking)."""
        self._store = FaissBm25Store.empty(self.embedder.identity, self.embedder.dim, self._chunking_manifest(), self.settings.index_kind)
        changes, report = self.plan(d for f in iter_corpus_files(corpus) for d in load_documents(f))
        with write_lock(self.settings.index_dir):
            self._embed_changes(changes, progress)
            new_store = self._store.with_changes(changes)
            new_store.save(self.settings.index_dir)
            self._store = new_store
        return report

    # ------------------------------------------------------------ reads

    def retriever(self) -> HybridRetriever:
        return HybridRetriever(self.store, self.embedder, self.settings.fetch_k)

    def composer(self) -> ExtractiveComposer:
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

    def ask(self, question: str, top_k: int | None = None, filters: Filters = NO_FILTERS) -> Answer:
        question = validate_question(question, self.settings.max_question_chars)
        started = time.perf_counter()
        retriever = self.retriever()
        query_vector = retriever.query_vector(question)
        hits = retriever.search(question, top_k or self.settings.top_k, filters)
        retrieved = time.perf_counter()
        answer = self.composer().compose(question, query_vector, hits)
        done = time.perf_counter()
        answer.timings_ms = {
            "retrieve": round((retrieved - started) * 1000, 1),
            "compose": round((done - retrieved) * 1000, 1),
            "total": round((done - started) * 1000, 1),
        }
        return answer
