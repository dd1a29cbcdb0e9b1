"""The evaluation report: report.json, questions.jsonl, report.md, PNG plots, and comparison.

report.json holds the metrics (no per-question rows); questions.jsonl one row per question.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "rag-eval-report/1"

# Short definitions printed in report.md and stored in report.json; docs/metrics.md has the long form.
DEFINITIONS: dict[str, str] = {
    "recall@k": "share of answerable questions with a gold passage among the top k retrieved passages "
    "(gold: a passage of the question's gold document, or one containing its evidence string)",
    "mrr@10": "mean of 1/rank of the first gold passage in the top 10 (0 if none)",
    "ndcg@10": "binary-gain nDCG@10 with one gold target per question: 1/log2(1 + rank of the first gold passage)",
    "short_em / short_f1": "official CMRC 2018 exact match / LCS-based F1 of short_answer against the gold answers "
    "(max over gold answers; a refusal or a missing short answer scores 0), over answerable questions",
    "full_em / full_f1": "the same on the full answer text with the [n] citation markers removed",
    "contains": "share of answerable questions whose full answer contains a gold answer "
    "(lower-cased, CMRC punctuation and whitespace removed; a refusal scores 0)",
    "reader_gold_em / reader_gold_f1": "the reader alone (RAG_READER's model, in the evaluating process) on each answerable "
    "question's gold passage, no retrieval: its best span scored like short_em / short_f1",
    "citation precision": "per answered answerable question: citations whose quote contains the evidence or a gold answer "
    "/ all citations; mean over answered questions",
    "citation recall": "per answered answerable question: sentences with at least one supporting citation / all sentences; mean",
    "refusal_rate": "share of unanswerable questions the service refused",
    "false_refusal_rate": "share of answerable questions the service refused",
    "supported_sentence_rate": "sentences the composer itself flags as supported / all sentences it judged, including "
    "unsupported ones it dropped from the answer text (only reported for generative answers)",
    "latency_ms": "per stage as reported by the service (timings_ms: retrieve, compose, total) and 'client': wall time of "
    "the /ask call seen by the harness (in-process: the Python call; HTTP: the request); p50/p95/p99 linear-interpolated",
    "throughput_qps": "answered questions / summed client time of the /ask calls (one sequential client)",
}

LOWER_IS_BETTER = ("false_refusal_rate", "latency_ms.", "fallback_rate")
# Latency is noisy: flag it only when it grows by more than this share (and 1 ms).
LATENCY_TOLERANCE = 0.10
QUALITY_TOLERANCE = 0.0005


@dataclass
class Report:
    dataset: dict[str, Any]
    run: dict[str, Any]
    metrics: dict[str, Any]
    recall_curve: dict[str, float | None]
    questions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "dataset": self.dataset,
            "run": self.run,
            "metrics": self.metrics,
            "recall_curve": self.recall_curve,
            "definitions": DEFINITIONS,
        }

    def write(self, out_dir: Path) -> list[Path]:
        """report.json, questions.jsonl, report.md, latency.png and (with retrieval gold) recall_at_k.png."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / "report.json", out_dir / "questions.jsonl", out_dir / "report.md"]
        written[0].write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        rows = (json.dumps(q, ensure_ascii=False) for q in self.questions)
        written[1].write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")
        written[2].write_text(markdown(self), encoding="utf-8")
        written.append(plot_latency(self, out_dir / "latency.png"))
        if any(v is not None for v in self.recall_curve.values()):
            written.append(plot_recall_curve(self, out_dir / "recall_at_k.png"))
        return written


def read_report_dir(out_dir: Path) -> Report:
    """A written report back as a Report (e.g. to re-render report.md and the plots)."""
    data = load_report(out_dir / "report.json")
    lines = (out_dir / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()]
    return Report(data["dataset"], data["run"], data["metrics"], data["recall_curve"], questions)


def load_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such report") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON report ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a JSON report (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a `rag eval` report.json (schema {SCHEMA!r} expected)")
    return data


# ---------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def headline(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    """The numbers quoted in the README, in table order."""
    r, a, c, f = metrics["retrieval"], metrics["answer"], metrics["citation"], metrics["refusal"]
    latency = metrics["latency_ms"].get("total") or metrics["latency_ms"].get("client", {})
    return [
        ("recall@1", r.get("recall@1")),
        ("recall@5", r.get("recall@5")),
        ("short-answer EM", a.get("short_em")),
        ("short-answer F1", a.get("short_f1")),
        ("answer contains gold", a.get("contains")),
        ("reader alone EM (gold passage)", a.get("reader_gold_em")),
        ("reader alone F1 (gold passage)", a.get("reader_gold_f1")),
        ("citation precision", c.get("precision")),
        ("citation recall", c.get("recall")),
        ("refusal rate (unanswerable)", f.get("refusal_rate")),
        ("false-refusal rate (answerable)", f.get("false_refusal_rate")),
        ("latency p50 ms", latency.get("p50")),
        ("latency p95 ms", latency.get("p95")),
    ]


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("metric", "value")) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {name} | {fmt(value, 1 if 'ms' in name else 3)} |" for name, value in rows]
    return lines


def markdown(report: Report) -> str:
    d, run, mt = report.dataset, report.run, report.metrics
    counts = mt["counts"]
    where = run.get("url") or run.get("index_dir", "")
    lines = [
        f"# Evaluation: {d['name']}",
        "",
        f"- dataset: `{d['path']}` ({d['format']}; {d['questions']} questions: {d['answerable']} answerable, "
        f"{d['unanswerable']} unanswerable; {d['documents'] or 'no'} documents in the file)",
        f"- run: {run['mode']} `{where}`, answer top_k {run['top_k']}, retrieval list top {run['retrieval_k']}, "
        f"started {run['started_at']}, {run['wall_s']} s",
        f"- errors: {counts['errors']}; answered (not refused) answerable questions: {counts['answered']}; "
        f"questions with retrieval gold: {counts['retrieval_scored']}",
    ]
    machine = run.get("machine") or {}
    if machine:
        lines.append(
            f"- machine: {machine.get('cpus')} CPUs, 1-min load average {machine.get('load_avg_1min_start')} at the start, "
            f"{machine.get('load_avg_1min_end')} at the end; code {run.get('git_commit') or 'unknown'}"
        )
    if run.get("embedder"):
        lines.append(f"- index: {run.get('documents')} documents, {run.get('chunks')} chunks, embedder `{run['embedder']}`")
    if d.get("skipped"):
        skipped = ", ".join(f"{s['id']} ({s['reason']})" for s in d["skipped"])
        lines.append(f"- skipped records: {skipped}")
    lines += ["", "## Headline", "", *_table(headline(mt))]
    for section in ("retrieval", "answer", "citation", "refusal"):
        lines += ["", f"## {section.capitalize()}", "", *_table(list(mt[section].items()))]
    lines += ["", "## Latency (ms)", "", "| stage | p50 | p95 | p99 | mean | max |", "|---|---:|---:|---:|---:|---:|"]
    for stage, stats in mt["latency_ms"].items():
        lines.append(f"| {stage} | " + " | ".join(fmt(stats.get(k), 1) for k in ("p50", "p95", "p99", "mean", "max")) + " |")
    lines += ["", *throughput_lines(report), ""]
    lines += ["## Recall@k", "", "| k | " + " | ".join(report.recall_curve) + " |", "|---|" + "---:|" * len(report.recall_curve)]
    lines += ["| recall | " + " | ".join(fmt(v) for v in report.recall_curve.values()) + " |", ""]
    lines += failures(report)
    lines += misses(report)
    lines += ["## Definitions", "", *[f"- **{name}**: {text}" for name, text in DEFINITIONS.items()], ""]
    return "\n".join(lines)


def throughput_lines(report: Report) -> list[str]:
    """Throughput both ways, so time spent waiting out 429s (HTTP runs) is never hidden."""
    run, mt = report.run, report.metrics
    answered = mt["counts"]["questions"] - mt["counts"]["errors"] if "questions" in mt["counts"] else None
    wall = run.get("wall_s")
    lines = [f"Throughput: {fmt(mt['throughput_qps'], 2)} questions/s counting answering time only"]
    if wall and answered is not None:
        lines[0] += f"; {fmt(answered / wall, 2)} questions/s over the run's wall clock ({wall} s, {run['mode']})"
    lines[0] += "."
    if run.get("rate_limited_retries") is not None:
        lines.append(
            f"Rate limiting: {run['rate_limited_retries']} answers were 429 and retried, "
            f"{run.get('rate_limited_wait_s', 0)} s spent waiting (not in the latency numbers)."
        )
    return lines


def failures(report: Report, limit: int = 50) -> list[str]:
    """The questions the service did not answer at all (HTTP error, rejected question): left out
    of every metric, so without this list a reader sees only the count."""
    rows = [q for q in report.questions if q.get("error")]
    if not rows:
        return []
    shown = f"first {limit} of {len(rows)}" if len(rows) > limit else str(len(rows))
    lines = [f"## Failed questions ({shown}; not scored)", "", "| id | question | error |", "|---|---|---|"]
    for q in rows[:limit]:
        lines.append("| " + " | ".join(_cell(c) for c in (q["qid"], q["question"][:80], q["error"][:200])) + " |")
    return [*lines, ""]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def misses(report: Report, limit: int = 10) -> list[str]:
    rows = [q for q in report.questions if q.get("answerable") and not q.get("error") and q.get("short_f1") == 0.0]
    if not rows:
        return []
    lines = [
        f"## Misses (first {min(limit, len(rows))} of {len(rows)} answerable questions with short-answer F1 = 0)",
        "",
        "| id | question | gold | short answer | gold rank |",
        "|---|---|---|---|---:|",
    ]
    for q in rows[:limit]:
        short = "(refused)" if q["refused"] else (q["short_answer"] or "(none)")
        cells = [q["qid"], q["question"], " / ".join(q["answers"][:3]), short, fmt(q["gold_rank"])]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*lines, ""]


# ---------------------------------------------------------------- plots


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_latency(report: Report, path: Path) -> Path:
    """Histograms of client end-to-end time and of each service stage on a log axis
    (latency is long-tailed), with the client p50 and p95 marked."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    rows = [q for q in report.questions if not q.get("error")]
    series = {"client (end to end)": [q["client_ms"] for q in rows]}
    for stage in ("retrieve", "compose", "generate"):
        values = [q["timings_ms"][stage] for q in rows if stage in q["timings_ms"]]
        if values:
            series[stage] = values
    positive = [v for values in series.values() for v in values if v > 0]
    low, high = (max(min(positive), 0.1), max(positive)) if positive else (0.1, 1.0)
    bins = np.geomspace(low, max(high, low * 10), 40)
    for label, values in series.items():
        ax.hist([max(v, low) for v in values], bins=bins, histtype="step", linewidth=1.5, label=label)
    client = report.metrics["latency_ms"].get("client", {})
    for key, style in (("p50", "-"), ("p95", "--")):
        if client.get(key) is not None:
            ax.axvline(client[key], color="black", linestyle=style, linewidth=1, label=f"client {key} {client[key]:.0f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("ms per question (log scale)")
    ax.set_ylabel("questions")
    ax.set_title(f"Latency, {report.dataset['name']} ({report.run['mode']}, {len(rows)} questions)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_recall_curve(report: Report, path: Path) -> Path:
    plt = _pyplot()
    ks = [int(k) for k, v in report.recall_curve.items() if v is not None]
    values = [report.recall_curve[str(k)] for k in ks]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(ks, values, marker="o")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ks)
    ax.set_xlabel("k (retrieved passages)")
    ax.set_ylabel("recall@k")
    ax.grid(alpha=0.3)
    ax.set_title(f"Recall@k, {report.dataset['name']} ({report.run['mode']})")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- comparison


def flatten(metrics: dict[str, Any]) -> dict[str, float]:
    """Comparable numbers: section.metric for quality, latency_ms.stage.pXX, throughput_qps."""
    flat: dict[str, float] = {}
    for section in ("retrieval", "answer", "citation", "refusal"):
        for name, value in metrics.get(section, {}).items():
            if isinstance(value, int | float):
                flat[f"{section}.{name}"] = float(value)
    for stage, stats in metrics.get("latency_ms", {}).items():
        for p in ("p50", "p95", "p99"):
            if isinstance(stats.get(p), int | float):
                flat[f"latency_ms.{stage}.{p}"] = float(stats[p])
    if isinstance(metrics.get("throughput_qps"), int | float):
        flat["throughput_qps"] = float(metrics["throughput_qps"])
    return flat


def verdict(name: str, old: float, new: float) -> str:
    """ "WORSE", "better" or "" (within tolerance) for a change of one metric."""
    lower_better = name.startswith(LOWER_IS_BETTER) or any(name.endswith(s) for s in LOWER_IS_BETTER)
    gain = (old - new) if lower_better else (new - old)
    if name.startswith("latency_ms.") or name == "throughput_qps":
        tolerance = max(LATENCY_TOLERANCE * abs(old), 1.0 if name.startswith("latency_ms.") else 0.0)
    else:
        tolerance = QUALITY_TOLERANCE
    if math.isclose(gain, 0.0) or abs(gain) <= tolerance:
        return ""
    return "better" if gain > 0 else "WORSE"


def compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, int]:
    """A table of old, new and delta per metric, with worse ones flagged; and how many are worse."""
    lines = []
    if old["dataset"].get("name") != new["dataset"].get("name") or old["dataset"].get("questions") != new["dataset"].get("questions"):
        lines.append(
            f"warning: different runs: {old['dataset'].get('name')} ({old['dataset'].get('questions')} questions) vs "
            f"{new['dataset'].get('name')} ({new['dataset'].get('questions')} questions)"
        )
    before, after = flatten(old["metrics"]), flatten(new["metrics"])
    names = [n for n in after if n in before]
    width = max((len(n) for n in names), default=10)
    lines.append(f"{'metric':<{width}}  {'old':>9}  {'new':>9}  {'delta':>9}")
    worse = 0
    for name in names:
        mark = verdict(name, before[name], after[name])
        worse += mark == "WORSE"
        digits = 1 if name.startswith("latency_ms.") or name == "throughput_qps" else 4
        delta = after[name] - before[name]
        flag = f"  <-- {mark}" if mark == "WORSE" else (f"  ({mark})" if mark else "")
        lines.append(f"{name:<{width}}  {before[name]:>9.{digits}f}  {after[name]:>9.{digits}f}  {delta:>+9.{digits}f}{flag}")
    lines.append(f"{worse} metric(s) worse" if worse else "no metric worse")
    return "\n".join(lines), worse


# ---------------------------------------------------------------- README table


def headline_table(reports: list[tuple[str, dict[str, Any]]]) -> str:
    """One markdown row per report.json (label, report): the README's headline numbers."""
    names = [name for name, _ in headline(reports[0][1]["metrics"])] if reports else []
    lines = ["| run | questions | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for label, report in reports:
        cells = [fmt(value, 0 if "ms" in name else 3) for name, value in headline(report["metrics"])]
        lines.append(f"| {label} | {report['metrics']['counts']['questions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
