"""Fit the reader composer's span combination and its refusal threshold on held-out DRCD.

Data: the DRCD paragraphs held out of reader training (rag.reader.data.is_holdout),
converted to simplified, indexed together with every other DRCD paragraph as distractors.
Each held-out question is asked through the service's retrieval; every n-best span the
reader proposes gets the features of rag.reader.composer.FEATURES and a soft label (its
CMRC F1 against the gold answers). A logistic regression over those features is fitted
(L2, Newton steps). Then the refusal threshold, by the same leave-gold-out method as
benchmarks/calibrate_refusal.py: each question asked again with its gold paragraph filtered
out (unanswerable); the threshold is the one with the most right decisions among those that
refuse at most 5% of answerable questions. CMRC 2018 trial is not touched here.

    python benchmarks/fit_reader_combiner.py [--index DIR] [--out rag/reader/model/combiner.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.calibrate_refusal import MAX_FALSE_REFUSAL, contains_gold, sweep  # noqa: E402
from index.store import Filters  # noqa: E402
from rag.answer_types import question_unit  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.eval.metrics import cmrc_em, cmrc_f1  # noqa: E402
from rag.reader.composer import FEATURES, Combiner, ReaderComposer  # noqa: E402
from rag.reader.data import is_holdout, load_squad, to_simplified  # noqa: E402
from rag.reader.layout import MODEL_DIR  # noqa: E402
from rag.service import RagService  # noqa: E402
from rag.types import Document  # noqa: E402

DRCD = [ROOT.parent / "shared" / "data" / "drcd" / f"DRCD_{split}.json" for split in ("dev", "test")]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Weights (bias last) minimising soft-label cross-entropy + l2·|w|² by Newton's method."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) / len(x) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(x) + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


FEATURE_SETS = {
    "without crosses_clause": [f for f in FEATURES if f != "crosses_clause"],
    "all features": list(FEATURES),
}


def cross_validated(questions: list[dict], features: list[str], folds: int = 5) -> dict[str, float]:
    """EM/F1 of the best span by a combination fitted on the other folds (questions dealt
    round-robin), so feature sets are compared out of sample."""
    ems, f1s = [], []
    for fold in range(folds):
        fit = [q for i, q in enumerate(questions) if i % folds != fold]
        x = np.array([[s.features[f] for f in features] for q in fit for s in q["scored"]])
        y = np.array([cmrc_f1(s.text, q["example"].answers) for q in fit for s in q["scored"]])
        w = fit_logistic(x, y)
        for q in questions[fold::folds]:
            if not q["scored"]:
                ems.append(0.0)
                f1s.append(0.0)
                continue
            best = max(q["scored"], key=lambda s: float(np.dot([s.features[f] for f in features], w[:-1])))
            ems.append(cmrc_em(best.text, q["example"].answers))
            f1s.append(cmrc_f1(best.text, q["example"].answers))
    return {"em": round(float(np.mean(ems)), 4), "f1": round(float(np.mean(f1s)), 4)}


def ex_unit(q: dict) -> str | None:
    return question_unit(q["example"].question)


def unit_only(best, unit: str | None) -> str:  # type: ignore[no-untyped-def]
    """The reader's trimmed span without the asked unit (to measure that step)."""
    return best.raw_text


def holdout_corpus(distractors: int) -> tuple[list, dict[str, Document]]:
    """The held-out DRCD questions (simplified) and the paragraphs to index: theirs and
    `distractors` training paragraphs (a fixed sample), keyed `drcd:<group>`."""
    simplified = to_simplified([ex for path in DRCD for ex in load_squad(path)])
    held = [ex for ex in simplified if is_holdout(ex)]
    others = sorted({ex.group for ex in simplified if not is_holdout(ex)})
    indexed = {ex.group for ex in held} | set(random.Random(0).sample(others, min(distractors, len(others))))
    docs: dict[str, Document] = {}
    for ex in simplified:
        key = f"drcd:{ex.group}"
        if ex.group in indexed:
            docs.setdefault(key, Document(title=ex.group.split("|", 1)[-1].rsplit("#", 1)[0], text=ex.context, key=key, source="drcd"))
    return held, docs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, help="reuse a DRCD index directory")
    ap.add_argument("--out", type=Path, default=MODEL_DIR / "combiner.json")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "results" / "reader_combiner.json")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--distractors", type=int, default=400, help="training paragraphs indexed beside the held-out ones")
    args = ap.parse_args()

    held, docs = holdout_corpus(args.distractors)
    if args.limit:
        held = held[: args.limit]
    index_dir = args.index or Path(tempfile.mkdtemp(prefix="drcd-index-"))
    service = RagService(Settings(index_dir=index_dir, refusal_threshold=0.0))
    started = time.time()
    report = service.add_documents(list(docs.values()), progress=True)
    print(f"index: {len(docs)} paragraphs ({report.summary()}) in {time.time() - started:.0f}s", file=sys.stderr)
    reader = service.reader
    assert reader is not None, "no reader model: export one first"
    composer = ReaderComposer(
        reader, service.heuristic_composer(), Combiner({"span_score": 1.0}), refusal_threshold=0.0, stop_reading_at=None
    )
    composer.heuristic.refusal_threshold = 0.0

    rows, labels, questions = [], [], []
    for i, ex in enumerate(held):
        gold_id = docs[f"drcd:{ex.group}"].doc_id
        question, vector, hits, _, _ = service._retrieve(ex.question, None, Filters())
        scored = composer.score_spans(question, vector, hits)
        for item in scored:
            rows.append([item.features[f] for f in FEATURES])
            labels.append(cmrc_f1(item.text, ex.answers))
        _, vector2, hits_out, _, _ = service._retrieve(ex.question, None, Filters(exclude_doc_ids=frozenset({gold_id})))
        questions.append({"example": ex, "scored": scored, "scored_out": composer.score_spans(question, vector2, hits_out)})
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(held)}", file=sys.stderr)
    x, y = np.array(rows), np.array(labels)
    w = fit_logistic(x, y)
    weights = {f: round(float(v), 5) for f, v in zip(FEATURES, w[:-1], strict=True)} | {"bias": round(float(w[-1]), 5)}
    combiner = Combiner(weights)

    def pick(scored, score):  # type: ignore[no-untyped-def]
        return max(scored, key=score) if scored else None

    selection = {}
    for name, score, snapped in (
        ("reader span score", lambda s: s.features["span_score"], True),
        ("learned combination", lambda s: combiner.probability(s.features), True),
        ("learned combination, without the asked unit", lambda s: combiner.probability(s.features), False),
    ):
        ems, f1s = [], []
        for q in questions:
            best = pick(q["scored"], score)
            pred = (best.text if snapped else unit_only(best, ex_unit(q))) if best else ""
            ems.append(cmrc_em(pred, q["example"].answers))
            f1s.append(cmrc_f1(pred, q["example"].answers))
        selection[name] = {"em": round(float(np.mean(ems)), 4), "f1": round(float(np.mean(f1s)), 4)}

    cross_validation = {name: cross_validated(questions, features) for name, features in FEATURE_SETS.items()}
    cross_validation["reader span score"] = cross_validated(questions, ["span_score"])

    records = []
    for q in questions:
        ex = q["example"]
        best = pick(q["scored"], lambda s: combiner.probability(s.features))
        if best is not None:
            sentence = best.window.text[best.sentence[0] : best.sentence[1]]
            correct = contains_gold(sentence, best.text, ex.answers)
            records.append(
                {"answerable": True, "correct": correct, "should_answer": correct, "confidence": combiner.probability(best.features)}
            )
        out = pick(q["scored_out"], lambda s: combiner.probability(s.features))
        records.append(
            {
                "answerable": False,
                "correct": False,
                "should_answer": False,
                "confidence": combiner.probability(out.features) if out else 0.0,
            }
        )
    curve = sweep(records)
    allowed = [row for row in curve if row["false_refusal_rate"] <= MAX_FALSE_REFUSAL] or curve[:1]  # threshold 0: never refuse
    best_row = max(allowed, key=lambda row: (row["accuracy"], -row["threshold"]))
    result = {
        "features": list(FEATURES),
        "weights": weights,
        "threshold": best_row["threshold"],
        "fitted_on": f"{len(held)} held-out DRCD questions (simplified), {len(x)} candidate spans, {len(docs)} indexed paragraphs",
    }
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(
        json.dumps(
            {**result, "selection_on_fit_set": selection, "selection_5_fold": cross_validation, "calibration": best_row, "curve": curve},
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    print(
        json.dumps(
            {**result, "selection": selection, "selection_5_fold": cross_validation, "calibration": best_row}, ensure_ascii=False, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
