"""Calibrate the extractive composer's refusal threshold on labelled data.

Answerable questions: CMRC 2018 trial questions asked against the full CMRC index.
Unanswerable questions: the same questions asked with their gold passage filtered out
(same domain, same style, but the answer is no longer in reach), plus the seed dev set.
A decision is right when the service answers and the answer contains a gold answer, or
refuses when it cannot (gold passage removed, or the answer it would give is wrong).
Chosen threshold: the most right decisions among thresholds that refuse at most 5% of
answerable questions (a wrong refusal costs a user more than a weak answer with its
citation); the whole curve is recorded.

    python benchmarks/calibrate_refusal.py [--limit N] [--out benchmarks/results/refusal_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from index.store import Filters  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.service import RagService  # noqa: E402
from rag.types import Document  # noqa: E402

CMRC = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_trial.json"
SEED_QA = ROOT.parent / "shared" / "eval" / "seed_qa_dev.jsonl"
MAX_FALSE_REFUSAL = 0.05


def cmrc_documents_and_questions(path: Path) -> tuple[list[Document], list[dict]]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    docs, questions = [], []
    for article in data:
        for i, para in enumerate(article["paragraphs"]):
            title = article.get("title") or para.get("id", f"p{i}")
            doc = Document(title=title, text=para["context"], key=f"cmrc:{para.get('id', title)}:{i}", source="cmrc2018_trial.json")
            docs.append(doc)
            for qa in para["qas"]:
                if not qa["question"].strip():
                    continue  # two trial questions are empty strings; the service rejects them
                questions.append({"question": qa["question"], "answers": [a["text"] for a in qa["answers"]], "doc_id": doc.doc_id})
    return docs, questions


def contains_gold(answer_text: str, short: str | None, golds: list[str]) -> bool:
    return any(g and (g in answer_text or g in (short or "")) for g in golds)


def sweep(records: list[dict]) -> list[dict]:
    curve = []
    for step in range(0, 101):
        t = step / 100
        right = sum((r["confidence"] >= t) == r["should_answer"] for r in records)
        answerable = [r for r in records if r["answerable"]]
        unanswerable = [r for r in records if not r["answerable"]]
        curve.append(
            {
                "threshold": t,
                "accuracy": right / len(records),
                "false_refusal_rate": sum(r["confidence"] < t for r in answerable) / max(len(answerable), 1),
                "refusal_rate_unanswerable": sum(r["confidence"] < t for r in unanswerable) / max(len(unanswerable), 1),
                "answered_correct_rate": sum(r["confidence"] >= t and r["correct"] for r in answerable) / max(len(answerable), 1),
            }
        )
    return curve


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="first N CMRC questions only")
    parser.add_argument("--index", type=Path, help="reuse a CMRC index directory")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "refusal_calibration.json")
    args = parser.parse_args()

    docs, questions = cmrc_documents_and_questions(CMRC)
    if args.limit:
        questions = questions[: args.limit]
    index_dir = args.index or Path(tempfile.mkdtemp(prefix="cmrc-index-"))
    service = RagService(Settings(index_dir=index_dir, refusal_threshold=0.0))
    started = time.time()
    service.add_documents(docs, progress=True)
    print(f"indexed {len(docs)} passages in {time.time() - started:.0f}s", file=sys.stderr)

    records = []
    for i, q in enumerate(questions, 1):
        full = service.ask(q["question"])
        correct = contains_gold(full.answer, full.short_answer, q["answers"])
        records.append({"answerable": True, "correct": correct, "should_answer": correct, "confidence": full.confidence})
        held_out = service.ask(q["question"], filters=Filters(exclude_doc_ids=frozenset({q["doc_id"]})))
        records.append({"answerable": False, "correct": False, "should_answer": False, "confidence": held_out.confidence})
        if i % 100 == 0:
            print(f"{i}/{len(questions)}", file=sys.stderr)

    seed = RagService(Settings(index_dir=Path(tempfile.mkdtemp(prefix="seed-index-")), refusal_threshold=0.0))
    seed.add_files([ROOT / "seeds"])
    for line in SEED_QA.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        answer = seed.ask(item["question"])
        correct = item["answerable"] and contains_gold(answer.answer, answer.short_answer, item["answers"])
        records.append({"answerable": item["answerable"], "correct": correct, "should_answer": correct, "confidence": answer.confidence})

    curve = sweep(records)
    allowed = [row for row in curve if row["false_refusal_rate"] <= MAX_FALSE_REFUSAL]
    best = max(allowed, key=lambda row: (row["accuracy"], -row["threshold"]))
    result = {
        "method": __doc__.strip().splitlines()[0],
        "questions": len(questions),
        "records": len(records),
        "rule": f"max accuracy with false_refusal_rate <= {MAX_FALSE_REFUSAL}",
        "best": best,
        "curve": curve,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
