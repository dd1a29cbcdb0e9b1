"""The committed benchmarks: CMRC 2018 trial in-process and over HTTP, and the seed dev set.

    python benchmarks/run_cmrc.py                      # all three, into benchmarks/results/
    python benchmarks/run_cmrc.py --only inprocess --limit 50
    python benchmarks/run_cmrc.py --table              # print the README table from the reports

CMRC: every passage of the trial set becomes a document of a fresh index (cached under the
system temp dir, reused by later runs); every question is asked against the whole index.
HTTP: the same index is served by `rag serve` (a subprocess on 127.0.0.1, rate limits off)
and the questions go through POST /ask and /search. The two modes must agree on every
quality metric; the script compares them question by question and exits 1 if they do not.
Equivalent one-liners: `rag eval ../shared/data/cmrc2018/cmrc2018_trial.json --build-index`
and, with a server running, `rag eval ... --url http://127.0.0.1:8000`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.load_ask import stop_server  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.eval.cli import build_index, default_index_dir  # noqa: E402
from rag.eval.datasets import Dataset, load_dataset  # noqa: E402
from rag.eval.harness import HttpAnswerer, InProcessAnswerer, evaluate  # noqa: E402
from rag.eval.report import Report, flatten, headline_table, read_report_dir  # noqa: E402
from rag.service import RagService  # noqa: E402

SHARED = Path(os.environ.get("RAG_SHARED_DIR", ROOT.parent / "shared"))
CMRC = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"
SEED_QA = SHARED / "eval" / "seed_qa_dev.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = {
    "inprocess": "cmrc2018_inprocess",
    "http": "cmrc2018_http",
    "heuristic": "cmrc2018_inprocess_heuristic",
    "seed": "seed_dev",
    "seed_heuristic": "seed_dev_heuristic",
}
LABELS = {
    "inprocess": "CMRC 2018 trial, in-process",
    "http": "CMRC 2018 trial, HTTP /ask",
    "heuristic": "CMRC 2018 trial, in-process, RAG_READER=none",
    "seed": "seed dev set, in-process",
    "seed_heuristic": "seed dev set, in-process, RAG_READER=none",
}
SERVER_START_TIMEOUT_S = 300


def relative(path: Path) -> Path:
    """Reports name the dataset as ../shared/..., so they read the same on any machine."""
    try:
        return Path("../shared") / path.resolve().relative_to(SHARED.resolve())
    except ValueError:
        return Path(os.path.relpath(path, ROOT))


def load(path: Path, limit: int | None) -> Dataset:
    dataset = load_dataset(path).limited(limit)
    dataset.path = relative(path)
    return dataset


def cmrc_service(dataset: Dataset, index_dir: Path | None) -> RagService:
    settings = Settings()
    settings = settings.model_copy(update={"index_dir": index_dir or default_index_dir(dataset, settings)})
    service = RagService(settings)
    build_index(dataset, service)
    return service


def run_inprocess(dataset: Dataset, service: RagService, out: Path, top_k: int) -> Report:
    report = evaluate(dataset, InProcessAnswerer(service), top_k=top_k, progress=True, reader=service.reader)
    report.write(out)
    return report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(index_dir: Path, port: int) -> subprocess.Popen[bytes]:
    # Rate limits off: one client asking 2,000 requests back to back is the point here.
    env = {**os.environ, "RAG_IP_RATE_PER_MINUTE": "0", "RAG_KEY_RATE_PER_MINUTE": "0"}
    argv = [sys.executable, "-m", "rag.cli", "--index", str(index_dir), "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = open(Path(tempfile.gettempdir()) / f"rag-serve-{port}.log", "wb")  # noqa: SIM115 (lives as long as the server)
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"rag serve exited with {server.returncode}; see {tempfile.gettempdir()}/rag-serve-*.log")
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"rag serve did not become ready at {url} within {SERVER_START_TIMEOUT_S} s")


def run_http(dataset: Dataset, index_dir: Path, out: Path, top_k: int) -> Report:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(index_dir, port)
    try:
        wait_ready(url, server)
        answerer = HttpAnswerer(url)
        try:
            report = evaluate(dataset, answerer, top_k=top_k, progress=True)  # reader-alone scores: the in-process run
        finally:
            answerer.close()
    finally:
        stop_server(server, timeout=20)
    report.write(out)
    return report


def agreement(local: Report, remote: Report) -> dict[str, Any]:
    """Quality metrics and per-question outcomes of the two modes, side by side."""
    a, b = flatten(local.metrics), flatten(remote.metrics)
    # reader-alone scores are computed once, in the in-process run
    quality = [k for k in a if not k.startswith(("latency_ms.", "answer.reader_gold")) and k != "throughput_qps"]
    metric_diffs = {k: [a[k], b.get(k)] for k in quality if a[k] != b.get(k)}
    fields = ("answer", "short_answer", "refused", "gold_rank", "ranked_doc_ids")
    theirs = {q["qid"]: q for q in remote.questions}
    question_diffs = [
        {"qid": q["qid"], "fields": [f for f in fields if q[f] != theirs.get(q["qid"], {}).get(f)]}
        for q in local.questions
        if any(q[f] != theirs.get(q["qid"], {}).get(f) for f in fields)
    ]
    return {
        "agree": not metric_diffs and not question_diffs,
        "questions": len(local.questions),
        "metric_differences": metric_diffs,
        "question_differences": question_diffs,
    }


def run_seed(results: Path, top_k: int, reader: str, run: str) -> Report:
    dataset = load(SEED_QA, None)
    index_dir = Path(tempfile.mkdtemp(prefix="rag-seed-index-"))
    service = RagService(Settings(index_dir=index_dir, reader=reader))
    service.add_files([ROOT / "seeds"])
    report = evaluate(dataset, InProcessAnswerer(service), top_k=top_k, progress=True)
    report.write(results / RUNS[run])
    return report


def write_table(results: Path) -> str:
    reports = []
    for key, name in RUNS.items():
        path = results / name / "report.json"
        if path.exists():
            reports.append((LABELS[key], json.loads(path.read_text(encoding="utf-8"))))
    table = headline_table(reports)
    (results / "README.md").write_text(
        "# Benchmark results\n\n"
        "Written by `python benchmarks/run_cmrc.py`; metric definitions in docs/metrics.md and in each report.md.\n"
        "Latency is the service's own `timings_ms.total` in ms.\n\n" + table + "\n",
        encoding="utf-8",
    )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", default=",".join(RUNS), help="comma-separated: inprocess, http, heuristic (in-process, RAG_READER=none), seed, seed_heuristic"
    )
    parser.add_argument("--limit", type=int, help="first N CMRC questions only (smoke runs; results are not for committing)")
    parser.add_argument("--index", type=Path, help="CMRC index dir (default: a cache dir under the system temp dir)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--top-k", type=int, default=Settings().top_k)
    parser.add_argument("--table", action="store_true", help="only print the README table of the existing reports")
    parser.add_argument("--render", action="store_true", help="only re-render report.md and the plots of the existing reports")
    args = parser.parse_args()
    if args.render:
        for name in RUNS.values():
            if (args.results / name / "report.json").exists():
                read_report_dir(args.results / name).write(args.results / name)
    if args.table or args.render:
        print(write_table(args.results))
        return 0
    only = set(args.only.split(","))
    if only - set(RUNS):
        parser.error(f"--only: unknown run(s) {', '.join(sorted(only - set(RUNS)))}")
    status = 0
    if only & {"inprocess", "http", "heuristic"}:
        dataset = load(CMRC, args.limit)
        service = cmrc_service(dataset, args.index)
        if "heuristic" in only:
            heuristic = RagService(service.settings.model_copy(update={"reader": "none"}))
            run_inprocess(dataset, heuristic, args.results / RUNS["heuristic"], args.top_k)
        print(f"CMRC index: {service.settings.index_dir}", file=sys.stderr)
        local = run_inprocess(dataset, service, args.results / RUNS["inprocess"], args.top_k) if "inprocess" in only else None
        if "http" in only:
            remote = run_http(dataset, service.settings.index_dir, args.results / RUNS["http"], args.top_k)
            if local is not None:
                check = agreement(local, remote)
                path = args.results / RUNS["http"] / "agreement.json"
                path.write_text(json.dumps(check, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
                print(f"modes agree: {check['agree']} ({len(check['question_differences'])} questions differ); see {path}")
                status = 0 if check["agree"] else 1
    if "seed" in only:
        run_seed(args.results, args.top_k, "onnx", "seed")
    if "seed_heuristic" in only:
        run_seed(args.results, args.top_k, "none", "seed_heuristic")
    print(write_table(args.results))
    return status


if __name__ == "__main__":
    sys.exit(main())
