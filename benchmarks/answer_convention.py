"""Where the reader's CMRC 2018 trial errors come from: the datasets' answer conventions.

The reader is trained on DRCD, whose annotators mark the shortest phrase that answers (median
4 characters, 5-6 even for 為什麼); CMRC 2018 trial's annotators often mark a whole clause or
sentence (median 19 characters, 39 for 为什么). This script measures, without training or choosing
anything:

1. the gold answers' length by question kind in DRCD dev, DRCD test and CMRC trial;
2. from a committed `run_cmrc.py` run (its questions.jsonl): the reader-alone (gold passage) and
   open-domain short answers' EM/F1 and predicted length by the gold answer's length band;
3. how much F1/EM is lost where the prediction lies inside a gold answer (the right place, the
   DRCD length): the metric if those predictions had the gold's length instead;
4. the bound that length alone sets: each prediction kept at its length, placed perfectly.

    python benchmarks/answer_convention.py [--run benchmarks/results/cmrc2018_inprocess/questions.jsonl]
        [--out benchmarks/results/answer_convention.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.eval.datasets import load_dataset  # noqa: E402
from rag.eval.metrics import mixed_segmentation  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "DRCD dev": DATA / "drcd" / "DRCD_dev.json",
    "DRCD test": DATA / "drcd" / "DRCD_test.json",
    "CMRC 2018 trial": DATA / "cmrc2018" / "cmrc2018_trial.json",
}
# First match wins; both scripts, since DRCD is traditional and CMRC simplified.
QUESTION_KINDS = {
    "why": r"為什麼|为什么|為何|为何|原因",
    "how": r"如何|怎樣|怎样|怎麼|怎么",
    "which (plural)": r"哪些",
    "what is": r"是什麼|是什么|指什麼|指什么",
    "who": r"誰|谁",
    "when": r"何時|何时|哪一年|哪年|什麼時候|什么时候",
    "how many": r"多少|幾|几",
}
LENGTH_BANDS = ((0, 6), (7, 12), (13, 25), (26, None))


def question_kind(question: str) -> str:
    return next((kind for kind, pattern in QUESTION_KINDS.items() if re.search(pattern, question)), "other")


def gold_length(answers: Iterable[str]) -> int:
    return min(len(answer) for answer in answers)


def length_summary(lengths: list[int]) -> dict:
    return {
        "questions": len(lengths),
        "median_chars": statistics.median(lengths) if lengths else None,
        "share_at_most_6": round(sum(n <= 6 for n in lengths) / len(lengths), 3) if lengths else None,
    }


def lengths_by_kind(path: Path) -> dict[str, dict]:
    by_kind: dict[str, list[int]] = {"all": []}
    for question in load_dataset(path).questions:
        length = gold_length(question.answers)
        by_kind.setdefault(question_kind(question.question), []).append(length)
        by_kind["all"].append(length)
    return {kind: length_summary(lengths) for kind, lengths in sorted(by_kind.items(), key=lambda kv: -len(kv[1]))}


def band_name(low: int, high: int | None) -> str:
    return f"{low}-{high}" if high is not None else f">={low}"


def in_band(length: int, low: int, high: int | None) -> bool:
    return low <= length and (high is None or length <= high)


def scores_by_band(rows: list[dict], answer: str, em: str, f1: str) -> dict[str, dict]:
    table = {}
    for low, high in LENGTH_BANDS:
        band = [row for row in rows if in_band(gold_length(row["answers"]), low, high)]
        table[band_name(low, high)] = {
            "questions": len(band),
            "em": round(statistics.fmean(row[em] or 0.0 for row in band), 3),
            "f1": round(statistics.fmean(row[f1] or 0.0 for row in band), 3),
            "predicted_median_chars": statistics.median(len(row[answer] or "") for row in band),
        }
    return table


def inside_gold(prediction: str | None, answers: list[str]) -> bool:
    return bool(prediction) and any(prediction in gold and prediction != gold for gold in answers)


def length_loss(rows: list[dict], answer: str, em: str, f1: str) -> dict:
    """EM/F1 as measured, and as they would be if every prediction inside a gold answer had its length."""
    inside = [row for row in rows if inside_gold(row[answer], row["answers"]) and (row[em] or 0.0) < 1.0]
    n = len(rows)
    measured_f1 = sum(row[f1] or 0.0 for row in rows) / n
    measured_em = sum(row[em] or 0.0 for row in rows) / n
    return {
        "questions": n,
        "em": round(measured_em, 3),
        "f1": round(measured_f1, 3),
        "predictions_inside_gold": len(inside),
        "em_if_those_had_gold_length": round(measured_em + len(inside) / n, 3),
        "f1_if_those_had_gold_length": round(measured_f1 + sum(1.0 - (row[f1] or 0.0) for row in inside) / n, 3),
    }


def metric_tokens(text: str | None) -> int:
    return len(mixed_segmentation(text or "", rm_punc=True))


def placement_oracle(rows: list[dict], answer: str) -> dict:
    """EM/F1 if each prediction kept its length (in the official metric's tokens) but sat exactly
    on the best-matching gold answer: F1 2·min(p, g)/(p + g), EM where the lengths are equal. An
    upper bound for a reader that answers at these lengths, wherever it places its spans."""
    f1s, ems = [], []
    for row in rows:
        predicted = metric_tokens(row[answer])
        golds = [metric_tokens(gold) for gold in row["answers"]]
        f1s.append(max((2 * min(predicted, g) / (predicted + g) if predicted + g else 0.0) for g in golds))
        ems.append(float(predicted in golds))  # two answers of punctuation alone are an exact match too
    return {"em": round(statistics.fmean(ems), 3), "f1": round(statistics.fmean(f1s), 3)}


def run_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row.get("answerable", True) and row.get("answers")]


def print_report(report: dict) -> None:
    print("gold answer length (characters, shortest gold) by question kind: median / share <= 6 / questions")
    for name, kinds in report["gold_lengths"].items():
        cells = ", ".join(f"{kind} {s['median_chars']} / {s['share_at_most_6']} / {s['questions']}" for kind, s in kinds.items())
        print(f"  {name}: {cells}")
    for leg, sections in report["run"].items():
        if leg == "file":
            continue
        print(f"\n{leg}, by the gold answer's length: questions, EM, F1, predicted median length")
        for band, s in sections["by_gold_length"].items():
            print(f"  gold {band} chars: {s['questions']}, {s['em']}, {s['f1']}, {s['predicted_median_chars']}")
        loss = sections["length_loss"]
        print(
            f"  all: EM {loss['em']} F1 {loss['f1']}; {loss['predictions_inside_gold']} predictions lie inside a gold answer;"
            f" with the gold's length: EM {loss['em_if_those_had_gold_length']} F1 {loss['f1_if_those_had_gold_length']}"
        )
        oracle = sections["placement_oracle_at_predicted_length"]
        print(f"  every prediction at its own length but placed on the gold: EM <= {oracle['em']}, F1 <= {oracle['f1']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "results" / "cmrc2018_inprocess" / "questions.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "answer_convention.json")
    args = parser.parse_args(argv)
    rows = run_rows(args.run)
    legs = {
        "reader alone, gold passage": ("reader_answer", "reader_em", "reader_f1"),
        "open domain": ("short_answer", "short_em", "short_f1"),
    }
    report = {
        "gold_lengths": {name: lengths_by_kind(path) for name, path in DATASETS.items()},
        "run": {"file": str(args.run.relative_to(ROOT)) if args.run.is_relative_to(ROOT) else str(args.run)},
    }
    for leg, (answer, em, f1) in legs.items():
        report["run"][leg] = {
            "by_gold_length": scores_by_band(rows, answer, em, f1),
            "length_loss": length_loss(rows, answer, em, f1),
            "placement_oracle_at_predicted_length": placement_oracle(rows, answer),
        }
    print_report(report)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
