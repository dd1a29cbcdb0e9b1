"""Pick the store named by the settings: `faiss` (FAISS + bm25s files, the default) or
`milvus` (milvus-lite file or a Milvus server), behind one interface.

`open_store` raises `IndexMissing` when nothing has been indexed yet, so callers can start
from `empty_store`; any other `StoreError` means an index exists but cannot be used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from index.store import DocChanges, FaissBm25Store, Store, StoreError

if TYPE_CHECKING:
    from index.milvus_store import MilvusTarget
    from rag.config import Settings
    from rag.types import Chunk, Document

STORES = ("faiss", "milvus")
LITE_FILE = "milvus.db"  # default milvus-lite file inside the index directory


class IndexMissing(StoreError):
    """Nothing has been indexed at this location yet."""


class IndexStore(Store, Protocol):
    """The full store interface the service uses (reads, writes and persistence)."""

    def document_by_key(self, key: str) -> Document | None: ...

    def chunks_of(self, doc_id: str) -> list[Chunk]: ...

    def with_changes(self, changes: DocChanges) -> IndexStore: ...

    def with_index_kind(self, kind: str) -> IndexStore: ...

    def save(self, root: Path) -> Any: ...


def check_store_name(name: str) -> str:
    if name not in STORES:
        raise StoreError(f"unknown store {name!r}: set RAG_STORE to one of {', '.join(STORES)}")
    return name


def milvus_target(settings: Settings) -> MilvusTarget:
    """Where the Milvus store lives: RAG_MILVUS_URI, or a milvus-lite file in the index dir."""
    from index.milvus_store import MilvusTarget

    uri = settings.milvus_uri or str(Path(settings.index_dir) / LITE_FILE)
    return MilvusTarget(uri=uri, token=settings.milvus_token, collection=settings.milvus_collection).validated()


def milvus_index_kind(settings: Settings) -> str:
    """An explicit RAG_INDEX_KIND wins; otherwise Milvus picks FLAT or HNSW by corpus size."""
    return settings.index_kind if "index_kind" in settings.model_fields_set else "auto"


def open_store(settings: Settings) -> IndexStore:
    """The current index; `IndexMissing` if there is none yet."""
    if check_store_name(settings.store) == "milvus":
        from index.milvus_store import MilvusStore

        return MilvusStore.open(milvus_target(settings))
    root = Path(settings.index_dir)
    if not (root / "CURRENT").exists():
        raise IndexMissing(f"no index at {root}: build it with `rag index`")
    return FaissBm25Store.load(root)


def index_exists(settings: Settings) -> bool:
    """Whether something has been indexed at the configured location."""
    try:
        open_store(settings)
    except IndexMissing:
        return False
    return True


def empty_store(settings: Settings, embedder_id: str, dim: int, chunking: dict[str, Any]) -> IndexStore:
    """A new, empty index (nothing is written until it is saved)."""
    if check_store_name(settings.store) == "milvus":
        from index.milvus_store import MilvusStore

        return MilvusStore.empty(milvus_target(settings), embedder_id, dim, chunking, milvus_index_kind(settings))
    return FaissBm25Store.empty(embedder_id, dim, chunking, settings.index_kind)
