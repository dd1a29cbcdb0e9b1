"""`rag eval` end to end: CMRC slice with --build-index, the seed dev set, HTTP mode against a
real uvicorn on loopback, report files and plots, --compare, and one-line dataset errors."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SEED_QA, SHARED
from pydantic import BaseModel

from index.store import FaissBm25Store
from rag.cli import main
from rag.config import Settings
from rag.eval.datasets import load_dataset
from rag.eval.harness import HttpAnswerer, InProcessAnswerer, cited_sentences, evaluate
from rag.eval.report import compare, flatten, markdown, verdict
from rag.service import RagService

CMRC = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"
SLICE_ARTICLES = 12  # 12 passages, 44 questions; the test asks the first 20
SLICE_QUESTIONS = 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rag(*argv: str) -> int:
    return main([*argv, "--no-progress"] if "eval" in argv else list(argv))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cmrc_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CMRC.exists():
        pytest.skip(f"{CMRC} not found (set RAG_SHARED_DIR)")
    data = json.loads(CMRC.read_text(encoding="utf-8"))
    data["data"] = data["data"][:SLICE_ARTICLES]
    path = tmp_path_factory.mktemp("cmrc") / "cmrc_slice.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cmrc_run(cmrc_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One in-process run of `rag eval SLICE --build-index --limit 20`."""
    root = tmp_path_factory.mktemp("cmrc-run")
    index_dir, out = root / "index", root / "out"
    code = rag("eval", str(cmrc_slice), "--build-index", "--index", str(index_dir), "--limit", str(SLICE_QUESTIONS), "--out", str(out))
    assert code == 0
    return {"index": index_dir, "out": out, "report": json.loads((out / "report.json").read_text(encoding="utf-8"))}


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "questions.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_png(path: Path) -> None:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 200


def quality_values(report: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in flatten(report["metrics"]).items() if not k.startswith("latency") and k != "throughput_qps"}


# ---------------------------------------------------------------- CMRC slice, in-process


def test_cmrc_slice_report_files_and_metric_ranges(cmrc_run: dict[str, Any]) -> None:
    out, report = cmrc_run["out"], cmrc_run["report"]
    for name in ("report.json", "report.md", "questions.jsonl", "latency.png", "recall_at_k.png"):
        assert (out / name).is_file(), name
    assert_png(out / "latency.png")
    assert_png(out / "recall_at_k.png")
    counts = report["metrics"]["counts"]
    assert counts["questions"] == SLICE_QUESTIONS and counts["errors"] == 0
    assert counts["retrieval_scored"] == SLICE_QUESTIONS  # every CMRC question has its gold passage
    assert report["dataset"]["documents"] == SLICE_ARTICLES
    for name, value in quality_values(report).items():
        if name not in ("citation.citations_per_answer", "answer.reader_gold_questions"):
            assert 0.0 <= value <= 1.0, name
    # The gold passage is one of 12; broken retrieval (or a wrong doc_id mapping) falls far below this.
    assert report["metrics"]["retrieval"]["recall@5"] >= 0.8
    assert report["metrics"]["answer"]["contains"] >= 0.5
    curve = [v for v in report["recall_curve"].values()]
    assert curve == sorted(curve) and curve[0] == report["metrics"]["retrieval"]["recall@1"]
    stages = report["metrics"]["latency_ms"]
    assert {"retrieve", "compose", "total", "client"} <= set(stages)
    assert stages["total"]["p50"] <= stages["total"]["p95"] <= stages["total"]["p99"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| recall@5 |" in md and "## Definitions" in md and "short_em / short_f1" in md


def test_reader_alone_is_scored_on_the_gold_passages(cmrc_slice: Path, cmrc_run: dict[str, Any]) -> None:
    """Every answerable question read against its gold passage: the span comes from that passage
    and the scores agree with the rows; a trained reader does far better than chance."""
    answer, questions = cmrc_run["report"]["metrics"]["answer"], rows(cmrc_run["out"])
    contexts = {d.doc_id: d.text for d in load_dataset(cmrc_slice).documents}
    assert answer["reader_gold_questions"] == SLICE_QUESTIONS
    for q in questions:
        gold = contexts[next(d for d in q["ranked_doc_ids"] if q["relevant"][q["ranked_doc_ids"].index(d)])] if q["gold_rank"] else None
        assert q["reader_answer"] and (gold is None or q["reader_answer"] in gold)
    assert answer["reader_gold_f1"] == pytest.approx(sum(q["reader_f1"] for q in questions) / len(questions), abs=1e-4)
    assert answer["reader_gold_em"] <= answer["reader_gold_f1"] and answer["reader_gold_f1"] >= 0.3
    assert "reader alone F1 (gold passage)" in (cmrc_run["out"] / "report.md").read_text(encoding="utf-8")


def test_cmrc_slice_rows_agree_with_summary(cmrc_run: dict[str, Any]) -> None:
    report, questions = cmrc_run["report"], rows(cmrc_run["out"])
    assert len(questions) == SLICE_QUESTIONS
    for q in questions:
        first = next((i for i, r in enumerate(q["relevant"], 1) if r), None)
        assert q["gold_rank"] == first and len(q["relevant"]) == len(q["ranked_doc_ids"]) == 10
    recall5 = sum(1 for q in questions if q["gold_rank"] and q["gold_rank"] <= 5) / len(questions)
    assert report["metrics"]["retrieval"]["recall@5"] == pytest.approx(recall5, abs=1e-4)
    f1 = sum(q["short_f1"] for q in questions) / len(questions)
    assert report["metrics"]["answer"]["short_f1"] == pytest.approx(f1, abs=1e-4)
    # The ranked list for recall@10 is a separate search; its top 5 must be what /ask answered from.
    assert report["run"]["ranking_mismatches"] == 0


def test_gold_doc_ids_point_at_the_question_passage(cmrc_slice: Path, cmrc_run: dict[str, Any]) -> None:
    dataset = load_dataset(cmrc_slice)
    store = FaissBm25Store.load(cmrc_run["index"])
    for q in dataset.questions[:SLICE_QUESTIONS]:
        (doc_id,) = q.gold_doc_ids
        doc = store.document(doc_id)
        assert doc is not None and q.answers[0] in doc.text


def test_build_index_reuses_its_index_and_refuses_a_foreign_one(
    cmrc_slice: Path, cmrc_run: dict[str, Any], seed_index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        rag("eval", str(cmrc_slice), "--build-index", "--index", str(cmrc_run["index"]), "--limit", "2", "--out", str(tmp_path / "o")) == 0
    )
    assert "already holds the 12 documents" in capsys.readouterr().err
    foreign = tmp_path / "seed-index"
    shutil.copytree(seed_index_dir, foreign)
    before = sorted(d.doc_id for d in FaissBm25Store.load(foreign).documents())
    assert rag("eval", str(cmrc_slice), "--build-index", "--index", str(foreign), "--out", str(tmp_path / "o2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "choose an empty --index" in err[0]
    assert sorted(d.doc_id for d in FaissBm25Store.load(foreign).documents()) == before


def test_squad_file_against_an_index_without_its_passages_fails(
    cmrc_slice: Path, seed_index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rag("eval", str(cmrc_slice), "--index", str(seed_index_dir), "--out", str(tmp_path)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "none of the 12 gold documents" in line and "--build-index" in line


# ---------------------------------------------------------------- seed dev set and --compare


# An earlier "report" the seed run is compared with: recall@1 out of reach (the run must be
# worse), short-answer F1 and latency impossible to miss (the run must be better).
OLD_REPORT = {
    "schema": "rag-eval-report/1",
    "dataset": {"name": "seed_qa_dev", "questions": 12},
    "metrics": {
        "retrieval": {"recall@1": 1.5},
        "answer": {"short_f1": -0.5},
        "refusal": {},
        "latency_ms": {"client": {"p50": 1e9}},
    },
}


@pytest.fixture(scope="module")
def seed_run(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`rag eval seed_qa_dev.jsonl --compare OLD` once; its stdout is kept for the compare test."""
    if not SEED_QA.exists():
        pytest.skip(f"{SEED_QA} not found")
    root = tmp_path_factory.mktemp("seed-run")
    old, out = root / "old.json", root / "out"
    old.write_text(json.dumps(OLD_REPORT), encoding="utf-8")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert rag("--index", str(seed_index_dir), "eval", str(SEED_QA), "--out", str(out), "--compare", str(old)) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"out": out, "report": report, "stdout": stdout.getvalue()}


def test_seed_dev_has_refusal_and_evidence_retrieval_metrics(seed_run: dict[str, Any]) -> None:
    report, questions = seed_run["report"], rows(seed_run["out"])
    counts = report["metrics"]["counts"]
    assert (counts["answerable"], counts["unanswerable"]) == (11, 2)
    refusal = report["metrics"]["refusal"]
    unanswerable = [q for q in questions if not q["answerable"]]
    assert refusal["refusal_rate"] == sum(q["refused"] for q in unanswerable) / 2
    assert 0.0 <= refusal["false_refusal_rate"] <= 1.0
    # Unanswerable questions have no gold passage and no answer scores.
    assert all(q["relevant"] is None and q["short_f1"] is None for q in unanswerable)
    # Gold here is the evidence string inside a retrieved passage (no doc ids in the file).
    assert counts["retrieval_scored"] == 11 and report["metrics"]["retrieval"]["recall@5"] >= 0.8
    assert 0.0 <= report["metrics"]["citation"]["precision"] <= 1.0
    assert_png(seed_run["out"] / "recall_at_k.png")


def test_compare_prints_deltas_and_flags_worse(seed_run: dict[str, Any]) -> None:
    out = seed_run["stdout"]
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["retrieval.recall@1"].endswith("<-- WORSE")
    assert lines["answer.short_f1"].endswith("(better)")
    assert lines["latency_ms.client.p50"].endswith("(better)")
    assert "answer.short_em" not in lines  # only metrics both reports have
    assert "warning: different runs: seed_qa_dev (12 questions) vs seed_qa_dev (13 questions)" in out
    assert out.rstrip().endswith("1 metric(s) worse")


def test_compare_verdicts_by_direction() -> None:
    assert verdict("retrieval.recall@5", 0.80, 0.79) == "WORSE"
    assert verdict("answer.short_f1", 0.50, 0.5001) == ""  # within rounding
    assert verdict("refusal.false_refusal_rate", 0.10, 0.20) == "WORSE"  # lower is better
    assert verdict("refusal.refusal_rate", 0.50, 1.0) == "better"
    assert verdict("latency_ms.total.p95", 100.0, 105.0) == ""  # under 10 %: noise
    assert verdict("latency_ms.total.p95", 100.0, 130.0) == "WORSE"
    assert verdict("throughput_qps", 10.0, 5.0) == "WORSE"
    base = {"dataset": {"name": "x", "questions": 3}, "metrics": {"retrieval": {"recall@1": 0.5}, "answer": {"short_f1": 0.4}}}
    new = {"dataset": {"name": "x", "questions": 3}, "metrics": {"retrieval": {"recall@1": 0.25}, "answer": {"short_f1": 0.6}}}
    text, worse = compare(base, new)
    assert worse == 1 and "-0.2500  <-- WORSE" in text and "+0.2000  (better)" in text and "warning" not in text


def test_question_the_service_rejects_is_recorded_not_fatal(seed_service: RagService, tmp_path: Path) -> None:
    path = tmp_path / "qs.jsonl"
    too_long = "阿里" * 400  # over max_question_chars
    lines = [
        {"id": "ok", "question": "阿里地区开展了多少期专题培训？", "answers": ["28期"]},
        {"id": "long", "question": too_long, "answers": ["x"]},
    ]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    report = evaluate(path, InProcessAnswerer(seed_service), warmup=0)  # a path works as well as a Dataset
    assert report.metrics["counts"]["errors"] == 1
    failed = next(q for q in report.questions if q["qid"] == "long")
    assert "characters long" in failed["error"]
    assert report.metrics["answer"]["contains"] == 1.0  # the rejected question is left out, not scored 0


# ---------------------------------------------------------------- citations parsed from answer text


def test_cited_sentences_from_markers_when_sentences_are_absent() -> None:
    answer = {
        "answer": "共建成1459个。[1]其中城市600个[2][3]。未引用的句子",
        "citations": [{"n": 1, "quote": "全市共建成1459个"}, {"n": 2, "quote": "城市600个"}],
    }
    sentences = cited_sentences(answer)
    assert [s.text for s in sentences] == ["共建成1459个。", "其中城市600个", "。未引用的句子"]
    # [3] points at no citation: it counts as a citation without support.
    assert [s.quotes for s in sentences] == [["全市共建成1459个"], ["城市600个", ""], []]


def test_cited_sentences_skip_sentences_dropped_from_the_answer_text() -> None:
    answer = {
        "answer": "全市共建成1459个。[1]",
        "citations": [{"n": 1, "quote": "全市共建成1459个"}],
        "sentences": [
            {"text": "全市共建成1459个。", "citations": [1], "supported": True, "rule": "cited"},
            {"text": "其中城市有9000个。", "citations": [], "supported": False, "rule": "unsupported_number"},
        ],
    }
    (sentence,) = cited_sentences(answer)
    assert sentence.quotes == ["全市共建成1459个"]


# ---------------------------------------------------------------- malformed datasets


BAD_DATASETS = [
    ("bad.jsonl", '{"question": "甲？", "answers": ["a"]}\n{"question": "乙？", "answers": [\n', "bad.jsonl:2: invalid JSON"),
    ("bad.jsonl", '{"id": "q1", "question": "甲？", "answers": "a"}\n', "bad.jsonl:1 (id q1): 'answers' must be a list of strings"),
    ("bad.jsonl", '{"id": 7, "question": "甲？", "answerable": true}\n', "bad.jsonl:1 (id 7): answerable question without 'answers'"),
    ("bad.jsonl", '{"question": 3, "answers": ["a"]}\n', "bad.jsonl:1: 'question' must be a string"),
    ("bad.jsonl", '["question"]\n', "bad.jsonl:1: expected a JSON object, got list"),
    (
        "bad.jsonl",
        '{"id": "a", "question": "甲？", "answers": ["x"]}\n{"id": "a", "question": "乙？", "answers": ["y"]}\n',
        "duplicate question id 'a'",
    ),
    (
        "bad.json",
        '{"data": [{"title": "t", "paragraphs": [{"id": "p", "qas": []}]}]}',
        "bad.json: data[0].paragraphs[0]: 'context' must be a non-empty string",
    ),
    (
        "bad.json",
        '{"data": [{"paragraphs": [{"context": "正文。", "qas": [{"id": "q9", "question": "问？", "answers": [{"start": 1}]}]}]}]}',
        "bad.json: data[0].paragraphs[0].qas[0] (id q9): answers[0] must be an object with a string 'text'",
    ),
    (
        "bad.json",
        '{"data": [{"paragraphs": [{"context": "正文。", "qas": [{"id": "q9", "question": "问？", "answers": []}]}]}]}',
        "(id q9): no non-empty answer",
    ),
    ("bad.json", '{"version": "v1"}', 'not a SQuAD/CMRC file: expected an object with a "data" list'),
    ("bad.json", '{"question": "a"}\n{"question": "b"}\n', "is it JSON Lines? name it .jsonl"),
    ("bad.json", '{"data": [', "bad.json: invalid JSON at line 1"),
    ("bad.csv", "question,answer\n", "unknown dataset format '.csv'"),
    ("empty.jsonl", "\n\n", "empty.jsonl: no questions"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_DATASETS)
def test_malformed_dataset_is_one_line_exit_2(
    name: str, content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert rag("eval", str(path), "--index", str(tmp_path / "no-index"), "--out", str(tmp_path / "out")) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("rag: error: ") and message in line and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "no-index").exists()


def test_missing_dataset_file_and_bad_compare_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rag("eval", str(tmp_path / "nope.jsonl")) == 2
    assert capsys.readouterr().err.strip() == f"rag: error: {tmp_path / 'nope.jsonl'}: no such file"
    good = tmp_path / "q.jsonl"
    good.write_text('{"question": "甲？", "answers": ["a"]}\n', encoding="utf-8")
    (tmp_path / "old.json").write_text('{"metrics": {}}', encoding="utf-8")
    assert rag("eval", str(good), "--compare", str(tmp_path / "old.json")) == 2
    assert "not a `rag eval` report.json" in capsys.readouterr().err


# ---------------------------------------------------------------- HTTP mode on a real uvicorn


class AskBody(BaseModel):
    question: str
    top_k: int | None = None


def stand_in_app(service: RagService, with_search: bool, throttle_first: bool) -> Any:
    """The /ask (and /search) JSON contract of the API, over RagService: used when api.app is absent."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from rag.service import QuestionError

    app = FastAPI()
    state = {"throttled": not throttle_first}

    @app.post("/ask")
    def ask(body: AskBody) -> Any:
        if not state["throttled"]:
            state["throttled"] = True
            return JSONResponse({"message": "slow down"}, status_code=429, headers={"Retry-After": "0"})
        try:
            return service.ask(body.question, body.top_k).to_dict()
        except QuestionError as err:
            return JSONResponse({"message": str(err), "field": "question"}, status_code=400)

    if with_search:

        @app.post("/search")
        def search(body: AskBody) -> Any:
            return {"hits": [h.to_dict() for h in service.search(body.question, body.top_k)]}

    return app


def real_app(index_dir: Path, embedder: Any) -> Any | None:
    """The API's own app (rate limits off: one client asks 40 requests back to back)."""
    try:
        from api.app import create_app
        from api.settings import ApiSettings
    except ImportError:
        return None
    settings = ApiSettings(index_dir=index_dir, ip_rate_per_minute=0, key_rate_per_minute=0)
    return create_app(settings, RagService(settings, embedder))


@pytest.fixture
def serve(embedder: Any) -> Iterator[Any]:
    """Start an ASGI app on 127.0.0.1 (free port) in a thread; yields a function app -> base URL."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started, "uvicorn did not start"
        servers.append((server, thread))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def test_http_mode_agrees_with_in_process(
    cmrc_slice: Path, cmrc_run: dict[str, Any], serve: Any, embedder: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = real_app(cmrc_run["index"], embedder)
    real = app is not None
    if app is None:
        app = stand_in_app(RagService(Settings(index_dir=cmrc_run["index"]), embedder), with_search=True, throttle_first=False)
    url = serve(app)
    out = tmp_path / "http"
    assert rag("eval", str(cmrc_slice), "--url", url, "--limit", str(SLICE_QUESTIONS), "--out", str(out)) == 0
    capsys.readouterr()
    http_report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    run = http_report["run"]
    assert run["mode"] == "http" and run["url"] == url and run["ranked_list_from"] == "/search"
    if real:  # GET /ready tells which index answered
        assert (run["documents"], run["embedder"]) == (SLICE_ARTICLES, cmrc_run["report"]["run"]["embedder"])
    assert quality_values(http_report) == quality_values(cmrc_run["report"])
    local = {q["qid"]: q for q in rows(cmrc_run["out"])}
    for q in rows(out):
        mine = local[q["qid"]]
        assert (q["short_answer"], q["refused"], q["gold_rank"], q["answer"]) == (
            mine["short_answer"],
            mine["refused"],
            mine["gold_rank"],
            mine["answer"],
        )
    assert_png(out / "latency.png")


def test_http_answerer_falls_back_to_ask_and_waits_out_429(cmrc_slice: Path, cmrc_run: dict[str, Any], serve: Any, embedder: Any) -> None:
    service = RagService(Settings(index_dir=cmrc_run["index"]), embedder)
    url = serve(stand_in_app(service, with_search=False, throttle_first=True))
    dataset = load_dataset(cmrc_slice).limited(5)
    answerer = HttpAnswerer(url)
    try:
        report = evaluate(dataset, answerer, warmup=0)
    finally:
        answerer.close()
    assert report.run["ranked_list_from"] == "/ask" and report.run["rate_limited_retries"] == 1
    assert report.run["rate_limited_wait_s"] == 0.0  # Retry-After: 0, waited out and counted
    assert report.metrics["counts"]["errors"] == 0
    text = markdown(report)
    assert "1 answers were 429 and retried" in text and "over the run's wall clock" in text
    local = {q["qid"]: q for q in rows(cmrc_run["out"])}
    for q in report.questions:
        assert q["ranked_doc_ids"] == local[q["qid"]]["ranked_doc_ids"]


def test_unreachable_url_is_one_line(cmrc_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    assert rag("eval", str(cmrc_slice), "--url", f"http://127.0.0.1:{port}", "--out", str(tmp_path)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"cannot reach http://127.0.0.1:{port}/" in line
