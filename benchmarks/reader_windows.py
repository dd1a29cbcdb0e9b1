"""How the reader composer reads its windows: accuracy against the work it does.

The composer reads the best candidate sentences with a neighbour each side, merged where
they touch; a merged window longer than `max_length` is cut run_qa-style into windows whose
starts are `stride` tokens apart (half-length strides read part of a long window twice).
Windows are read best candidate first and reading may stop once a span is probable enough
(`stop_reading_at`). Each window's spans do not depend on the others, so one pass that reads
every window gives every stopping point exactly. On the held-out DRCD questions (simplified;
the corpus of benchmarks/fit_reader_combiner.py, the shipped span combination, the same
retrieved passages for every configuration): short-answer EM/F1 of the best span, refusals
at the shipped threshold, windows and tokens read per question, reading time. CMRC 2018
trial is not touched here.

    python benchmarks/reader_windows.py [--limit 0] [--index DIR] [--out benchmarks/results/reader_windows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fit_reader_combiner import holdout_corpus  # noqa: E402
from index.store import Filters  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.eval.metrics import cmrc_em, cmrc_f1  # noqa: E402
from rag.reader.composer import Combiner, ReaderComposer, stops_reading  # noqa: E402
from rag.service import RagService  # noqa: E402

CONFIGS = {"192 tokens, stride 96": (192, 96), "192 tokens, no overlap": (192, 192), "256 tokens, no overlap": (256, 256)}
STOP_AT = (None, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35)


class CountingReader:
    """The service's reader, counting the windows and tokens of every session run."""

    def __init__(self, reader) -> None:  # type: ignore[no-untyped-def]
        self.reader, self.windows, self.tokens = reader, 0, 0
        original = reader.logits

        def logits(ids, mask):  # type: ignore[no-untyped-def]
            self.windows += ids.shape[0]
            self.tokens += int(mask.sum())
            return original(ids, mask)

        reader.logits = logits

    def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.reader.read(*args, **kwargs)


def read_every_window(composer: ReaderComposer, counting: CountingReader, question, vector, hits) -> list[dict]:  # type: ignore[no-untyped-def]
    """Per window, in reading order: its best span, the tokens read and the seconds it took."""
    out = []
    started, tokens = time.perf_counter(), counting.tokens
    ranked = composer.rank_sentences(question, vector, hits)
    for spans in composer.read_windows(question, ranked):  # each window is read as the loop asks for it
        best = spans[0] if spans else None
        now = time.perf_counter()
        out.append(
            {
                "probability": best.probability if best else 0.0,
                "text": best.text if best else "",
                "tokens": counting.tokens - tokens,
                "s": now - started,
            }
        )
        started, tokens = now, counting.tokens
    return out


def stopped(windows: list[dict], stop_at: float | None) -> list[dict]:
    for n, window in enumerate(windows, 1):
        if stops_reading(window["probability"], stop_at):
            return windows[:n]
    return windows


def summary(held: list, read: list[list[dict]], stop_at: float | None, threshold: float) -> dict:
    ems, f1s, windows, tokens, seconds, refused = [], [], [], [], [], 0
    for ex, every in zip(held, read, strict=True):
        done = stopped(every, stop_at)
        best = max(done, key=lambda w: w["probability"], default=None)
        answered = best is not None and best["probability"] >= threshold
        refused += not answered
        prediction = best["text"] if answered else ""
        ems.append(cmrc_em(prediction, ex.answers))
        f1s.append(cmrc_f1(prediction, ex.answers))
        windows.append(len(done))
        tokens.append(sum(w["tokens"] for w in done))
        seconds.append(sum(w["s"] for w in done))
    return {
        "em": round(statistics.fmean(ems), 4),
        "f1": round(statistics.fmean(f1s), 4),
        "refused": refused,
        "windows_per_question": round(statistics.fmean(windows), 2),
        "tokens_per_question": round(statistics.fmean(tokens), 1),
        "read_ms_p50": round(1000 * statistics.median(seconds), 1),
        "read_ms_mean": round(1000 * statistics.fmean(seconds), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, help="reuse a DRCD index directory")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--distractors", type=int, default=400)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reader_windows.json")
    args = ap.parse_args()

    held, docs = holdout_corpus(args.distractors)
    held = held[: args.limit] if args.limit else held
    service = RagService(Settings(index_dir=args.index or Path(tempfile.mkdtemp(prefix="drcd-index-"))))
    service.add_documents(list(docs.values()), progress=True)
    assert service.reader is not None, "no reader model: export one first"
    counting = CountingReader(service.reader)
    retrieved = [service._retrieve(ex.question, None, Filters())[:3] for ex in held]

    threshold = Combiner.load().threshold
    results = {}
    for name, (max_length, stride) in CONFIGS.items():
        composer = ReaderComposer(counting, service.heuristic_composer(), max_length=max_length, stride=stride, stop_reading_at=None)  # type: ignore[arg-type]
        read = [read_every_window(composer, counting, question, vector, hits) for question, vector, hits in retrieved]
        for stop_at in STOP_AT if stride == 96 else (None,):
            key = f"{name}, stop at {stop_at}" if stop_at else f"{name}, every window"
            results[key] = summary(held, read, stop_at, threshold) | {
                "max_length": max_length,
                "stride": stride,
                "stop_reading_at": stop_at,
            }
            print(key, json.dumps(results[key]), flush=True)
    report = {
        "questions": len(held),
        "paragraphs": len(docs),
        "reader_threads": service.settings.reader_threads,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "configs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
