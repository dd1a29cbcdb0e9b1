"""Load test of POST /ask: N concurrent clients for a fixed time against a real server.

Starts `python -m api.server` on 127.0.0.1 (a free port, rate limits off) over the seed
index (built into a temporary folder unless --index is given), then runs `--clients`
asyncio clients (one kept-alive HTTP/1.1 connection each) that ask the seed dev questions in turn until `--duration` seconds have
passed (or `--max-requests` were sent). Prints requests/s, latency percentiles and the
error count, and writes them to benchmarks/results/load_ask.json.

    python benchmarks/load_ask.py [--clients 50] [--duration 30] [--index DIR] [--out FILE]

Loopback only; bounded in time and in count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEED_QA = ROOT.parent / "shared" / "eval" / "seed_qa_dev.jsonl"
FALLBACK_QUESTIONS = [
    "昌都市有多少名市级以上领导带头抓党建促乡村振兴？",
    "八宿县然乌镇然乌村的党支部书记是谁？",
    "白玛岗社区一共收集了多少个“微心愿”？",
    "阿里地区开展了多少期专题培训？",
    "林芝市的地区生产总值是多少？",
]


def questions() -> list[str]:
    if SEED_QA.exists():
        rows = [json.loads(line) for line in SEED_QA.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [row["question"] for row in rows]
    return FALLBACK_QUESTIONS


def build_seed_index(folder: Path) -> Path:
    from rag.config import Settings
    from rag.service import RagService

    RagService(Settings(index_dir=folder)).add_files([ROOT / "seeds"])
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index: Path, port: int, log: Path, workers: int | None = None, cpus: set[int] | None = None) -> subprocess.Popen:
    """`cpus`: the CPUs the server may run on (its affinity, which its thread choices follow)."""
    env = {**os.environ, "RAG_IP_RATE_PER_MINUTE": "0", "RAG_KEY_RATE_PER_MINUTE": "0", "RAG_API_KEYS": "", "RAG_PUBLIC_KEY": ""}
    command = [sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(port), "--index", str(index)]
    command += ["--workers", str(workers)] if workers else []
    with open(log, "w") as out:
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with code {server.returncode}")
        try:
            response = httpx.get(f"{url}/ready", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not become ready")


def stop_server(server: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it has not exited in `timeout` s."""
    server.terminate()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()


def wait_workers(url: str, workers: int, timeout: float = 180) -> None:
    """Until `workers` distinct worker processes have answered (each warms up on its own)."""
    deadline, seen = time.monotonic() + timeout, set()
    while len(seen) < workers and time.monotonic() < deadline:
        try:
            seen.add(httpx.get(f"{url}/health", timeout=5).json()["worker"])  # a new connection each time
        except httpx.HTTPError:
            time.sleep(0.2)
    if len(seen) < workers:
        raise SystemExit(f"only {len(seen)} of {workers} workers came up")


REQUEST_TIMEOUT_S = 120  # a hung response counts as an error instead of stalling the run


class RawConnection:
    """POST /ask over one kept-alive HTTP/1.1 connection with asyncio streams. The load
    generator shares the server's two cores: httpx cost ~4 ms of CPU a request (0.06-0.11 of a
    core at the heuristic composer's rate), taken from the server it measures; this costs a
    fraction of that."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode("ascii") + body)
        status_line, _, headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").partition("\r\n")
        fields = dict(line.split(":", 1) for line in headers.strip().split("\r\n") if ":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        payload = await reader.readexactly(int(fields["content-length"]))  # the API never chunks a JSON response
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def client_loop(
    connection: RawConnection, offset: int, bodies: list[bytes], deadline: float, budget: list[int], results: list[dict]
) -> None:
    i = offset
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        body = bodies[i % len(bodies)]
        i += 1
        started = time.perf_counter()
        try:
            status, payload = await asyncio.wait_for(connection.post("/ask", body), REQUEST_TIMEOUT_S)
            elapsed = (time.perf_counter() - started) * 1000
            answer = json.loads(payload) if status == 200 else {}
            results.append(
                {"ms": elapsed, "status": status, "server_ms": answer.get("timings_ms", {}).get("total"), "refused": answer.get("refused")}
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, KeyError, IndexError, ValueError) as err:
            await connection.close()
            results.append({"ms": (time.perf_counter() - started) * 1000, "status": None, "error": type(err).__name__})


async def run_load(url: str, clients: int, duration: float, max_requests: int, qs: list[str]) -> tuple[list[dict], float]:
    results: list[dict] = []
    budget = [max_requests]
    address = httpx.URL(url)
    connections = [RawConnection(address.host, address.port or 80) for _ in range(clients)]
    bodies = [json.dumps({"question": q}, ensure_ascii=False).encode("utf-8") for q in qs]
    started = time.monotonic()
    deadline = started + duration
    try:
        await asyncio.gather(*(client_loop(c, n, bodies, deadline, budget, results) for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()
    return results, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def summarise(results: list[dict], elapsed: float, clients: int, duration: float, ready: dict) -> dict:
    ok = [r for r in results if r["status"] == 200]
    latencies = [r["ms"] for r in ok]
    server = [r["server_ms"] for r in ok if r.get("server_ms") is not None]
    errors = [r for r in results if r["status"] != 200]
    return {
        "clients": clients,
        "duration_s": duration,
        "elapsed_s": round(elapsed, 2),
        "requests": len(results),
        "ok": len(ok),
        "errors": len(errors),
        "error_kinds": sorted({str(r.get("error") or r["status"]) for r in errors}),
        "refused": sum(1 for r in ok if r.get("refused")),
        "requests_per_s": round(len(ok) / elapsed, 2) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies), 1) if latencies else None,
            "mean": round(statistics.fmean(latencies), 1) if latencies else None,
        },
        "server_compute_ms": {"p50": round(percentile(server, 50), 1), "p95": round(percentile(server, 95), 1)},
        "index": {"documents": ready["documents"], "chunks": ready["chunks"], "embedder": ready["embedder"]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
    }


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    index: Path, clients: int, duration: float, max_requests: int, workers: int | None, tmp: Path, cpus: set[int] | None = None
) -> dict:
    """One server over `index` (on `cpus` if given), warmed, then `clients` concurrent clients for `duration` s."""
    qs = questions()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(index, port, tmp / f"server-{port}.log", workers, cpus)
    try:
        ready = wait_ready(url, server)
        wait_workers(url, workers or 1)
        for question in qs[: 2 * (workers or 2)]:  # every worker answers once before timing
            httpx.post(f"{url}/ask", json={"question": question}, timeout=120)
        load_avg_before = [round(x, 2) for x in os.getloadavg()]
        cpu_before = client_cpu_s()
        results, elapsed = asyncio.run(run_load(url, clients, duration, max_requests, qs))
        cpu = client_cpu_s() - cpu_before
    finally:
        stop_server(server)
    summary = summarise(results, elapsed, clients, duration, ready)
    # The clients share the server's cores: what they take is not the server's to use.
    summary["client_cpu"] = {"cores": round(cpu / elapsed, 3), "ms_per_request": round(1000 * cpu / max(1, len(results)), 2)}
    summary["machine"]["load_avg_before"] = load_avg_before
    summary["questions"] = len(qs)
    summary["workers"] = workers
    summary["cpus"] = sorted(cpus) if cpus else None
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (at most 300)")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--index", type=Path, help="index directory (default: a fresh seed index in a temp folder)")
    parser.add_argument("--workers", type=int, help="server worker processes (default: the server's, one per core)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load_ask.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="load-ask-") as tmp:
        index = args.index or build_seed_index(Path(tmp) / "index")
        summary = measure(index, args.clients, min(args.duration, 300.0), args.max_requests, args.workers, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    lat = summary["latency_ms"]
    print(
        f"{summary['requests']} requests in {summary['elapsed_s']} s with {args.clients} clients: "
        f"{summary['requests_per_s']} req/s, p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, "
        f"errors {summary['errors']} (server compute p50 {summary['server_compute_ms']['p50']} ms)"
    )
    print(f"written to {args.out}")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
