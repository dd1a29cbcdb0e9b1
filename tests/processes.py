"""Helpers for tests that start real processes: a free loopback port, a Python child."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_python(code: str, *args: str, timeout: float = 300) -> int:
    """Run `code` in a fresh interpreter at the repo root (one OpenMP thread); its exit code
    (-9 when the script killed itself with SIGKILL)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, timeout=timeout).returncode
