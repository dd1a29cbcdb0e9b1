"""Word .docx → articles (python-docx): paragraphs and simple tables, in document order.

The blocks (a paragraph, or a table row with its cells joined by a space) are joined with
blank lines and go through the plain-text page parser, which finds titles, bylines and
datelines as in a .txt page. A Title- or top-level-Heading-styled paragraph is set apart by two
blank lines so the parser takes it as an article title. `Document.source_map` and
meta["paragraphs"] point into that extracted text.
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rag.formats.offsets import block_marks, join_blocks
from rag.ingest import IngestError, documents_from_text
from rag.types import Document

if TYPE_CHECKING:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

_HEADING_RE = re.compile(r"^(?:Title|Heading (\d))$")
# python-docx's blank template carries this creation time: not the article's date.
_TEMPLATE_CREATED = datetime(2013, 12, 23, 23, 15)


def documents_from_docx(raw: bytes, source: str) -> list[Document]:
    """Articles of a .docx; meta["paragraphs"] = [[doc_offset, paragraph_number], ...], numbering
    the non-empty paragraphs and table rows from 1. Title: a styled heading the parser takes,
    else the core properties' title, else the file name. Date: core properties created/modified."""
    document = _open(raw, source)
    blocks = _blocks(document)
    if not blocks:
        raise IngestError(f"{source}: the document has no text")
    texts = [text for text, _ in blocks]
    text, starts = join_blocks(texts, _separators([level for _, level in blocks]))
    props = document.core_properties
    docs = documents_from_text(text, source, (props.title or "").strip() or None)
    date = _date(props)
    numbers = list(range(1, len(blocks) + 1))
    for doc in docs:
        doc.date = doc.date or date
        doc.meta["paragraphs"] = block_marks(doc, starts, numbers)
    return docs


def _open(raw: bytes, source: str) -> Any:
    import docx

    # A damaged zip or XML raises anything from BadZipFile to KeyError: one line for the user.
    try:
        return docx.Document(io.BytesIO(raw))
    except Exception as err:
        raise IngestError(f"{source}: not a readable .docx file ({type(err).__name__})") from None


def _blocks(document: Any) -> list[tuple[str, int | None]]:
    """(text, heading level or None) per non-empty paragraph or table row; Title is level 0."""
    from docx.text.paragraph import Paragraph

    blocks: list[tuple[str, int | None]] = []
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            blocks.append((item.text.strip(), _heading_level(item)))
        else:
            blocks.extend((row, None) for row in _table_rows(item))
    return [(text, level) for text, level in blocks if text]


def _heading_level(paragraph: Paragraph) -> int | None:
    match = _HEADING_RE.match(paragraph.style.name if paragraph.style is not None else "")
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 0


def _table_rows(table: Table) -> list[str]:
    """Each row's cells, once each (a merged cell is returned for every grid column it spans)."""
    rows = []
    for row in table.rows:
        cells: list[Any] = []
        for cell in row.cells:
            if not any(cell._tc is seen._tc for seen in cells):
                cells.append(cell)
        rows.append(" ".join(" ".join(cell.text.split()) for cell in cells).strip())
    return rows


def _separators(levels: list[int | None]) -> list[str]:
    """A blank line between blocks; two around the top heading level, which marks article titles."""
    headings = [level for level in levels if level is not None]
    top = min(headings) if headings else None
    seps = []
    for i, level in enumerate(levels):
        apart = (level is not None and level == top) or (i > 0 and levels[i - 1] is not None and levels[i - 1] == top)
        seps.append("" if i == 0 else "\n\n\n" if apart else "\n\n")
    return seps


def _date(props: Any) -> str | None:
    for value in (props.created, props.modified):
        if isinstance(value, datetime) and value.replace(tzinfo=None) != _TEMPLATE_CREATED:
            return value.date().isoformat()
    return None
