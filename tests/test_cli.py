"""The `rag` command: human and JSON output, and one-line errors that leave the index alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from index.store import current_version
from rag.cli import main
from rag.config import Settings
from rag.service import RagService


def run(index_dir: Path, *argv: str) -> int:
    return main(["--index", str(index_dir), *argv])


def test_ask_prints_cited_answer_and_json(seed_service_rw: RagService, capsys: pytest.CaptureFixture[str]) -> None:
    index_dir = seed_service_rw.settings.index_dir
    assert run(index_dir, "ask", "阿里地区开展了多少期专题培训？") == 0
    out = capsys.readouterr().out
    assert "[1]" in out and "28期" in out
    assert run(index_dir, "ask", "阿里地区开展了多少期专题培训？", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["short_answer"] == "28期" and data["citations"][0]["quote"] in out


def test_search_json_has_both_legs(seed_service_rw: RagService, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(seed_service_rw.settings.index_dir, "search", "南骑士", "--json", "-k", "3") == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and {"dense_rank", "lexical_rank", "chunk_id", "start", "end"} <= set(hits[0])


def test_add_then_remove_round_trip(seed_service_rw: RagService, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index_dir = seed_service_rw.settings.index_dir
    article = tmp_path / "new.jsonl"
    article.write_text(
        json.dumps({"title": "那曲新闻", "text": "那曲市色尼区建成光伏电站一座，装机容量8兆瓦。"}, ensure_ascii=False), encoding="utf-8"
    )
    assert run(index_dir, "add", str(article)) == 0
    out = capsys.readouterr().out
    assert out.startswith("new.jsonl: jsonl, utf-8, 1 article\n1 added")
    doc_id = next(line.split()[0] for line in out.splitlines() if line.startswith("  "))  # "  <doc_id>  <title>"
    assert run(index_dir, "add", str(article)) == 0
    assert "\n0 added, 0 replaced, 0 removed, 1 unchanged" in capsys.readouterr().out
    assert run(index_dir, "remove", doc_id) == 0
    assert RagService(seed_service_rw.settings, seed_service_rw.embedder).store.document(doc_id) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "   "], "the question is empty"),
        (["ask", "长" * 501], "limit is 500"),
        (["remove", "ffffffffffffffff"], "unknown document id"),
        (["add", "/no/such/file.txt"], "not a readable file"),
    ],
)
def test_bad_input_is_one_line_and_index_untouched(
    seed_service_rw: RagService, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    index_dir = seed_service_rw.settings.index_dir
    before = current_version(index_dir)
    assert run(index_dir, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and err.startswith("rag: error:")
    assert current_version(index_dir) == before


def test_one_bad_file_among_good_ones_writes_nothing(
    seed_service_rw: RagService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.txt"
    good.write_text("山南新闻\n\n山南市建成高标准农田一万亩。", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # binary; GBK etc. are read since encoding detection
    index_dir = seed_service_rw.settings.index_dir
    before = current_version(index_dir)
    assert run(index_dir, "add", str(good), str(bad)) == 2
    assert "bad.txt: looks like a binary file" in capsys.readouterr().err
    assert current_version(index_dir) == before


def test_console_script_exit_code(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: an empty question exits 2 with one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--index", str(tmp_path / "none"), "ask", ""],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "rag: error: the question is empty"


LEAVE_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from rag.cli import leave
out = Path(sys.argv[1])
atexit.register(lambda: out.with_suffix(".atexit").write_text("ran"))
sys.stdout.write("unflushed answer")  # no newline: still in the buffer when leave() is called
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.5), out.with_suffix(".thread").write_text("done"))).start()
leave(3)
"""


@pytest.mark.parametrize("with_thread", [False, True])
def test_the_command_leaves_fast_without_losing_output_handlers_or_threads(tmp_path: Path, with_thread: bool) -> None:
    """`rag` skips the interpreter's teardown (rag.cli.leave): its exit code, its buffered output,
    the exit handlers and a thread still running all survive that."""
    out = tmp_path / "marker"
    proc = subprocess.run(
        [sys.executable, "-c", LEAVE_SCRIPT, str(out), "thread" if with_thread else "-"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    assert proc.stdout == "unflushed answer"
    assert out.with_suffix(".atexit").read_text() == "ran"
    assert out.with_suffix(".thread").exists() == with_thread


def test_index_kind_switch_and_rebuild_keep_added_articles(
    seed_service_rw: RagService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir = seed_service_rw.settings.index_dir
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"title": "山南新闻", "text": "山南市建成高标准农田一万亩。"}, ensure_ascii=False), encoding="utf-8")
    assert run(index_dir, "add", str(extra)) == 0
    assert run(index_dir, "index", "seeds", "--kind", "hnsw") == 0
    store = RagService(seed_service_rw.settings, seed_service_rw.embedder).store
    assert store.manifest["index_kind"] == "hnsw" and len(store.documents()) == 7
    assert run(index_dir, "index", "seeds", "--rebuild") == 0
    assert "0 replaced" in capsys.readouterr().out
    store = RagService(seed_service_rw.settings, seed_service_rw.embedder).store
    assert len(store.documents()) == 7 and store.manifest["index_kind"] == "flat"


def test_indexing_shows_progress_in_chunks_and_prints_its_throughput(tmp_path: Path) -> None:
    """A run over a second (the seed: 32 chunks) draws a progress bar in chunks/s on stderr,
    and `rag index` ends with the chunks, seconds and chunks/s it managed."""
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--index", str(tmp_path / "index"), "index"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "embedding:" in proc.stderr and "chunk/s" in proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    chunks = RagService(Settings(index_dir=tmp_path / "index")).store.chunk_count()
    assert last.startswith(f"indexed {chunks} chunks in ") and " chunks/s (embedding " in last, last
