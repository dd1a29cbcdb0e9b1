"""Which precision to ship the reader in: fp32 (reference), fp16 weights (what ships), and
onnxruntime dynamic int8 (MatMul weights int8 per channel, activations quantised at run time).

Each variant is exported from the same training checkpoint and scored alone on CMRC 2018
trial questions with their gold passage (official EM/F1), then timed on one batch of four
100-token windows (the serving path's shape), median of 20 runs, one thread.

    python benchmarks/reader_precision.py [--questions 300] [--out benchmarks/results/reader_precision.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from rag.eval.metrics import cmrc_em, cmrc_f1  # noqa: E402
from rag.reader.data import load_squad  # noqa: E402
from rag.reader.onnx_reader import OnnxReader  # noqa: E402

TRAINING = ROOT / "benchmarks" / "results" / "reader_training"
CMRC = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_trial.json"


def variants(work: Path) -> dict[str, Path]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rag.reader.export import export

    recipe = json.loads((TRAINING / "recipe.json").read_text())
    state = {k: v.float().numpy() for k, v in torch.load(TRAINING / "trainable.pt").items()}
    out = {}
    for name, precision in (("fp32", "fp32-inline"), ("fp16", "fp16")):
        out[name] = work / name
        export(state, recipe["freeze_layers"], out[name], precision=precision)
    int8 = work / "int8"
    int8.mkdir()
    quantize_dynamic(out["fp32"] / "reader.onnx", int8 / "reader.onnx", weight_type=QuantType.QInt8, per_channel=True)
    manifest = json.loads((out["fp32"] / "manifest.json").read_text())
    manifest["onnx"]["weights"] = "int8 dynamic (MatMul weights per channel)"
    from rag.reader.layout import sha256

    manifest["onnx"]["sha256"] = sha256(int8 / "reader.onnx")
    manifest["onnx"]["bytes"] = (int8 / "reader.onnx").stat().st_size
    (int8 / "manifest.json").write_text(json.dumps(manifest))
    out["int8"] = int8
    return out


def score(reader: OnnxReader, examples) -> dict[str, float]:  # type: ignore[no-untyped-def]
    ems, f1s = [], []
    for ex in examples:
        spans = reader.read(ex.question, [ex.context])
        pred = ex.context[spans[0].start : spans[0].end] if spans else ""
        ems.append(cmrc_em(pred, ex.answers))
        f1s.append(cmrc_f1(pred, ex.answers))
    return {"em": round(float(np.mean(ems)), 4), "f1": round(float(np.mean(f1s)), 4)}


def latency_ms(reader: OnnxReader) -> float:
    ids = np.random.default_rng(0).integers(5, 30000, (4, 100))
    mask = np.ones_like(ids)
    reader.logits(ids, mask)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        reader.logits(ids, mask)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reader_precision.json")
    args = ap.parse_args()
    examples = random.Random(1).sample(load_squad(CMRC), args.questions)
    work = Path(tempfile.mkdtemp(prefix="reader-precision-"))
    result = {"questions": args.questions, "variants": {}}
    for name, folder in variants(work).items():
        reader = OnnxReader(folder, threads=1)
        size = (folder / "reader.onnx").stat().st_size
        result["variants"][name] = {"file_mb": round(size / 1e6, 1), "latency_ms_4x100_tokens": latency_ms(reader), **score(reader, examples)}
        print(name, result["variants"][name], flush=True)
    fp32 = result["variants"]["fp32"]["f1"]
    result["f1_drop_vs_fp32"] = {k: round(fp32 - v["f1"], 4) for k, v in result["variants"].items()}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["f1_drop_vs_fp32"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
