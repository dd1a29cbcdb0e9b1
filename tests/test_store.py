"""FAISS + BM25 stay consistent through add, re-add, replace and remove; writes are atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.store import EmbedderMismatch, FaissBm25Store, Filters, StoreError, current_version
from rag.config import Settings
from rag.embedders import SentenceTransformerEmbedder
from rag.service import RagService, UnknownDocumentError
from rag.tokenize import tokenize
from rag.types import Document


def assert_consistent(store: FaissBm25Store) -> None:
    """Every chunk is in FAISS and BM25 exactly once, and every chunk's document exists."""
    assert store.faiss_index.ntotal == store.chunk_count() == len(store.vectors) == len(store.tokens)
    assert store.bm25.num_docs == max(store.chunk_count(), 1)
    assert {c.doc_id for c in store.chunks} == {d.doc_id for d in store.documents()}


def article(text: str, title: str = "测试文章", key: str = "test#1") -> Document:
    return Document(title=title, text=text, key=key, source="test")


def test_seed_index_is_consistent(seed_service: RagService) -> None:
    store = seed_service.store
    assert len(store.documents()) == 6
    assert_consistent(store)
    assert store.manifest["embedder"] == {"id": seed_service.embedder.identity, "dim": 384}
    assert store.manifest["counts"] == {"documents": 6, "chunks": store.chunk_count()}
    assert {"faiss-cpu", "bm25s", "jieba"} <= set(store.manifest["versions"])


def test_re_adding_the_same_articles_changes_nothing(seed_service_rw: RagService) -> None:
    before = current_version(seed_service_rw.settings.index_dir)
    report = seed_service_rw.add_files([Path("seeds")])
    assert not report.changed and len(report.unchanged) == 6
    assert current_version(seed_service_rw.settings.index_dir) == before


def test_replace_and_remove_keep_both_indexes_in_step(seed_service_rw: RagService) -> None:
    service = seed_service_rw
    first = article("雅鲁藏布江畔的青稞丰收了。合作社分红三十万元。")
    service.add_documents([first])
    assert service.store.lexical_search(tokenize("青稞"), 5)[0].chunk.doc_id == first.doc_id

    second = article("雅鲁藏布江畔的牦牛养殖兴旺。合作社分红五十万元。")
    report = service.add_documents([second])
    assert report.replaced == [second.doc_id]
    store = service.store
    assert store.document(first.doc_id) is None and store.document(second.doc_id) is not None
    assert store.lexical_search(tokenize("青稞"), 5) == []
    assert store.lexical_search(tokenize("牦牛"), 5)[0].chunk.doc_id == second.doc_id
    dense = store.dense_search(service.embedder.embed_queries(["牦牛养殖"])[0], 50)
    assert first.doc_id not in {h.chunk.doc_id for h in dense}
    assert_consistent(store)

    service.remove(second.doc_id)
    reloaded = FaissBm25Store.load(service.settings.index_dir)
    assert reloaded.document(second.doc_id) is None
    assert reloaded.lexical_search(tokenize("牦牛"), 5) == []
    assert len(reloaded.documents()) == 6
    assert_consistent(reloaded)


def test_removing_an_unknown_id_is_an_error_and_changes_nothing(seed_service_rw: RagService) -> None:
    before = current_version(seed_service_rw.settings.index_dir)
    with pytest.raises(UnknownDocumentError, match="unknown document id"):
        seed_service_rw.remove("0000000000000000")
    assert current_version(seed_service_rw.settings.index_dir) == before


def test_index_built_with_another_embedder_is_refused(seed_index_dir: Path) -> None:
    other = SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")  # never loaded: identity only
    with pytest.raises(EmbedderMismatch, match="re-index"):
        _ = RagService(Settings(index_dir=seed_index_dir), other).store


def test_failure_mid_write_leaves_the_previous_index_loadable(seed_service_rw: RagService, monkeypatch: pytest.MonkeyPatch) -> None:
    root = seed_service_rw.settings.index_dir
    before = current_version(root)

    def crash_after_some_files(self: FaissBm25Store, folder: Path) -> None:
        (folder / "documents.jsonl").write_text("half a file", encoding="utf-8")
        raise OSError("disk full")

    monkeypatch.setattr(FaissBm25Store, "_write_files", crash_after_some_files)
    with pytest.raises(OSError, match="disk full"):
        seed_service_rw.add_documents([article("新的文章内容。")])
    assert current_version(root) == before
    assert not list(root.glob(".tmp-*"))
    store = FaissBm25Store.load(root)
    assert len(store.documents()) == 6
    assert_consistent(store)


def test_crash_before_the_pointer_moves_keeps_the_old_version(seed_service_rw: RagService, monkeypatch: pytest.MonkeyPatch) -> None:
    import index.store as store_module

    root = seed_service_rw.settings.index_dir
    before = current_version(root)

    def crash(*_: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(store_module, "_atomic_write_text", crash)
    with pytest.raises(OSError):
        seed_service_rw.add_documents([article("另一篇新的文章。")])
    assert current_version(root) == before
    assert len(FaissBm25Store.load(root).documents()) == 6


def test_corrupt_index_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "v-1").mkdir()
    (tmp_path / "v-1" / "manifest.json").write_text("{broken", encoding="utf-8")
    (tmp_path / "CURRENT").write_text("v-1", encoding="utf-8")
    with pytest.raises(StoreError, match="rebuild"):
        FaissBm25Store.load(tmp_path)


def test_filters_apply_to_both_legs(seed_service: RagService) -> None:
    store = seed_service.store
    ali = next(d for d in store.documents() if "多举措" in d.title)
    only_ali = Filters(doc_ids=frozenset({ali.doc_id}))
    query = seed_service.embedder.embed_queries(["党组织"])[0]
    assert {h.chunk.doc_id for h in store.dense_search(query, 50, only_ali)} == {ali.doc_id}
    assert {h.chunk.doc_id for h in store.lexical_search(["党组织"], 50, only_ali)} == {ali.doc_id}
    without = Filters(exclude_doc_ids=frozenset({ali.doc_id}))
    assert ali.doc_id not in {h.chunk.doc_id for h in store.dense_search(query, 50, without)}
    assert store.dense_search(query, 5, Filters(date_from="2020-01-01")) == []  # seed articles carry no date
    titled = store.lexical_search(["党组织"], 50, Filters(title_contains="林芝"))
    assert titled and all("林芝" in h.chunk.title for h in titled)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_kinds_find_the_same_top_hit(seed_service: RagService, kind: str) -> None:
    flat = seed_service.store
    approx = flat.with_index_kind(kind)
    query = seed_service.embedder.embed_queries(["南骑士志愿服务队聘用了多少名骑手"])[0]
    assert approx.dense_search(query, 1)[0].chunk.chunk_id == flat.dense_search(query, 1)[0].chunk.chunk_id


def test_filtered_search_keeps_the_index_search_depth_and_defaults_follow_the_scale_benchmark() -> None:
    """FAISS's parameter objects default to efSearch 16 / nprobe 1: a filtered search must
    carry the index's own (docs/scale.md: those are what reach recall@10 >= 0.95)."""
    import faiss

    from index.store import build_faiss, hnsw_ef_search, ivf_nprobe, search_parameters

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    selector = faiss.IDSelectorBatch(np.arange(0, 3000, 3))
    hnsw, ivf = build_faiss(vectors, "hnsw", 16), build_faiss(vectors, "ivf", 16)
    assert search_parameters(hnsw, selector).efSearch == hnsw.hnsw.efSearch == 64
    assert search_parameters(ivf, selector).nprobe == ivf.nprobe == min(ivf.nlist, 48)
    assert (hnsw_ef_search(100_000), hnsw_ef_search(1_000_000), ivf_nprobe(4000), ivf_nprobe(20)) == (64, 512, 48, 20)
