"""Simplified vs traditional script, side by side in one run (issue 10):

- CMRC 2018 trial: the questions as written (simplified) and converted to traditional with
  OpenCC s2t, both over the same simplified index;
- the seed dev set: questions as written and in traditional, over the seed index;
- a traditional-script seed page (the seed file converted with s2t, indexed on its own)
  asked the simplified dev questions (gold answers and evidence converted the same way,
  since answers and quotes keep the article's own characters).

    python benchmarks/script_robustness.py                 # everything, into benchmarks/results/
    python benchmarks/script_robustness.py --cmrc-limit 200

Prints recall@5, answer-contains, short-answer EM/F1 and refusal rates for each pair and
their differences (the target: recall@5 and contains within 2 points of the simplified run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402
from rag.eval.cli import build_index, default_index_dir  # noqa: E402
from rag.eval.datasets import Dataset, load_dataset  # noqa: E402
from rag.eval.harness import InProcessAnswerer, evaluate  # noqa: E402
from rag.service import RagService  # noqa: E402

SHARED = Path(os.environ.get("RAG_SHARED_DIR", ROOT.parent / "shared"))
CMRC = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"
SEED_QA = SHARED / "eval" / "seed_qa_dev.jsonl"
SEED_FILE = ROOT / "seeds" / "000_6297df77ee962a0f.txt"
OUT = ROOT / "benchmarks" / "results" / "script_robustness.json"
METRICS = (
    ("retrieval", "recall@5"),
    ("answer", "contains"),
    ("answer", "short_em"),
    ("answer", "short_f1"),
    ("refusal", "false_refusal_rate"),
    ("refusal", "refusal_rate"),
)


def s2t(text: str) -> str:
    import opencc

    return opencc.OpenCC("s2t").convert(text)


def traditional_questions(dataset: Dataset) -> Dataset:
    questions = [replace(q, question=s2t(q.question)) for q in dataset.questions]
    return Dataset(dataset.path, dataset.format, questions, dataset.documents, dataset.skipped)


def traditional_everything(dataset: Dataset) -> Dataset:
    """Answers and evidence in traditional too: for a traditional corpus asked in simplified."""
    questions = [
        replace(q, answers=tuple(s2t(a) for a in q.answers), evidence=q.evidence and s2t(q.evidence)) for q in dataset.questions
    ]
    return Dataset(dataset.path, dataset.format, questions, dataset.documents, dataset.skipped)


def scores(report: Any) -> dict[str, float | None]:
    metrics = report.metrics
    return {f"{section}.{name}": metrics.get(section, {}).get(name) for section, name in METRICS}


def run(label: str, dataset: Dataset, service: RagService) -> dict[str, float | None]:
    report = evaluate(dataset, InProcessAnswerer(service), progress=True)
    result = scores(report)
    print(label, json.dumps(result, ensure_ascii=False), flush=True)
    return result


def seed_service(index_dir: Path, corpus: Path) -> RagService:
    service = RagService(Settings(index_dir=index_dir))
    service.add_files([corpus])
    return service


def compare(base: dict[str, float | None], other: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if base[k] is None or other[k] is None else round(other[k] - base[k], 4) for k in base}  # type: ignore[operator]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cmrc-limit", type=int, default=None, help="first N CMRC questions (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results: dict[str, Any] = {}

    cmrc = load_dataset(CMRC).limited(args.cmrc_limit)
    settings = Settings()
    service = RagService(settings.model_copy(update={"index_dir": default_index_dir(cmrc, settings)}))
    build_index(cmrc, service)
    simplified = run("cmrc simplified", cmrc, service)
    traditional = run("cmrc traditional questions", traditional_questions(cmrc), service)
    results["cmrc2018_trial"] = {"questions": len(cmrc.questions), "simplified": simplified, "traditional": traditional}
    results["cmrc2018_trial"]["difference"] = compare(simplified, traditional)

    seed_qa = load_dataset(SEED_QA)
    with tempfile.TemporaryDirectory() as tmp:
        service = seed_service(Path(tmp) / "seed", SEED_FILE)
        simplified = run("seed simplified", seed_qa, service)
        traditional = run("seed traditional questions", traditional_questions(seed_qa), service)
        page = Path(tmp) / "traditional" / "seed_traditional.txt"
        page.parent.mkdir()
        page.write_text(s2t(SEED_FILE.read_text(encoding="utf-8")), encoding="utf-8")
        trad_service = seed_service(Path(tmp) / "trad-index", page)
        trad_corpus = run("traditional page, simplified questions", traditional_everything(seed_qa), trad_service)
    results["seed_dev"] = {
        "questions": len(seed_qa.questions),
        "simplified": simplified,
        "traditional_questions": traditional,
        "traditional_page_simplified_questions": trad_corpus,
        "difference_traditional_questions": compare(simplified, traditional),
        "difference_traditional_page": compare(simplified, trad_corpus),
    }
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
