"""Evaluation harness: `evaluate(dataset, answerer) -> Report` and the metrics behind it.

Lazy attributes keep `import rag.eval` (done by every `rag` command) free of numpy,
httpx and matplotlib.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "evaluate": "rag.eval.harness",
    "InProcessAnswerer": "rag.eval.harness",
    "HttpAnswerer": "rag.eval.harness",
    "EvalError": "rag.eval.harness",
    "load_dataset": "rag.eval.datasets",
    "DatasetError": "rag.eval.datasets",
    "Report": "rag.eval.report",
    "load_report": "rag.eval.report",
    "compare": "rag.eval.report",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rag.eval' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
