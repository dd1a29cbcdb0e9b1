"""Issue 11 hardening: hostile or mistaken input gets a 4xx, or one line on stderr and exit 2
(deeply nested JSON, impossible dates, bad CLI options, no index, a missing extra); public
errors name no server path; every response says `nosniff`; eval datasets fail loudly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index.store import current_version
from rag.cli import main
from rag.eval import evaluate
from rag.eval.datasets import DatasetError, load_dataset
from rag.eval.harness import InProcessAnswerer
from rag.eval.report import markdown
from rag.ingest import IngestError, documents_from_jsonl
from rag.service import RagService
from tests.api_fixtures import SEED_QUESTION, api_settings, copy_index, make_app

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": "Bearer admin-key"}
GOOD_LINE = json.dumps({"title": "那曲新闻", "text": "那曲市色尼区建成光伏电站一座。"}, ensure_ascii=False)
# The review's input: 50,000 nested lists in one record (json.loads recurses per level).
DEEP_LINE = '{"title":"t","text":"x","url":' + "[" * 50_000 + "]" * 50_000 + "}"


def one_error_line(err: str) -> str:
    """The single `rag: error: ...` line a user-fixable error prints (and nothing else)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rag: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def app_client(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A private copy of the seed index (nothing here should manage to write), admin key set."""
    index_dir = copy_index(seed_index_dir, tmp_path_factory.mktemp("hardening") / "index")
    with TestClient(make_app(api_settings(index_dir, admin_keys=["admin-key"]), embedder), raise_server_exceptions=False) as client:
        yield client


# ---------------------------------------------------------------- item 2: deeply nested JSON


def test_deep_jsonl_line_is_an_ingest_error_naming_the_line() -> None:
    with pytest.raises(IngestError, match=r"^deep\.jsonl:2: invalid JSON \(nested too deeply\)$"):
        documents_from_jsonl(f"{GOOD_LINE}\n{DEEP_LINE}\n", "deep.jsonl")


def test_rag_add_deep_jsonl_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(DEEP_LINE + "\n", encoding="utf-8")
    assert main(["--index", str(tmp_path / "index"), "add", str(path)]) == 2
    assert "deep.jsonl:1: invalid JSON (nested too deeply)" in one_error_line(capsys.readouterr().err)
    assert current_version(tmp_path / "index") is None  # nothing was written


def test_rag_add_turns_any_parser_recursion_into_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser other than JSON's (pypdf, markdown-it, lxml) that recurses too deep: still one line."""

    def recursing(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(RagService, "add_files", recursing)
    path = tmp_path / "nested.md"
    path.write_text(">" * 1000 + " x\n", encoding="utf-8")
    assert main(["--index", str(tmp_path / "index"), "add", str(path)]) == 2
    assert "nested too deeply" in one_error_line(capsys.readouterr().err)


def test_upload_of_deep_jsonl_is_422_naming_the_line(app_client: TestClient) -> None:
    response = app_client.post("/documents", files={"file": ("deep.jsonl", DEEP_LINE.encode(), "application/octet-stream")}, headers=ADMIN)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"] == "deep.jsonl:1: invalid JSON (nested too deeply)"
    assert body["fields"][0]["field"] == "file"


def test_upload_parser_recursion_is_422_not_500(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upload path's safety net: whatever parser recurses, the client gets a 4xx."""
    import api.routes.documents as documents

    def recursing(raw: bytes, name: str) -> None:
        raise RecursionError("maximum recursion depth exceeded while calling a Python object")

    monkeypatch.setattr(documents, "load_bytes", recursing)
    response = app_client.post("/documents", files={"file": ("page.pdf", b"%PDF-1.4 ...", "application/pdf")}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["message"] == "page.pdf: nested too deeply to parse"


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/documents", "application/json", DEEP_LINE),  # the JSON article body
        ("/ask", "application/json", '{"question":' + "[" * 50_000 + "]" * 50_000 + "}"),
        ("/v1/chat/completions", "application/json", '{"messages":' + "[" * 50_000 + "]" * 50_000 + "}"),
    ],
)
def test_deep_json_bodies_are_4xx(app_client: TestClient, path: str, content_type: str, body: str) -> None:
    response = app_client.post(path, content=body.encode(), headers={**ADMIN, "Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("name", ["deep.jsonl", "deep.json"])
def test_deep_eval_dataset_is_a_dataset_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text('{"question": "问？", "answers": ' + "[" * 50_000 + "]" * 50_000 + "}\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="nested too deeply"):
        load_dataset(path)


# ---------------------------------------------------------------- item 7: dates, 503, nosniff


@pytest.mark.parametrize("date", ["2023-02-30", "yesterday", "2024-13-01", "20240305", "", "2024-03-05T25:00"])
def test_jsonl_dates_must_be_real_iso_dates(date: str) -> None:
    record = json.dumps({"title": "标题", "text": "正文。", "date": date}, ensure_ascii=False)
    with pytest.raises(IngestError, match=r"^news\.jsonl:2: 'date': ") as caught:
        documents_from_jsonl(f"{GOOD_LINE}\n{record}\n", "news.jsonl")
    assert repr(date) in str(caught.value)


@pytest.mark.parametrize(
    ("date", "stored"),
    [("2024-03-05", "2024-03-05"), ("2024-03-05T23:30:00+08:00", "2024-03-05"), ("2024-03-05 08:00", "2024-03-05"), (None, None)],
)
def test_jsonl_dates_are_stored_as_the_date(date: str | None, stored: str | None) -> None:
    record = json.dumps({"title": "标题", "text": "正文。", "date": date}, ensure_ascii=False)
    assert documents_from_jsonl(record, "news.jsonl")[0].date == stored


def test_rag_add_with_an_impossible_date_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "news.jsonl"
    path.write_text(json.dumps({"title": "标题", "text": "正文。", "date": "2023-02-30"}) + "\n", encoding="utf-8")
    assert main(["--index", str(tmp_path / "index"), "add", str(path)]) == 2
    assert "news.jsonl:1: 'date': '2023-02-30' is not a real date" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("date", ["2023-02-30", "yesterday"])
def test_json_article_dates_are_validated(app_client: TestClient, date: str) -> None:
    article = {"title": "标题", "text": "正文。", "date": date}
    response = app_client.post("/documents", json=article, headers=ADMIN)
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == ["date"]


def test_503_names_no_server_path_and_logs_the_cause(
    seed_index_dir: Path, tmp_path: Path, embedder, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    index_dir = copy_index(seed_index_dir, tmp_path / "secret-location" / "index")
    version = current_version(index_dir)
    assert version is not None
    (version / "manifest.json").write_text("{", encoding="utf-8")  # an unreadable index
    client = TestClient(make_app(api_settings(index_dir), embedder), raise_server_exceptions=False)  # no lifespan: no warm-up
    with caplog.at_level("ERROR", logger="rag.api"):
        response = client.post("/ask", json={"question": SEED_QUESTION}, headers={"X-Request-ID": "req-503"})
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "index_unavailable" and body["request_id"] == "req-503"
    assert "secret-location" not in response.text and str(tmp_path) not in response.text
    logged = [r.getMessage() for r in caplog.records if "req-503" in r.getMessage()]
    assert logged and str(index_dir) in logged[0]  # the operator still sees where and why


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/health", 200),
        ("GET", "/", 200),
        ("GET", "/widget.js", 200),
        ("GET", "/v1/models", 200),
        ("GET", "/no-such-page", 404),
        ("POST", "/ask", 422),
        ("DELETE", "/health", 405),
    ],
)
def test_every_response_says_nosniff(app_client: TestClient, method: str, path: str, status: int) -> None:
    response = app_client.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_500_says_nosniff_too(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = app_client.app.state.ctx  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ctx.answerer, "answer", broken)
    response = app_client.post("/ask", json={"question": SEED_QUESTION})
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------- item 12: the CLI


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", SEED_QUESTION, "-k", "0"], "-k/--top-k must be between 1 and 50, got 0"),
        (["search", SEED_QUESTION, "-k", "-1"], "-k/--top-k must be between 1 and 50, got -1"),
        (["ask", SEED_QUESTION, "-k", "51"], "-k/--top-k must be between 1 and 50, got 51"),
        (["search", SEED_QUESTION, "--date-from", "yesterday"], "--date-from: expected a date as YYYY-MM-DD"),
        (["search", SEED_QUESTION, "--date-from", "2024-13-01"], "--date-from: '2024-13-01' is not a real date"),
        (["ask", SEED_QUESTION, "--date-to", "2023-02-30"], "--date-to: '2023-02-30' is not a real date"),
        (["search", SEED_QUESTION, "--date-from", "2024-02-01", "--date-to", "2024-01-01"], "--date-to is before --date-from"),
    ],
)
def test_search_and_ask_options_are_checked(
    seed_index_dir: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--index", str(seed_index_dir), *argv]) == 2
    captured = capsys.readouterr()
    assert message in one_error_line(captured.err) and captured.out == ""


def test_search_accepts_the_bounds_and_a_timestamp(seed_index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--index", str(seed_index_dir), "search", SEED_QUESTION, "-k", "50", "--json"]) == 0
    assert 5 < len(json.loads(capsys.readouterr().out)) <= 50
    # A timestamp is taken as its date (the seed articles carry none, so nothing matches).
    assert main(["--index", str(seed_index_dir), "search", SEED_QUESTION, "--json", "--date-to", "2100-01-01T00:00"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("command", ["status", "docs"])
def test_status_and_docs_say_there_is_no_index(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nonexistent"
    assert main(["--index", str(missing), command]) == 2
    captured = capsys.readouterr()
    assert f"no index at {missing}" in one_error_line(captured.err) and captured.out == ""


def test_st_embedder_without_the_extra_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # `import sentence_transformers` now fails
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "news.jsonl").write_text(GOOD_LINE + "\n", encoding="utf-8")
    argv = ["--index", str(tmp_path / "index"), "index", "--rebuild", "--embedder", "st:BAAI/bge-small-zh-v1.5", str(corpus)]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "sentence-transformers" in line and "pip install -e '.[st]'" in line


def test_make_bench_runs_scripts_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no bench target"
    scripts = re.findall(r"benchmarks/[\w/]+\.py", recipe.group(1))
    assert scripts and all((ROOT / s).is_file() for s in scripts), scripts


def test_package_metadata_has_an_spdx_license_and_builds_without_warnings(tmp_path: Path) -> None:
    """setuptools warns (three 15-line blocks in `make run`) for a table or classifier license."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))
    # Build the metadata from a copy (so the checkout's egg-info is left alone).
    for package in ("rag", "index", "api"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").touch()
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    (tmp_path / "README.md").touch()
    code = "from setuptools import build_meta; build_meta.prepare_metadata_for_build_wheel('meta')"
    (tmp_path / "meta").mkdir()
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stderr


# ---------------------------------------------------------------- item 13: eval datasets and report


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_eval_jsonl_with_answer_instead_of_answers_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qs.jsonl",
        [{"id": "a", "question": "问一？", "answers": ["一"]}, {"id": "b", "question": "问二？", "answer": "二"}],
    )
    with pytest.raises(DatasetError, match=r"qs\.jsonl:2 \(id b\): unknown field 'answer': use 'answers' \(a list of strings\)"):
        load_dataset(path)


def test_eval_jsonl_without_answers_must_say_unanswerable(tmp_path: Path) -> None:
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"question": "问？", "gold": "x"}])
    with pytest.raises(DatasetError, match=r"missing\.jsonl:1: 'answers' is missing"):
        load_dataset(missing)
    explicit = load_dataset(write_jsonl(tmp_path / "explicit.jsonl", [{"question": "问？", "answerable": False}]))
    assert [q.answerable for q in explicit.questions] == [False]
    empty = load_dataset(write_jsonl(tmp_path / "empty.jsonl", [{"question": "问？", "answers": []}]))
    assert [q.answerable for q in empty.questions] == [False]  # documented: answerable defaults to answers non-empty


def test_report_lists_the_failed_questions(seed_service: RagService, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qs.jsonl",
        [
            {"id": "ok", "question": "阿里地区开展了多少期专题培训？", "answers": ["28期"]},
            {"id": "long", "question": "阿里" * 400, "answers": ["x"]},  # over max_question_chars: rejected
        ],
    )
    text = markdown(evaluate(path, InProcessAnswerer(seed_service), warmup=0))
    section = text.split("## Failed questions", 1)
    assert len(section) == 2, text
    rows = [line for line in section[1].splitlines() if line.startswith("| long |")]
    assert len(rows) == 1 and "characters long" in rows[0]
    assert "| ok |" not in section[1].split("\n## ", 1)[0]
