"""Reader on vs off, side by side: warm /ask latency with one client, the serving process's
memory, and `rag ask` from a cold process.

For each setting (RAG_READER=onnx, RAG_READER=none) a real server (`python -m api.server`,
loopback, rate limits off, one worker process) is started over the same seed index; after warm-up, one client
asks the seed dev questions `--rounds` times in turn. Memory is the server's VmRSS after the
run and its peak (VmHWM) from /proc. Cold start: `rag ask QUESTION --index DIR` run
`--cold-runs` times per setting, median wall and CPU (user + sys) seconds.

    python benchmarks/reader_latency.py [--rounds 5] [--cold-runs 5] [--out benchmarks/results/reader_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.load_ask import build_seed_index, free_port, questions, start_server, wait_ready  # noqa: E402
from rag.eval.metrics import percentiles  # noqa: E402

COLD_QUESTION = "八宿县然乌镇然乌村的党支部书记是谁？"


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def warm_latency(index: Path, reader: str, rounds: int, log_dir: Path) -> dict:
    os.environ["RAG_READER"] = reader
    port = free_port()
    # One worker: its pid is the serving process whose memory is read (with --workers N
    # the pid started here would be the supervisor's).
    server = start_server(index, port, log_dir / f"server-{reader}.log", workers=1)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(url, server)
        asked = questions()
        with httpx.Client(timeout=60) as client:
            for q in asked:  # warm-up: every question once
                client.post(f"{url}/ask", json={"question": q}).raise_for_status()
            times, server_ms = [], []
            for _ in range(rounds):
                for q in asked:
                    started = time.perf_counter()
                    response = client.post(f"{url}/ask", json={"question": q})
                    times.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                    server_ms.append(response.json()["timings_ms"]["total"])
        mem = memory_kb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "reader": ready.get("reader"),
        "requests": len(times),
        "client_ms": {k: round(v, 1) for k, v in percentiles(times, (50, 95)).items()} | {"max": round(max(times), 1)},
        "server_total_ms": {k: round(v, 1) for k, v in percentiles(server_ms, (50, 95)).items()},
        "rss_mb": round(mem["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(mem["VmHWM"] / 1024, 1),
    }


def cold_ask(index: Path, reader: str, runs: int) -> dict:
    rag = Path(sys.executable).with_name("rag")
    env = {**os.environ, "RAG_READER": reader}
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        out = subprocess.run([str(rag), "--index", str(index), "ask", COLD_QUESTION], env=env, capture_output=True, text=True, timeout=300)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if out.returncode != 0:
            raise SystemExit(f"rag ask failed: {out.stderr}")
    return {"runs": runs, "wall_s_median": round(statistics.median(walls), 2), "cpu_s_median": round(statistics.median(cpus), 2), "last_output": out.stdout.splitlines()[:2]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--index", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reader_latency.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reader-latency-"))
    index = args.index or build_seed_index(work / "index")
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}, "settings": {}}
    for reader in ("onnx", "none"):
        result["settings"][reader] = {"warm_ask": warm_latency(index, reader, args.rounds, work), "cold_rag_ask": cold_ask(index, reader, args.cold_runs)}
        print(reader, json.dumps(result["settings"][reader], ensure_ascii=False), flush=True)
    on, off = result["settings"]["onnx"], result["settings"]["none"]
    result["reader_cost"] = {
        "warm_p50_ms_added": round(on["warm_ask"]["client_ms"]["p50"] - off["warm_ask"]["client_ms"]["p50"], 1),
        "rss_mb_added": round(on["warm_ask"]["rss_mb"] - off["warm_ask"]["rss_mb"], 1),
        "cold_wall_s_added": round(on["cold_rag_ask"]["wall_s_median"] - off["cold_rag_ask"]["wall_s_median"], 2),
    }
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["reader_cost"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
