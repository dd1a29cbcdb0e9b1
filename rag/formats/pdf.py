"""PDF → articles through its text layer (pypdf); no OCR.

Page numbers and running headers or footers are dropped first (`without_running_lines`); the
pages' text, joined with a blank line between pages, goes through the same page parser as
a .txt file: a PDF breaks every printed line, and the parser joins lines that stop mid-sentence
(also across a page break). `Document.source_map` and `meta["pages"]` therefore point into that
extracted text, not into the PDF's bytes.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from typing import TYPE_CHECKING

from rag.formats.offsets import block_marks, join_blocks
from rag.ingest import IngestError, documents_from_text, names_the_article
from rag.types import Document

if TYPE_CHECKING:
    from pypdf import PdfReader


def documents_from_pdf(raw: bytes, source: str) -> list[Document]:
    """Articles of a PDF; meta["pages"] = [[doc_offset, page_number], ...] (1-based pages)."""
    pages = without_running_lines([text.strip("\n") for text in _page_texts(raw, source)])
    if not any(text.strip() for text in pages):
        raise IngestError(f"{source}: has no text layer (scanned PDF?); run OCR on it first")
    text, starts = join_blocks(pages, ["\n\n" if i else "" for i in range(len(pages))])
    docs = documents_from_text(text, source)
    numbers = list(range(1, len(pages) + 1))
    for doc in docs:
        doc.meta["pages"] = block_marks(doc, starts, numbers)
    return docs


# Page furniture is looked for among the first and last lines of a page.
EDGE_LINES = 2
_PAGE_MARK = re.compile(
    r"[-－—–]\s*\d{1,4}\s*[-－—–]|第\s*\d{1,4}\s*页(?:\s*[/／,，]?\s*共\s*\d{1,4}\s*页)?|共\s*\d{1,4}\s*页\s*第\s*\d{1,4}\s*页"
    r"|\d{1,4}\s*[/／]\s*\d{1,4}|(?:page|p\.)\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?",
    re.IGNORECASE,
)
_BARE_NUMBER = re.compile(r"\d{1,4}")


def without_running_lines(pages: list[str]) -> list[str]:
    """The pages without their page numbers and running headers or footers, at a page's top or
    bottom edge: a page mark (- 1 -, 第 1 页 共 2 页, 3/12); a bare number where at least half the
    pages, two or more, have one; a line that recurs at the edge of at least half the pages, two
    or more (digits aside from three pages on; two pages must repeat it exactly). Left in, they
    sat between paragraphs (「- 1 -」, 「西藏日报 2024年5月18日 星期六」) and kept a sentence broken
    over a page from being joined. Never an article's own lines (a byline, a dateline, a date
    or source line), and the first page keeps its top lines: a headline may be what later
    pages repeat."""
    lines = [page.split("\n") for page in pages]
    loose = len(pages) >= 3
    keys = [{_key(line, loose) for line in _edges(page) if line.strip()} for page in lines]
    counts = Counter(key for page in keys for key in page)
    running = {key for key, n in counts.items() if _most(n, len(pages))}
    furniture = Furniture(running, loose, page_number_offset(lines))
    return ["\n".join(furniture.dropped_from(page, k)) for k, page in enumerate(lines)]


def page_number_offset(lines: list[list[str]]) -> int | None:
    """c where at least half the pages, two or more, carry the bare number k + c at an edge
    (k counting from 0): printed page numbers; a table's numbers do not rise page by page."""
    offsets = Counter(
        int(line) - k for k, page in enumerate(lines) for line in {x.strip() for x in _edges(page)} if _BARE_NUMBER.fullmatch(line)
    )
    best = offsets.most_common(1)
    return best[0][0] if best and _most(best[0][1], len(lines)) else None


def _most(n: int, pages: int) -> bool:
    return n >= 2 and 2 * n >= pages


def _edges(page: list[str]) -> list[str]:
    return page[:EDGE_LINES] + page[max(EDGE_LINES, len(page) - EDGE_LINES) :]


def _key(line: str, loose: bool) -> str:
    text = " ".join(line.split())
    return re.sub(r"\d+", "#", text) if loose else text


class Furniture:
    def __init__(self, running: set[str], loose: bool, number_offset: int | None) -> None:
        self.running, self.loose, self.number_offset = running, loose, number_offset

    def dropped_from(self, page: list[str], k: int) -> list[str]:
        return [line for i, line in enumerate(page) if not self.is_furniture(page, i, k)]

    def is_furniture(self, page: list[str], i: int, k: int) -> bool:
        top, bottom = i < EDGE_LINES, i >= max(EDGE_LINES, len(page) - EDGE_LINES)
        line = page[i].strip()
        if not line or not (top or bottom) or names_the_article(line):
            return False
        if _PAGE_MARK.fullmatch(line):
            return True
        if _BARE_NUMBER.fullmatch(line):
            return self.number_offset is not None and int(line) == k + self.number_offset
        return _key(line, self.loose) in self.running and (bottom or k > 0)


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
