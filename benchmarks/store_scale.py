"""How each store scales on this machine: N synthetic chunks (random unit vectors, dim 384,
plus generated Chinese text), per store: build time, memory, query latency, recall@10.

    python benchmarks/store_scale.py [--sizes 10000,100000,1000000] [--budget-s 1200]

Every (store, N) runs in its own process, so its resident memory is its own. Rows:

- faiss-flat / faiss-hnsw: `FaissBm25Store` (exact / HNSW dense index, bm25s lexical).
- milvus-auto: `MilvusStore` on milvus-lite (FLAT below 100k chunks, HNSW from 100k).

Text is sampled from jieba's dictionary by word frequency; the words drawn are the lexical
tokens (our jieba pass is skipped for both stores: it is the same work for both and would
dominate at 1M). Milvus's own analysis of the text on insert is part of its build time.
Queries: 50 random unit vectors (dense), 50 three-word queries (lexical), and both legs
together as the retriever runs them (fetch 30 each, RRF). recall@10 is measured against
exact inner-product search by numpy. A run whose build is projected (from the previous size)
to exceed --budget-s, or that would not fit in available memory, is skipped with the reason.

Results: benchmarks/results/store_scale.json (and a table on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM = 384
WORDS_PER_CHUNK = 40
QUERIES = 50
K = 10
OUT = ROOT / "benchmarks" / "results" / "store_scale.json"
CONFIGS = ("faiss-flat", "faiss-hnsw", "milvus-auto")
# One OpenMP thread for FAISS (both stores use it): with two threads on a busy 2-core machine
# a single-query flat search over 10k vectors waits ~80 ms at the thread barrier, vs <1 ms.
CHILD_ENV = {"OMP_NUM_THREADS": "1"}
# Rough bytes per chunk while building, measured at 100k (used to skip runs that cannot fit).
BYTES_PER_CHUNK = {"faiss-flat": 4_500, "faiss-hnsw": 5_000, "milvus-auto": 9_000}


# ---------------------------------------------------------------- synthetic corpus


def vocabulary(limit: int = 60_000) -> tuple[list[str], np.ndarray]:
    """The most frequent jieba dictionary words (Chinese only) with sampling weights."""
    import jieba

    from rag.tokenize import STOPWORDS

    words, freqs = [], []
    with open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8") as handle:
        for line in handle:
            word, freq, _ = line.split(" ", 2)
            if all("\u4e00" <= ch <= "\u9fa5" for ch in word) and word not in STOPWORDS:
                words.append(word)
                freqs.append(int(freq))
    order = np.argsort(freqs)[::-1][:limit]
    weights = np.asarray(freqs, dtype=np.float64)[order] ** 0.75  # flatter than raw counts, as in word2vec
    return [words[i] for i in order], weights / weights.sum()


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in slices: no float64 temporary of the full matrix
        part = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        vectors[start : start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return vectors


def corpus(n: int, seed: int = 0) -> tuple[list[Any], np.ndarray, list[list[str]], list[str]]:
    """(DocChanges.add rows with one chunk per document, vectors, tokens, vocabulary)."""
    from rag.types import Chunk, Document

    rng = np.random.default_rng(seed)
    words, weights = vocabulary()
    draws = rng.choice(len(words), size=(n, WORDS_PER_CHUNK), p=weights)
    vectors = unit_vectors(n, rng)
    rows, tokens = [], []
    for i in range(n):
        chunk_words = [words[j] for j in draws[i]]
        text = "".join(chunk_words) + "。"
        doc = Document(title=f"合成{i}", text=text, key=f"synth#{i}", source="synth", date=f"20{10 + i % 15}-01-01", doc_id=f"s{i:07d}")
        chunk = Chunk(f"{doc.doc_id}:0", doc.doc_id, doc.title, 0, len(text), text, doc.date)
        chunk_tokens = [*chunk_words, doc.title]
        rows.append((doc, [chunk], [chunk_tokens], vectors[i : i + 1]))
        tokens.append(chunk_tokens)
    return rows, vectors, tokens, words


# ---------------------------------------------------------------- one run (child process)


def memory_mb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def build(config: str, rows: list[Any], workdir: Path) -> Any:
    from index.store import DocChanges, FaissBm25Store

    changes = DocChanges(add=rows)
    chunking = {"max_chars": 256, "overlap_sentences": 0}
    if config.startswith("faiss"):
        store = FaissBm25Store.empty("synthetic", DIM, chunking, config.split("-")[1]).with_changes(changes)
        store.save(workdir)
        return store
    from index.milvus_store import MilvusStore, MilvusTarget

    store = MilvusStore.empty(MilvusTarget(str(workdir / "milvus.db"), collection="scale"), "synthetic", DIM, chunking, "auto")
    store.with_changes(changes).save(workdir)
    return store


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    scores = np.concatenate([queries @ vectors[i : i + 200_000].T for i in range(0, len(vectors), 200_000)], axis=1)
    return [set(np.argpartition(-row, k)[:k].tolist()) for row in scores]


def timed(fn: Any, inputs: list[Any]) -> tuple[list[Any], dict[str, float]]:
    out, times = [], []
    for item in inputs:
        started = time.perf_counter()
        out.append(fn(item))
        times.append((time.perf_counter() - started) * 1000)
    return out, {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}


def run_one(config: str, n: int) -> dict[str, Any]:
    from rag.retrieval import fuse

    rows, vectors, _, words = corpus(n)
    rng = np.random.default_rng(1)
    queries = unit_vectors(QUERIES, rng)
    lexical_queries = [[words[j] for j in rng.choice(2000, size=3)] for _ in range(QUERIES)]
    before = memory_mb()
    workdir = Path(tempfile.mkdtemp(prefix=f"scale-{config}-{n}-"))
    try:
        started = time.perf_counter()
        store = build(config, rows, workdir)
        build_s = time.perf_counter() - started
        del rows
        after = memory_mb()
        row_of = {f"s{i:07d}:0": i for i in range(n)}
        store.dense_search(queries[0], K)  # warm-up: first query loads indexes
        dense, dense_t = timed(lambda q: store.dense_search(q, K), list(queries))
        lexical, lexical_t = timed(lambda t: store.lexical_search(t, K), lexical_queries)
        pairs = list(zip(queries, lexical_queries, strict=True))
        _, hybrid_t = timed(lambda p: fuse(store.dense_search(p[0], 30), store.lexical_search(p[1], 30), K), pairs)
        truth = exact_top(vectors, queries, K)
        recall = np.mean([len({row_of[h.chunk.chunk_id] for h in hits} & gold) / K for hits, gold in zip(dense, truth, strict=True)])
        return {
            "config": config,
            "n_chunks": n,
            "dense_index": (store.manifest.get("dense_index") or {}).get("index_type") or store.manifest["index_kind"].upper(),
            "build_s": round(build_s, 1),
            "build_chunks_per_s": round(n / build_s),
            "rss_mb": round(after["rss_mb"], 0),
            "rss_for_store_mb": round(after["rss_mb"] - before["rss_mb"], 0),
            "peak_rss_mb": round(after["peak_rss_mb"], 0),
            "disk_mb": round(disk_mb(workdir), 0),
            "dense": dense_t,
            "lexical": lexical_t,
            "hybrid": hybrid_t,
            "lexical_hit_rate": round(float(np.mean([bool(h) for h in lexical])), 3),
            "recall@10": round(float(recall), 4),
        }
    finally:
        if config.startswith("milvus"):  # stop the embedded server first, or it rewrites files on exit
            from index.milvus_store import MilvusTarget, disconnect

            disconnect(MilvusTarget(str(workdir / "milvus.db"), collection="scale"))
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- orchestration


def available_mb() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(fields["MemAvailable"].split()[0]) / 1024


def skip_reason(config: str, n: int, previous: dict[str, Any] | None, budget_s: float) -> str | None:
    need = BYTES_PER_CHUNK[config] * n / 2**20
    if need > 0.7 * available_mb():
        return f"needs ~{need:.0f} MB, {available_mb():.0f} MB available"
    if previous and "build_s" in previous:
        projected = previous["build_s"] * n / previous["n_chunks"]
        if projected > budget_s:
            return f"projected build {projected:.0f} s (linear from {previous['n_chunks']}) > budget {budget_s:.0f} s"
    return None


def child(config: str, n: int, budget_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", config, str(n)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s * 3, cwd=ROOT, env={**os.environ, **CHILD_ENV})
    except subprocess.TimeoutExpired:
        return {"config": config, "n_chunks": n, "skipped": f"did not finish in {budget_s * 3:.0f} s"}
    if done.returncode != 0:
        return {"config": config, "n_chunks": n, "failed": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| store | chunks | dense index | build s | RSS MB | disk MB | dense p50/p95 ms | lexical p50/p95 ms | hybrid p50/p95 ms | recall@10 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "build_s" not in r:
            lines.append(f"| {r['config']} | {r['n_chunks']:,} | {r.get('skipped') or r.get('failed')} |||||||| ")
            continue
        lat = " | ".join(f"{r[leg]['p50_ms']:.1f} / {r[leg]['p95_ms']:.1f}" for leg in ("dense", "lexical", "hybrid"))
        lines.append(
            f"| {r['config']} | {r['n_chunks']:,} | {r['dense_index']} | {r['build_s']:.0f} | {r['rss_mb']:.0f} | {r['disk_mb']:.0f} | {lat} | {r['recall@10']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--budget-s", type=float, default=1200, help="skip a run whose build is projected to take longer")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for config in args.configs.split(","):
        previous = None
        for n in sizes:
            if config == "faiss-hnsw" and n < 100_000:
                continue  # exact search is the right choice there
            reason = skip_reason(config, n, previous, args.budget_s)
            result = {"config": config, "n_chunks": n, "skipped": reason} if reason else child(config, n, args.budget_s)
            print(json.dumps(result, ensure_ascii=False), flush=True)
            results.append(result)
            previous = result if "build_s" in result else previous
    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_before": [round(x, 1) for x in load_before],
            "load_avg_after": [round(x, 1) for x in os.getloadavg()],
        },
        "child_env": CHILD_ENV,
        "dim": DIM,
        "k": K,
        "queries": QUERIES,
        "words_per_chunk": WORDS_PER_CHUNK,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    print(table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
