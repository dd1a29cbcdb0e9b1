"""Offsets shared by the extracted formats (PDF pages, .docx paragraphs)."""

from __future__ import annotations

import bisect

from rag.types import Document


def join_blocks(blocks: list[str], separators: list[str]) -> tuple[str, list[int]]:
    """The blocks joined (separators[i] goes before block i) and where each block starts."""
    parts: list[str] = []
    starts: list[int] = []
    pos = 0
    for block, separator in zip(blocks, separators, strict=True):
        parts.append(separator)
        pos += len(separator)
        starts.append(pos)
        parts.append(block)
        pos += len(block)
    return "".join(parts), starts


def block_marks(doc: Document, starts: list[int], numbers: list[int]) -> list[list[int]]:
    """[[doc_offset, number], ...]: where the document's text enters block `number` (a page, a
    paragraph). `starts` are the blocks' offsets in the text the document was parsed from, the
    text `doc.source_map` points into. A moved column can make a number come back later."""
    marks: list[list[int]] = []
    for seg in doc.source_map or []:
        number = numbers[bisect.bisect_right(starts, seg.orig_start) - 1]
        if not marks or marks[-1][1] != number:
            marks.append([seg.doc_start, number])
    return marks
