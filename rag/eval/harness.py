"""Run every question of a dataset through an answerer and score it.

An answerer is the service seen from outside: in-process (`InProcessAnswerer` over a
RagService) or over HTTP (`HttpAnswerer`, POST {url}/ask). Both return answers in the
JSON shape of `Answer.to_dict()`, so the scoring below cannot tell them apart and the two
modes must give the same quality numbers on the same index.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.eval import metrics as m
from rag.eval.datasets import Dataset, EvalQuestion, load_dataset
from rag.eval.report import Report

if TYPE_CHECKING:
    import httpx

    from rag.reader import Reader
    from rag.service import RagService

RETRIEVAL_K = 10
# Citation markers the composers put after sentences: [1], [1][2], [1, 2].
CITATION_MARKER = re.compile(r"\[\d+(?:\s*[,，、]\s*\d+)*\]")


class EvalError(ValueError):
    """The run cannot go on (server unreachable, broken response); one line for the user."""


class QuestionFailed(Exception):
    """The service rejected one question (HTTP 4xx/5xx, invalid question): recorded, not fatal."""


class Answerer(Protocol):
    mode: str

    def ask(self, question: str, top_k: int) -> dict[str, Any]:
        """The answer in the JSON shape of `Answer.to_dict()`."""
        ...

    def ranked_passages(self, question: str, k: int) -> list[dict[str, Any]]:
        """The top `k` retrieved passages, best first, each with doc_id, chunk_id and text."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def indexed_doc_ids(self) -> set[str] | None:
        """Ids of the indexed documents, or None when the answerer cannot tell."""
        ...


# ---------------------------------------------------------------- answerers


class InProcessAnswerer:
    """Calls RagService.ask / RagService.search directly."""

    mode = "in-process"

    def __init__(self, service: RagService) -> None:
        self.service = service

    def ask(self, question: str, top_k: int) -> dict[str, Any]:
        from rag.service import QuestionError

        try:
            return self.service.ask(question, top_k).to_dict()
        except QuestionError as err:
            raise QuestionFailed(str(err)) from None

    def ranked_passages(self, question: str, k: int) -> list[dict[str, Any]]:
        from rag.service import QuestionError

        try:
            return [hit.to_dict() for hit in self.service.search(question, k)]
        except QuestionError as err:
            raise QuestionFailed(str(err)) from None

    def indexed_doc_ids(self) -> set[str] | None:
        return {d.doc_id for d in self.service.store.documents()}

    def describe(self) -> dict[str, Any]:
        s = self.service.settings
        store = self.service.store
        return {
            "mode": self.mode,
            "index_dir": str(s.index_dir),
            "embedder": self.service.embedder.identity,
            "documents": len(store.documents()),
            "chunks": store.chunk_count(),
            "settings": {"fetch_k": s.fetch_k, "chunk_chars": s.chunk_chars, "chunk_overlap": s.chunk_overlap,
                         "refusal_threshold": s.refusal_threshold, "llm": bool(getattr(s, "llm_base_url", None))},
        }  # fmt: skip


class HttpAnswerer:
    """POST {url}/ask with {"question", "top_k"}; the ranked list for retrieval metrics comes
    from POST {url}/search when the server has it, else from /ask with top_k = k."""

    mode = "http"

    def __init__(
        self,
        url: str,
        timeout_s: float = 120.0,
        api_key: str | None = None,
        client: httpx.Client | None = None,
        max_rate_limit_retries: int = 20,
    ) -> None:
        import httpx

        if not re.match(r"^https?://[^/\s]+", url):
            raise EvalError(f"--url {url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)
        self.max_rate_limit_retries = max_rate_limit_retries
        self.rate_limited = 0  # 429 answers waited out
        self.waited_ms = 0.0  # time spent waiting them out, kept out of the latency numbers
        self._search_available: bool | None = None

    def close(self) -> None:
        self.client.close()

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        response = self._send(path, payload)
        for _ in range(self.max_rate_limit_retries):
            if response.status_code != 429:
                break
            self._wait(response)
            response = self._send(path, payload)
        if response.status_code == 401 or response.status_code == 403:
            raise EvalError(f"{self.url}{path}: HTTP {response.status_code} ({_error_message(response)}): pass --api-key")
        if response.status_code >= 400:
            raise QuestionFailed(f"HTTP {response.status_code} from {path}: {_error_message(response)}")
        try:
            return response.json()
        except ValueError:
            raise EvalError(f"{self.url}{path} answered HTTP {response.status_code} with a body that is not JSON") from None

    def _send(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        import httpx

        try:
            return self.client.post(path, json=payload)
        except httpx.TransportError as err:
            raise EvalError(f"cannot reach {self.url}{path}: {err or type(err).__name__}") from None

    def _wait(self, response: httpx.Response) -> None:
        """Honour Retry-After (seconds, capped at 30) of a 429; benchmark servers should disable rate limits."""
        try:
            delay = min(max(float(response.headers.get("retry-after", "1")), 0.0), 30.0)
        except ValueError:
            delay = 1.0
        self.rate_limited += 1
        self.waited_ms += delay * 1000
        time.sleep(delay)

    def ask(self, question: str, top_k: int) -> dict[str, Any]:
        data = self._post("/ask", {"question": question, "top_k": top_k})
        missing = [k for k in ("answer", "refused", "citations", "passages") if not isinstance(data, dict) or k not in data]
        if missing:
            raise EvalError(f"{self.url}/ask: the response lacks {', '.join(repr(k) for k in missing)}: is this the RAG service?")
        return data

    def ranked_passages(self, question: str, k: int) -> list[dict[str, Any]]:
        if self._search_available is None:
            # Probe once: a server without a usable /search is asked /ask with top_k = k instead.
            try:
                passages = _passages_of(self._post("/search", {"question": question, "top_k": k}))
            except QuestionFailed:
                passages = None
            self._search_available = passages is not None
            if passages is not None:
                return passages
        if self._search_available:
            passages = _passages_of(self._post("/search", {"question": question, "top_k": k}))
            if passages is None:
                raise EvalError(f"{self.url}/search: the response is not a list of passages")
            return passages
        return list(self.ask(question, k)["passages"])

    def indexed_doc_ids(self) -> set[str] | None:
        """Document ids from GET /documents (paged), or None when the server does not list them."""
        import httpx

        ids: set[str] = set()
        while True:
            try:
                response = self.client.get("/documents", params={"offset": len(ids), "limit": 1000})
            except httpx.TransportError as err:
                raise EvalError(f"cannot reach {self.url}/documents: {err or type(err).__name__}") from None
            try:
                page = response.json() if response.status_code == 200 else None
            except ValueError:
                page = None
            if not isinstance(page, dict) or not isinstance(page.get("documents"), list):
                return None
            ids |= {str(d.get("doc_id")) for d in page["documents"] if isinstance(d, dict)}
            if not page["documents"] or len(ids) >= int(page.get("total", 0)):
                return ids

    def describe(self) -> dict[str, Any]:
        ranked_from = "/search" if self._search_available else "/ask"
        info = {
            "mode": self.mode,
            "url": self.url,
            "ranked_list_from": ranked_from,
            "rate_limited_retries": self.rate_limited,
            "rate_limited_wait_s": round(self.waited_ms / 1000, 1),
        }
        return {**info, **self._server_index()}

    def _server_index(self) -> dict[str, Any]:
        """documents, chunks and embedder from GET /ready, when the server reports them."""
        import httpx

        try:
            data = self.client.get("/ready").json()
        except (httpx.HTTPError, ValueError):
            return {}
        return {k: data[k] for k in ("documents", "chunks", "embedder", "index_kind") if isinstance(data, dict) and k in data}


def _passages_of(data: Any) -> list[dict[str, Any]] | None:
    """A /search response: a list of hits, or an object holding one under a usual name."""
    if isinstance(data, dict):
        data = next((data[k] for k in ("hits", "passages", "results") if isinstance(data.get(k), list)), None)
    if isinstance(data, list) and all(isinstance(p, dict) and "doc_id" in p for p in data):
        return data
    return None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if key in body:
                return str(body[key])[:200]
    return str(body)[:200]


# ---------------------------------------------------------------- one question


@dataclass
class QuestionResult:
    qid: str
    question: str
    answerable: bool
    answers: list[str]
    error: str | None = None
    refused: bool | None = None
    answer: str = ""
    short_answer: str | None = None
    # Retrieval: relevance of each passage of the ranked list (None: no gold for this question).
    relevant: list[bool] | None = None
    gold_rank: int | None = None  # 1-based rank of the first relevant passage
    ranked_doc_ids: list[str] = field(default_factory=list)
    short_em: float | None = None
    short_f1: float | None = None
    full_em: float | None = None
    full_f1: float | None = None
    contains: float | None = None
    citation_precision: float | None = None
    citation_recall: float | None = None
    citations: int = 0
    sentences: int = 0
    supported_sentences: int | None = None  # sentences the composer flags as supported
    flagged_sentences: int = 0  # sentences with a verdict, including those dropped from the answer text
    generative_sentences: int = 0  # sentences whose rule is not "extractive"
    fallback: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    client_ms: float = 0.0
    ranking_mismatch: bool = False  # /ask passages are not a prefix of the ranked list
    # The reader alone on the gold passage (no retrieval): where answer errors come from.
    reader_answer: str | None = None
    reader_em: float | None = None
    reader_f1: float | None = None


def strip_markers(text: str) -> str:
    return CITATION_MARKER.sub("", text)


def cited_sentences(answer: dict[str, Any]) -> list[m.CitedSentence]:
    """The answer's sentences with the quotes they cite; from `sentences` when the answer has
    them, else by splitting the answer text after each run of [n] markers."""
    quotes = {c.get("n"): str(c.get("quote", "")) for c in answer.get("citations") or []}
    text = answer.get("answer") or ""
    if answer.get("sentences"):
        # Only sentences the reader sees: the generative composer also lists the unsupported
        # sentences it dropped from the answer text. A marker pointing at no citation counts
        # as a citation without support.
        shown = strip_markers(text)
        return [
            m.CitedSentence(s.get("text", ""), [quotes.get(n, "") for n in s.get("citations") or []])
            for s in answer["sentences"]
            if strip_markers(s.get("text", "")).strip() in shown
        ]
    sentences: list[m.CitedSentence] = []
    pos = 0
    for group in re.finditer(rf"(?:{CITATION_MARKER.pattern})+", text):
        numbers = [int(n) for n in re.findall(r"\d+", group.group())]
        sentences.append(m.CitedSentence(text[pos : group.start()].strip(), [quotes.get(n, "") for n in numbers]))
        pos = group.end()
    if text[pos:].strip():
        sentences.append(m.CitedSentence(text[pos:].strip(), []))
    return sentences


def relevance(question: EvalQuestion) -> Callable[[dict[str, Any]], bool] | None:
    """Gold for retrieval: a passage of a gold document, or one whose text contains the
    evidence string (normalised as in `answer_contains`); None when the question has neither."""
    if not question.answerable or not (question.gold_doc_ids or question.evidence):
        return None
    evidence = [question.evidence] if question.evidence else []

    def is_relevant(passage: dict[str, Any]) -> bool:
        if passage.get("doc_id") in question.gold_doc_ids:
            return True
        return bool(evidence) and m.answer_contains(str(passage.get("text", "")), evidence)

    return is_relevant


def score_answer(result: QuestionResult, question: EvalQuestion, answer: dict[str, Any]) -> None:
    result.refused = bool(answer.get("refused"))
    result.answer = str(answer.get("answer") or "")
    result.short_answer = answer.get("short_answer")
    result.timings_ms = {k: float(v) for k, v in (answer.get("timings_ms") or {}).items() if isinstance(v, int | float)}
    result.fallback = answer.get("fallback")
    sentences = cited_sentences(answer) if not result.refused else []
    result.citations = sum(len(s.quotes) for s in sentences)
    result.sentences = len(sentences)
    flagged = [s for s in answer.get("sentences") or [] if "supported" in s] if not result.refused else []
    if flagged:
        result.supported_sentences = sum(bool(s["supported"]) for s in flagged)
        result.flagged_sentences = len(flagged)
        result.generative_sentences = sum(s.get("rule", "extractive") != "extractive" for s in flagged)
    if not question.answerable:
        return
    gold = list(question.answers)
    short = "" if result.refused else (result.short_answer or "")
    full = "" if result.refused else strip_markers(result.answer)
    result.short_em, result.short_f1 = m.cmrc_em(short, gold), m.cmrc_f1(short, gold)
    result.full_em, result.full_f1 = m.cmrc_em(full, gold), m.cmrc_f1(full, gold)
    result.contains = float(m.answer_contains(full, gold))
    if not result.refused:
        evidence = question.evidence or ""
        result.citation_precision = m.citation_precision(sentences, evidence, gold)
        result.citation_recall = m.citation_recall(sentences, evidence, gold)


def score_ranking(result: QuestionResult, question: EvalQuestion, ranked: list[dict[str, Any]]) -> None:
    result.ranked_doc_ids = [str(p.get("doc_id", "")) for p in ranked]
    is_relevant = relevance(question)
    if is_relevant is None:
        return
    result.relevant = [is_relevant(p) for p in ranked]
    result.gold_rank = next((i for i, r in enumerate(result.relevant, 1) if r), None)


def run_question(question: EvalQuestion, answerer: Answerer, top_k: int, retrieval_k: int) -> QuestionResult:
    result = QuestionResult(question.qid, question.question, question.answerable, list(question.answers))
    try:
        waited_before = getattr(answerer, "waited_ms", 0.0)
        started = time.perf_counter()
        answer = answerer.ask(question.question, top_k)
        elapsed_ms = (time.perf_counter() - started) * 1000 - (getattr(answerer, "waited_ms", 0.0) - waited_before)
        result.client_ms = round(elapsed_ms, 2)
        passages = list(answer.get("passages") or [])
        # The composer must see top_k passages, so a deeper ranked list is a separate call.
        ranked = passages[:retrieval_k] if top_k >= retrieval_k else answerer.ranked_passages(question.question, retrieval_k)
    except QuestionFailed as err:
        result.error = str(err)
        return result
    score_answer(result, question, answer)
    score_ranking(result, question, ranked)
    result.ranking_mismatch = [p.get("chunk_id") for p in passages] != [p.get("chunk_id") for p in ranked[: len(passages)]]
    return result


# ---------------------------------------------------------------- the run


def evaluate(
    dataset: Dataset | str | Path,
    answerer: Answerer,
    *,
    top_k: int = 5,
    retrieval_k: int = RETRIEVAL_K,
    progress: bool = False,
    warmup: int = 1,
    reader: Reader | None = None,
) -> Report:
    """Ask every question of `dataset` (a Dataset or a dataset file; answers with `top_k` passages; retrieval metrics on
    the top `retrieval_k`) and return the scored Report.

    The first `warmup` questions are asked once before the timed run and not scored, so
    loading the embedder and tokenizer does not land in the latency percentiles."""
    from tqdm import tqdm

    if not isinstance(dataset, Dataset):
        dataset = load_dataset(Path(dataset))
    for question in dataset.questions[:warmup]:
        with contextlib.suppress(QuestionFailed):
            answerer.ask(question.question, top_k)
    results: list[QuestionResult] = []
    load_start = _load_average()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    bar = tqdm(dataset.questions, desc=f"eval {dataset.name}", unit="q", disable=not progress, dynamic_ncols=True)
    for question in bar:
        results.append(run_question(question, answerer, top_k, retrieval_k))
        if progress and len(results) % 10 == 0:
            bar.set_postfix_str(running_summary(results))
    bar.close()
    wall_s = time.perf_counter() - started
    if reader is not None:
        read_gold_passages(dataset, results, reader, progress)
    load_end = _load_average()
    failed = [r for r in results if r.error]
    if len(failed) == len(results):
        raise EvalError(f"all {len(results)} questions failed; the first: {failed[0].error}")
    run = {
        **answerer.describe(),
        "top_k": top_k,
        "retrieval_k": retrieval_k,
        "warmup_questions": min(warmup, len(dataset.questions)),
        "started_at": started_at,
        "wall_s": round(wall_s, 2),
        "ranking_mismatches": sum(r.ranking_mismatch for r in results),
        # Latency depends on what else the machine runs: keep the evidence with the numbers.
        "machine": {"cpus": os.cpu_count(), "load_avg_1min_start": load_start, "load_avg_1min_end": load_end},
        "git_commit": _git_commit(),
    }
    return Report(
        dataset=describe_dataset(dataset),
        run=run,
        metrics=summarize(results, retrieval_k),
        recall_curve=recall_curve(results, retrieval_k),
        questions=[asdict(r) for r in results],
    )


def read_gold_passages(dataset: Dataset, results: list[QuestionResult], reader: Reader, progress: bool = False) -> None:
    """Score the reader alone: each answerable question read against its gold passage."""
    from tqdm import tqdm

    from rag.reader.composer import reader_answer

    texts = {d.doc_id: d.text for d in dataset.documents}
    by_id = {q.qid: q for q in dataset.questions}
    todo = [r for r in results if r.answerable and not r.error and by_id[r.qid].gold_doc_ids]
    for result in tqdm(todo, desc="reader on gold passages", unit="q", disable=not progress, dynamic_ncols=True):
        contexts = [texts[d] for d in sorted(by_id[result.qid].gold_doc_ids) if d in texts]
        if not contexts:
            continue
        result.reader_answer = reader_answer(reader, result.question, contexts) or ""
        result.reader_em = m.cmrc_em(result.reader_answer, result.answers)
        result.reader_f1 = m.cmrc_f1(result.reader_answer, result.answers)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _git_commit() -> str | None:
    """The project's commit (with "-dirty" for uncommitted changes), or None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def running_summary(results: list[QuestionResult]) -> str:
    ranked = [r.gold_rank for r in results if r.relevant is not None]
    f1 = [r.short_f1 for r in results if r.short_f1 is not None]
    parts = []
    if ranked:
        parts.append(f"R@5 {sum(1 for g in ranked if g and g <= 5) / len(ranked):.2f}")
    if f1:
        parts.append(f"F1 {sum(f1) / len(f1):.2f}")
    return " ".join(parts)


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    questions = dataset.questions
    return {
        "name": dataset.name,
        "path": str(dataset.path),
        "format": dataset.format,
        "questions": len(questions),
        "answerable": sum(q.answerable for q in questions),
        "unanswerable": sum(not q.answerable for q in questions),
        "documents": len(dataset.documents),
        "skipped": [{"id": qid, "reason": reason} for qid, reason in dataset.skipped],
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def _labels(result: QuestionResult) -> list[str]:
    # One gold target per question: every relevant passage carries the same label, so
    # recall@k is a hit rate and nDCG's ideal DCG is 1.
    return ["gold" if r else f"other{i}" for i, r in enumerate(result.relevant or [])]


def retrieval_metrics(results: list[QuestionResult], k: int) -> dict[str, float | None]:
    scored = [r for r in results if r.relevant is not None]
    out: dict[str, float | None] = {f"recall@{n}": _mean([m.recall_at_k(_labels(r), {"gold"}, n) for r in scored]) for n in (1, 5, k)}
    out[f"mrr@{k}"] = _mean([m.mrr_at_k(_labels(r), {"gold"}, k) for r in scored])
    out[f"ndcg@{k}"] = _mean([m.ndcg_at_k(_labels(r), {"gold"}, k) for r in scored])
    return out


def recall_curve(results: list[QuestionResult], k: int) -> dict[str, float | None]:
    scored = [r for r in results if r.relevant is not None]
    return {str(n): _mean([m.recall_at_k(_labels(r), {"gold"}, n) for r in scored]) for n in range(1, k + 1)}


def latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    stats = {k: round(v, 1) for k, v in m.percentiles(values, (50, 95, 99)).items()}
    stats["mean"] = round(sum(values) / len(values), 1)
    stats["max"] = round(max(values), 1)
    return stats


def summarize(results: list[QuestionResult], retrieval_k: int = RETRIEVAL_K) -> dict[str, Any]:
    ok = [r for r in results if not r.error]
    answerable = [r for r in ok if r.answerable]
    unanswerable = [r for r in ok if not r.answerable]
    answered = [r for r in answerable if not r.refused]
    stages = sorted({s for r in ok for s in r.timings_ms}, key=_stage_order)
    latency = {s: latency_summary([r.timings_ms[s] for r in ok if s in r.timings_ms]) for s in stages}
    latency["client"] = latency_summary([r.client_ms for r in ok])
    client_s = sum(r.client_ms for r in ok) / 1000
    answer: dict[str, float | None] = {
        "short_em": _mean([r.short_em for r in answerable]),
        "short_f1": _mean([r.short_f1 for r in answerable]),
        "full_em": _mean([r.full_em for r in answerable]),
        "full_f1": _mean([r.full_f1 for r in answerable]),
        "contains": _mean([r.contains for r in answerable]),
    }
    flagged = [r for r in ok if r.supported_sentences is not None]
    if any(r.generative_sentences for r in flagged):
        answer["supported_sentence_rate"] = _ratio(sum(r.supported_sentences or 0 for r in flagged), sum(r.flagged_sentences for r in flagged))
    if any(r.fallback for r in ok):
        answer["fallback_rate"] = _ratio(sum(bool(r.fallback) for r in ok), len(ok))
    read = [r for r in answerable if r.reader_em is not None]
    if read:
        answer["reader_gold_em"] = _mean([r.reader_em for r in read])
        answer["reader_gold_f1"] = _mean([r.reader_f1 for r in read])
        answer["reader_gold_questions"] = len(read)
    return {
        "counts": {
            "questions": len(results),
            "errors": len(results) - len(ok),
            "answerable": len(answerable),
            "unanswerable": len(unanswerable),
            "answered": len(answered),
            "retrieval_scored": sum(r.relevant is not None for r in ok),
        },
        "retrieval": retrieval_metrics(ok, retrieval_k),
        "answer": answer,
        "citation": {
            "precision": _mean([r.citation_precision for r in answered]),
            "recall": _mean([r.citation_recall for r in answered]),
            "citations_per_answer": _ratio(sum(r.citations for r in answered), len(answered), 2),
        },
        "refusal": {
            "refusal_rate": _ratio(sum(bool(r.refused) for r in unanswerable), len(unanswerable)),
            "false_refusal_rate": _ratio(sum(bool(r.refused) for r in answerable), len(answerable)),
        },
        "latency_ms": latency,
        "throughput_qps": round(len(ok) / client_s, 2) if client_s else None,
    }


def _stage_order(stage: str) -> tuple[int, str]:
    known = ("retrieve", "compose", "generate")
    return (known.index(stage), "") if stage in known else (4 if stage == "total" else 3, stage)


def _ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None
