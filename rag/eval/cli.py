"""`rag eval DATASET`: run a QA benchmark in-process or against a running service, write a report.

Imported by `rag --help`, so only argparse is imported at module level.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.eval.datasets import Dataset
    from rag.eval.harness import Answerer
    from rag.eval.report import Report
    from rag.reader import Reader
    from rag.service import RagService


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", type=Path, help="SQuAD/CMRC 2018 .json, or .jsonl with question, answers[, evidence, doc_id, answerable]"
    )
    parser.add_argument("--url", help="evaluate a running service (POST URL/ask) instead of an index in this process")
    # SUPPRESS: an absent --index here must not overwrite `rag --index DIR eval ...`.
    parser.add_argument("--index", type=Path, default=argparse.SUPPRESS, help="index directory for in-process runs")
    parser.add_argument(
        "--build-index",
        action="store_true",
        help="index the dataset's contexts first (SQuAD/CMRC): into --index, or a cache dir under the system temp dir",
    )
    parser.add_argument("--limit", type=_positive_int, help="only the first N questions (all contexts are still indexed)")
    parser.add_argument("--out", type=Path, help="report directory (default: eval-reports/<dataset name>)")
    parser.add_argument("--top-k", type=_positive_int, help="passages the answer is composed from (default: RAG_TOP_K, 5)")
    parser.add_argument("--retrieval-k", type=_positive_int, default=10, help="depth of the ranked list for recall@k/MRR/nDCG")
    parser.add_argument("--compare", type=Path, help="an earlier report.json: print the deltas, worse ones flagged")
    parser.add_argument("--api-key", default=os.environ.get("RAG_EVAL_API_KEY"), help="bearer key for --url (env RAG_EVAL_API_KEY)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-reader-alone", action="store_true", help="skip scoring the reader alone on each question's gold passage (RAG_READER's model, in this process)"
    )


def run(args: argparse.Namespace) -> int:
    from rag.config import Settings
    from rag.eval.datasets import load_dataset
    from rag.eval.harness import EvalError, evaluate
    from rag.eval.report import compare, load_report

    dataset = load_dataset(args.dataset).limited(args.limit)
    old = load_report(args.compare) if args.compare else None
    settings = Settings(**({"index_dir": args.index} if getattr(args, "index", None) else {}))
    top_k = args.top_k or settings.top_k
    if args.url and args.build_index:
        raise EvalError("--build-index builds a local index: build it in-process (--index DIR), serve DIR, then pass --url")
    answerer = http_answerer(args.url, args.api_key) if args.url else local_answerer(dataset, settings, args)
    check_gold_in_index(dataset, answerer.indexed_doc_ids(), args.url or str(settings.index_dir))
    try:
        reader = None if args.no_reader_alone or not dataset.documents else local_reader(settings)
        report = evaluate(dataset, answerer, top_k=top_k, retrieval_k=args.retrieval_k, progress=not args.no_progress, reader=reader)
    finally:
        close = getattr(answerer, "close", None)
        if close:
            close()
    out = args.out or Path("eval-reports") / dataset.name
    written = report.write(out)
    print_summary(report, written)
    if old is not None:
        print()
        print(f"compared with {args.compare}:")
        print(compare(old, report.to_dict())[0])
    return 0


def local_reader(settings: Settings) -> Reader | None:
    from rag.service import load_reader

    reader = load_reader(settings)
    if reader is None and settings.reader != "none":
        print("warning: reader-alone scores skipped: the reader model does not load (see the log)", file=sys.stderr)
    return reader


def http_answerer(url: str, api_key: str | None) -> Answerer:
    from rag.eval.harness import HttpAnswerer

    return HttpAnswerer(url, api_key=api_key)


def local_answerer(dataset: Dataset, settings: Settings, args: argparse.Namespace) -> Answerer:
    from rag.eval.harness import InProcessAnswerer
    from rag.service import RagService

    if args.build_index and not getattr(args, "index", None):
        settings = settings.model_copy(update={"index_dir": default_index_dir(dataset, settings)})
    service = RagService(settings)
    if args.build_index:
        build_index(dataset, service)
    check_evidence_in_index(dataset, service)
    return InProcessAnswerer(service)


def default_index_dir(dataset: Dataset, settings: Settings) -> Path:
    """A cache dir per corpus and index settings, so a re-run (or `rag serve`) reuses the build."""
    from rag.tokenize import TOKENIZER_ID
    from rag.types import content_id

    recipe = [settings.embedder, settings.index_kind, str(settings.chunk_chars), str(settings.chunk_overlap), TOKENIZER_ID]
    digest = content_id(*recipe, *sorted(d.doc_id for d in dataset.documents))
    return Path(tempfile.gettempdir()) / "rag-eval-index" / f"{dataset.name}-{digest[:12]}"


def build_index(dataset: Dataset, service: RagService) -> None:
    from rag.eval.harness import EvalError

    if not dataset.documents:
        raise EvalError(f"{dataset.path}: --build-index needs a SQuAD/CMRC .json file (its contexts are the documents)")
    index_dir = service.settings.index_dir
    wanted = {d.doc_id for d in dataset.documents}
    present = {d.doc_id for d in service.store.documents()}
    if present - wanted:
        extra = len(present - wanted)
        raise EvalError(f"{index_dir} already holds {extra} documents that are not in {dataset.path.name}: choose an empty --index")
    if present == wanted:
        print(f"index {index_dir}: already holds the {len(wanted)} documents", file=sys.stderr)
        return
    print(f"indexing {len(wanted - present)} documents of {dataset.path.name} into {index_dir}", file=sys.stderr)
    service.add_documents(dataset.documents, progress=True)


def check_gold_in_index(dataset: Dataset, indexed: set[str] | None, where: str) -> None:
    """Fail fast when the index cannot hold the answers (e.g. CMRC run without --build-index)."""
    from rag.eval.harness import EvalError

    gold = {doc_id for q in dataset.questions for doc_id in q.gold_doc_ids}
    if not gold or indexed is None:
        return
    if not gold & indexed:
        hint = "; add --build-index" if dataset.documents else ""
        if dataset.documents and where.startswith("http"):
            hint = "; serve an index built with `rag eval DATASET --build-index --index DIR`"
        raise EvalError(f"none of the {len(gold)} gold documents of {dataset.path.name} is in the index {where}{hint}")
    if gold - indexed:
        print(f"warning: {len(gold - indexed)} of {len(gold)} gold documents are not in the index {where}", file=sys.stderr)


def check_evidence_in_index(dataset: Dataset, service: RagService) -> None:
    """Evidence strings no indexed chunk contains can never be retrieved: say so up front."""
    from rag.eval.harness import EvalError
    from rag.eval.metrics import answer_contains

    with_evidence = [q for q in dataset.questions if q.evidence and not q.gold_doc_ids]
    if not with_evidence:
        return
    store = service.store
    chunks = [c.text for d in store.documents() for c in store.chunks_of(d.doc_id)]
    lost = [q.qid for q in with_evidence if not any(answer_contains(text, [q.evidence or ""]) for text in chunks)]
    if len(lost) == len(with_evidence):
        raise EvalError(
            f"no evidence string of {dataset.path.name} occurs in the index {service.settings.index_dir}: is it the right corpus?"
        )
    if lost:
        print(f"warning: the evidence of {', '.join(lost)} occurs in no indexed chunk; retrieval cannot find it", file=sys.stderr)


def print_summary(report: Report, written: list[Path]) -> None:
    from rag.eval.report import fmt, headline

    counts = report.metrics["counts"]
    print(f"{report.dataset['name']}: {counts['questions']} questions ({report.run['mode']}), {counts['errors']} errors")
    for name, value in headline(report.metrics):
        print(f"  {name:<32} {fmt(value, 1 if 'ms' in name else 3)}")
    print(f"  {'throughput (questions/s)':<32} {fmt(report.metrics['throughput_qps'], 2)}")
    print("wrote " + ", ".join(str(p) for p in written))
