"""Parse time of the page parser (rag.ingest.documents_from_text) against input size:
the seed page repeated 1×, 10× and 100×, and the many-short-headed-paragraphs page that
used to take minutes (issue 10: 500 paragraphs 133 s, 1,000 paragraphs 319 s).

    python benchmarks/ingest_scaling.py      # prints a table, writes benchmarks/results/ingest_scaling.json

Linear growth shows as a flat "ms per KB" column. Each figure is the median of 3 runs
(one for inputs over 1 MB), after one warm-up parse (jieba's dictionary loads once per
process); the seam cache is cleared before each run, so the repeated copies of the seed
page cost what distinct articles would.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.ingest import _continues_word, documents_from_text  # noqa: E402

SEED = ROOT / "seeds" / "000_6297df77ee962a0f.txt"
OUT = ROOT / "benchmarks" / "results" / "ingest_scaling.json"


def headed_paragraphs(n: int) -> str:
    return "\n\n\n".join(f"标题{i}\n正文第{i}段，继续" for i in range(n))


def parse_ms(text: str, runs: int = 3) -> tuple[float, int]:
    times, articles = [], 0
    for _ in range(runs):
        _continues_word.cache_clear()  # repeated copies must not ride on the seam cache
        started = time.perf_counter()
        articles = len(documents_from_text(text, "bench.txt"))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), articles


def main() -> int:
    seed = SEED.read_text(encoding="utf-8")
    documents_from_text(seed, "warmup.txt")
    inputs = {f"seed page ×{k}": "\n\n\n".join([seed] * k) for k in (1, 10, 100)}
    inputs |= {f"headed paragraphs ×{n}": headed_paragraphs(n) for n in (400, 1000, 4000)}
    rows = []
    for name, text in inputs.items():
        ms, articles = parse_ms(text, runs=1 if len(text) > 1_000_000 else 3)
        kb = len(text.encode("utf-8")) / 1024
        rows.append({"input": name, "kb": round(kb, 1), "articles": articles, "parse_ms": round(ms, 1), "ms_per_kb": round(ms / kb, 3)})
        print(f"{name:26} {kb:9.1f} KB {articles:6} articles {ms:10.1f} ms {ms / kb:8.3f} ms/KB", flush=True)
    base = rows[0]["ms_per_kb"]
    for row in rows[:3]:
        row["ms_per_kb_vs_1x"] = round(row["ms_per_kb"] / base, 2)
    OUT.write_text(json.dumps({"rows": rows}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
