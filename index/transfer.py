"""`rag export` / `rag import`: move an index between stores without re-embedding.

An export folder is portable and store-neutral:

    manifest.json     format, embedder (id, dim), chunking, counts, the source store
    documents.jsonl   one Document per line (full text, metadata, source map)
    chunks.jsonl      one Chunk per line
    vectors.npy       float32 [n_chunks, dim], row i is the embedding of chunks.jsonl line i

Import replaces the target index atomically (a new FAISS version / a new Milvus
generation): lexical statistics are recomputed from the text, embeddings are reused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.factory import IndexStore, empty_store, open_store
from index.store import DocChanges, EmbedderMismatch, FaissBm25Store, StoreError, write_lock
from rag.config import Settings
from rag.tokenize import tokenize
from rag.types import Chunk, Document

EXPORT_FORMAT = "rag-export/1"
FILES = ("manifest.json", "documents.jsonl", "chunks.jsonl", "vectors.npy")


@dataclass
class TransferReport:
    documents: int
    chunks: int
    folder: Path

    def summary(self) -> str:
        return f"{self.documents} documents, {self.chunks} chunks ({self.folder})"


def iter_chunks_with_vectors(store: IndexStore) -> Iterator[tuple[Chunk, np.ndarray]]:
    if isinstance(store, FaissBm25Store):
        yield from zip(store.chunks, store.vectors, strict=True)
        return
    iterate = getattr(store, "iter_chunks_with_vectors", None)
    if iterate is None:
        raise StoreError(f"{type(store).__name__} cannot export its vectors")
    yield from iterate()


def export_index(settings: Settings, folder: Path) -> TransferReport:
    """Write the configured store's index to `folder` (which must not exist or be empty)."""
    store = open_store(settings)
    if folder.exists() and any(folder.iterdir()):
        raise StoreError(f"{folder} is not empty: export into a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        report = _write_export(store, tmp, settings.store)
        if folder.exists():
            folder.rmdir()
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.folder = folder
    return report


def _write_export(store: IndexStore, folder: Path, store_name: str) -> TransferReport:
    dim = int(store.manifest["embedder"]["dim"])
    n_expected = store.chunk_count()
    vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(n_expected, dim))
    n = 0
    with open(folder / "chunks.jsonl", "w", encoding="utf-8") as out:
        for chunk, vector in iter_chunks_with_vectors(store):
            if n == n_expected:
                raise StoreError("the index changed during export (more chunks than counted): export again")
            out.write(json.dumps(chunk.to_dict(), ensure_ascii=False) + "\n")
            vectors[n] = vector
            n += 1
    vectors.flush()
    del vectors
    if n != n_expected:
        raise StoreError(f"the index changed during export ({n} chunks read, {n_expected} counted): export again")
    documents = store.documents()
    with open(folder / "documents.jsonl", "w", encoding="utf-8") as out:
        for doc in documents:
            out.write(json.dumps(doc.to_dict(), ensure_ascii=False) + "\n")
    manifest = {
        "format": EXPORT_FORMAT,
        "source_store": store_name,
        "embedder": store.manifest["embedder"],
        "chunking": store.manifest.get("chunking"),
        "counts": {"documents": len(documents), "chunks": n},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return TransferReport(len(documents), n, folder)


def read_export(folder: Path) -> tuple[dict[str, Any], list[Document], list[Chunk], np.ndarray]:
    """Load and check an export folder; every inconsistency is a StoreError naming the file."""
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise StoreError(f"{folder} is not an export folder (missing {', '.join(missing)}): create one with `rag export`")
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        documents = [Document.from_dict(json.loads(line)) for line in _lines(folder / "documents.jsonl")]
        chunks = [Chunk(**json.loads(line)) for line in _lines(folder / "chunks.jsonl")]
        vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise StoreError(f"unreadable export in {folder}: {err}") from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise StoreError(f"{folder}/manifest.json has format {manifest.get('format')!r}, expected {EXPORT_FORMAT!r}")
    dim = manifest.get("embedder", {}).get("dim")
    if vectors.ndim != 2 or vectors.shape != (len(chunks), dim):
        raise StoreError(f"{folder}/vectors.npy has shape {vectors.shape}, expected ({len(chunks)}, {dim}) for chunks.jsonl")
    known = {d.doc_id for d in documents}
    orphans = {c.doc_id for c in chunks} - known
    if orphans:
        raise StoreError(f"{folder}/chunks.jsonl has chunks of {len(orphans)} documents missing from documents.jsonl (e.g. {min(orphans)})")
    return manifest, documents, chunks, vectors


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        yield from (line for line in handle if line.strip())


def import_index(settings: Settings, folder: Path, embedder_id: str | None = None) -> TransferReport:
    """Replace the configured store's index with the export in `folder`.

    `embedder_id` is the configured embedder's identity: importing vectors from another
    model would make every query vector incomparable, so that is refused.
    """
    manifest, documents, chunks, vectors = read_export(folder)
    built_with = manifest["embedder"]["id"]
    if embedder_id is not None and embedder_id != built_with:
        raise EmbedderMismatch(
            f"the export was embedded with {built_with!r} but {embedder_id!r} is configured: set RAG_EMBEDDER to match, or re-index"
        )
    rows_by_doc: dict[str, list[int]] = {}
    for row, chunk in enumerate(chunks):
        rows_by_doc.setdefault(chunk.doc_id, []).append(row)
    changes = DocChanges()
    for doc in documents:
        rows = rows_by_doc.get(doc.doc_id, [])
        doc_chunks = [chunks[r] for r in rows]
        tokens = [tokenize(f"{c.title} {c.text}") for c in doc_chunks]
        changes.add.append((doc, doc_chunks, tokens, np.asarray(vectors[rows], dtype=np.float32).reshape(len(rows), -1)))
    with write_lock(settings.index_dir):
        target = empty_store(settings, built_with, int(manifest["embedder"]["dim"]), manifest.get("chunking") or {})
        target = target.with_changes(changes)
        target.save(settings.index_dir)
    return TransferReport(len(documents), len(chunks), folder)
