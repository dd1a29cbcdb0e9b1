"""Which loader reads which suffix, and the one entry point the CLI and the API share.

Loaders are named by module, not imported: a format's parser (pypdf, python-docx,
trafilatura, markdown-it, charset-normalizer) is imported the first time such a file is loaded,
so `rag ask` never pays for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from rag.formats.encoding import declared_html_charset, decode_text
from rag.ingest import MAX_FILE_BYTES, IngestError
from rag.types import Document

FORMAT_OF_SUFFIX = {
    ".txt": "txt",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
    ".pdf": "pdf",
    ".docx": "docx",
}
SUPPORTED_SUFFIXES = tuple(FORMAT_OF_SUFFIX)
# format → (module, function). Text formats take (text, source); binary ones (raw bytes, source).
_LOADERS = {
    "txt": ("rag.ingest", "documents_from_text"),
    "jsonl": ("rag.ingest", "documents_from_jsonl"),
    "markdown": ("rag.formats.markdown", "documents_from_markdown"),
    "html": ("rag.formats.html", "documents_from_html"),
    "pdf": ("rag.formats.pdf", "documents_from_pdf"),
    "docx": ("rag.formats.docx", "documents_from_docx"),
}
_TEXT_FORMATS = {"txt", "jsonl", "markdown", "html"}


@dataclass
class LoadedFile:
    """A file's articles and what was detected: `format` (txt, markdown, html, jsonl, pdf, docx)
    and `encoding` (None for pdf and docx, which carry their own)."""

    name: str
    format: str
    encoding: str | None
    documents: list[Document]

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what `rag add` prints and `POST /documents` returns per file."""
        return {"name": self.name, "format": self.format, "encoding": self.encoding, "documents": len(self.documents)}


def describe_file(info: dict[str, Any]) -> str:
    """One line for `rag add`: 'gbk_news.txt: txt, gb18030, 2 articles'."""
    n = info["documents"]
    parts = [info["format"], *([info["encoding"]] if info["encoding"] else []), f"{n} article{'s' if n != 1 else ''}"]
    return f"{info['name']}: {', '.join(parts)}"


def format_of(name: str) -> str | None:
    """The format a file name's suffix stands for; None if unsupported."""
    return FORMAT_OF_SUFFIX.get(PurePath(name).suffix.lower())


def load_bytes(raw: bytes, name: str) -> LoadedFile:
    """The articles of a file's bytes; `name` (a file name) picks the format and becomes
    `Document.source`. Raises IngestError with a one-line reason."""
    fmt = format_of(name)
    if fmt is None:
        raise IngestError(f"{name}: unsupported file type (use {', '.join(SUPPORTED_SUFFIXES)})")
    if len(raw) > MAX_FILE_BYTES:
        raise IngestError(f"{name}: larger than {MAX_FILE_BYTES // 2**20} MiB")
    if not raw.strip():
        raise IngestError(f"{name}: file is empty")
    encoding = None
    if fmt in _TEXT_FORMATS:
        text, encoding = decode_text(raw, name, declared_html_charset(raw) if fmt == "html" else None)
        if not text.strip():
            raise IngestError(f"{name}: file is empty")
        documents = _loader(fmt)(text, name)
    else:
        documents = _loader(fmt)(raw, name)
    for doc in documents:
        doc.meta["format"] = fmt
        if encoding is not None:
            doc.meta["encoding"] = encoding
    return LoadedFile(name, fmt, encoding, documents)


def load_file(path: Path) -> LoadedFile:
    """`load_bytes` on a file; `Document.source` is its name (so moving a folder keeps the ids)."""
    if format_of(path.name) is None:
        raise IngestError(f"{path}: unsupported file type (use {', '.join(SUPPORTED_SUFFIXES)})")
    if not path.is_file():
        raise IngestError(f"{path}: not a readable file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise IngestError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise IngestError(f"{path}: cannot read ({err.strerror})") from None
    return load_bytes(raw, path.name)


def _loader(fmt: str) -> Callable[[Any, str], list[Document]]:
    module, function = _LOADERS[fmt]
    return getattr(importlib.import_module(module), function)
