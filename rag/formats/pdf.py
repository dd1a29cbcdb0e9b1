"""PDF → articles through its text layer (pypdf); no OCR.

The pages' text, joined with a blank line between pages, goes through the same page parser as
a .txt file: a PDF breaks every printed line, and the parser joins lines that stop mid-sentence
(also across a page break). `Document.source_map` and `meta["pages"]` therefore point into that
extracted text, not into the PDF's bytes.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

from rag.formats.offsets import block_marks, join_blocks
from rag.ingest import IngestError, documents_from_text
from rag.types import Document

if TYPE_CHECKING:
    from pypdf import PdfReader


def documents_from_pdf(raw: bytes, source: str) -> list[Document]:
    """Articles of a PDF; meta["pages"] = [[doc_offset, page_number], ...] (1-based pages)."""
    pages = [text.strip("\n") for text in _page_texts(raw, source)]
    if not any(text.strip() for text in pages):
        raise IngestError(f"{source}: has no text layer (scanned PDF?); run OCR on it first")
    text, starts = join_blocks(pages, ["\n\n" if i else "" for i in range(len(pages))])
    docs = documents_from_text(text, source)
    numbers = list(range(1, len(pages) + 1))
    for doc in docs:
        doc.meta["pages"] = block_marks(doc, starts, numbers)
    return docs


def _page_texts(raw: bytes, source: str) -> list[str]:
    # pypdf raises many exception types on damaged files; whatever it raises, the user gets a
    # one-line reason, not a traceback.
    try:
        reader = _open(raw, source)
        return [page.extract_text() or "" for page in reader.pages]
    except IngestError:
        raise
    except Exception as err:
        raise IngestError(f"{source}: not a readable PDF ({type(err).__name__}: {_first_line(err)})") from None


def _open(raw: bytes, source: str) -> PdfReader:
    from pypdf import PdfReader

    # pypdf logs each repair it makes ("EOF marker not found") as a warning, which Python prints
    # on stderr when logging is not configured: the CLI's error must stay one line.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = PdfReader(io.BytesIO(raw))
    if reader.is_encrypted and not _decrypts_without_password(reader):
        raise IngestError(f"{source}: the PDF is encrypted (password-protected); save an unprotected copy")
    return reader


def _decrypts_without_password(reader: PdfReader) -> bool:
    """Many PDFs are encrypted with an empty user password (only editing is restricted)."""
    from pypdf import PasswordType

    try:
        return reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except Exception:  # e.g. AES without the `cryptography` package
        return False


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or ["no detail"])[0][:200]
