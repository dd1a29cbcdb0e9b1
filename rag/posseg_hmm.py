"""jieba's part-of-speech HMM (jieba/posseg: 256 (BMES, tag) states) as arrays, with its
Viterbi in numpy, for the runs of characters jieba has no word for.

jieba's tables are Python modules of nested dicts (40–60 ms to load, on every cold question
that meets an unknown name) and its Viterbi is pure Python (~2 ms a short run, a tenth of a
question's tagging). Here the tables are kept as .npy files in the cache folder (a few ms to
load; rebuilt from jieba's modules when missing, stale or damaged) and the Viterbi runs on
them: the same sums in the same order, ties sent where jieba's max((prob, state)) sends
them, so the route is jieba's (the tests compare the two on 1,200 runs; 17,000 were checked once).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

FORMAT_VERSION = 1
# jieba/posseg/viterbi.py's constants: an unseen emission, an impossible transition.
MIN_FLOAT = -3.14e100
MIN_INF = float("-inf")
State = tuple[str, str]
_ARRAYS = (
    "start",
    "trans",
    "allowed",
    "listed_chars",
    "listed_offsets",
    "listed_states",
    "emit_chars",
    "emit_offsets",
    "emit_states",
    "emit_logp",
)


@dataclass(frozen=True)
class HmmTables:
    """States in descending order (argmax's first maximum is then jieba's tie-break);
    per-character lists as sorted code points with offsets into flat state/value arrays."""

    states: tuple[State, ...]
    start: np.ndarray  # float64 [S]
    trans: np.ndarray  # float64 [S, S], MIN_INF where jieba has no transition
    allowed: np.ndarray  # bool [S, S], the transitions jieba lists
    listed_chars: np.ndarray  # uint32: characters with a state list (char_state_tab)
    listed_offsets: np.ndarray
    listed_states: np.ndarray  # int16, sorted within each character
    emit_chars: np.ndarray  # uint32: characters some state emits
    emit_offsets: np.ndarray
    emit_states: np.ndarray  # int16
    emit_logp: np.ndarray  # float64


def tables_from_jieba(
    char_state: Mapping[str, Any],
    start: Mapping[Any, float],
    trans: Mapping[Any, Mapping[Any, float]],
    emit: Mapping[Any, Mapping[str, float]],
) -> HmmTables:
    states = tuple(sorted(trans, reverse=True))
    index = {state: i for i, state in enumerate(states)}
    n = len(states)
    trans_matrix = np.full((n, n), MIN_INF)
    allowed = np.zeros((n, n), dtype=bool)
    for source, targets in trans.items():
        for target, logp in targets.items():
            trans_matrix[index[source], index[target]] = logp
            allowed[index[source], index[target]] = True
    listed = {c: sorted(index[s] for s in states_of) for c, states_of in char_state.items()}
    emitted: dict[str, list[tuple[int, float]]] = {}
    for state, row in emit.items():
        for char, logp in row.items():
            emitted.setdefault(char, []).append((index[state], logp))
    listed_chars, listed_offsets, listed_states = _flatten({c: [(i, 0.0) for i in v] for c, v in listed.items()})
    emit_chars, emit_offsets, emit_states, emit_logp = _flatten({c: sorted(v) for c, v in emitted.items()}, values=True)
    return HmmTables(
        states,
        np.array([start[s] for s in states]),
        trans_matrix,
        allowed,
        listed_chars,
        listed_offsets,
        listed_states,
        emit_chars,
        emit_offsets,
        emit_states,
        emit_logp,
    )


def _flatten(rows: Mapping[str, list[tuple[int, float]]], values: bool = False) -> tuple[np.ndarray, ...]:
    chars = sorted(rows, key=ord)
    offsets = np.cumsum([0] + [len(rows[c]) for c in chars], dtype=np.int64)
    states = np.array([i for c in chars for i, _ in rows[c]], dtype=np.int16)
    out = (np.array([ord(c) for c in chars], dtype=np.uint32), offsets, states)
    return (*out, np.array([v for c in chars for _, v in rows[c]], dtype=np.float64)) if values else out


class PossegHmm:
    def __init__(self, tables: HmmTables) -> None:
        self.tables = tables
        self.has_next = tables.allowed.any(axis=1)
        self.every_state = np.arange(len(tables.states))
        self._rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _char(self, char: str) -> tuple[np.ndarray, np.ndarray]:
        """The states jieba allows for `char` (all when it lists none, as its
        states.get(char, all_states)) and every state's emission log-probability of it."""
        row = self._rows.get(char)
        if row is None:
            t = self.tables
            allowed = _row(t.listed_chars, t.listed_offsets, t.listed_states, char)
            emission = np.full(len(t.states), MIN_FLOAT)
            emitting = _row(t.emit_chars, t.emit_offsets, t.emit_states, char)
            if emitting is not None:
                emission[emitting] = _row(t.emit_chars, t.emit_offsets, t.emit_logp, char)
            row = self._rows[char] = (self.every_state if allowed is None else allowed.astype(np.int64), emission)
        return row

    def viterbi(self, text: str) -> list[State]:
        """The state of each character of `text`: jieba.posseg.viterbi's route."""
        live, emission = self._char(text[0])
        scores = self.tables.start[live] + emission[live]
        back: list[tuple[np.ndarray, np.ndarray]] = []
        for char in text[1:]:
            prev, prev_scores = live[self.has_next[live]], scores[self.has_next[live]]
            expected = np.flatnonzero(self.tables.allowed[prev].any(axis=0))
            listed, emission = self._char(char)
            live = np.intersect1d(listed, expected, assume_unique=True)
            if live.size == 0:
                live = expected if expected.size else self.every_state
            totals = (prev_scores[:, None] + self.tables.trans[np.ix_(prev, live)]) + emission[live]
            best = totals.argmax(axis=0)
            scores = totals[best, np.arange(live.size)]
            back.append((live, prev[best]))
        state = int(live[scores.argmax()])
        route = [state]
        for states, came_from in reversed(back):
            state = int(came_from[np.searchsorted(states, state)])
            route.append(state)
        return [self.tables.states[i] for i in reversed(route)]


def _row(chars: np.ndarray, offsets: np.ndarray, values: np.ndarray, char: str) -> np.ndarray | None:
    i = int(np.searchsorted(chars, ord(char)))
    if i == len(chars) or int(chars[i]) != ord(char):
        return None
    return values[offsets[i] : offsets[i + 1]]


# Loading: the cached arrays, else jieba's modules (then cached for the next process).


def load_hmm() -> PossegHmm:
    try:
        path: Path | None = cache_path()
    except OSError:  # jieba installed without its .py tables (a frozen app): nothing to key on
        path = None
    if path is not None:
        with contextlib.suppress(Exception):  # missing, stale or damaged: built again below
            return PossegHmm(read_tables(path))
    tables = _tables_from_jieba()
    if path is not None:
        with contextlib.suppress(OSError):  # an unwritable cache: the next process builds them again
            write_tables(tables, path)
    return PossegHmm(tables)


def cache_path() -> Path:
    """Named by what invalidates it: jieba's version, its emission table's size and mtime."""
    import jieba

    from rag.lexicon import cache_root

    st = (_posseg_folder() / "prob_emit.py").stat()
    return cache_root() / f"jieba-posseg-hmm-{jieba.__version__}-{st.st_size}-{st.st_mtime_ns}-v{FORMAT_VERSION}"


def write_tables(tables: HmmTables, path: Path) -> None:
    """Into a temp directory beside `path`, then renamed: never half a table set."""
    import shutil

    from rag.lexicon import install_directory

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-posseg-", dir=path.parent))
    try:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(tables, name), allow_pickle=False)
        meta = {"format": FORMAT_VERSION, "states": [list(s) for s in tables.states], "sha256": _digest(tables)}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        install_directory(tmp, path, read_tables)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_tables(path: Path) -> HmmTables:
    """The tables at `path`; raises (ValueError, OSError…) if they are damaged or foreign."""
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    states = tuple((str(a), str(b)) for a, b in meta["states"])
    tables = HmmTables(states, **{name: np.load(path / f"{name}.npy", allow_pickle=False) for name in _ARRAYS})
    if meta.get("format") != FORMAT_VERSION or meta.get("sha256") != _digest(tables):
        raise ValueError(f"damaged posseg HMM tables in {path}")
    return tables


def _digest(tables: HmmTables) -> str:
    digest = hashlib.sha256(json.dumps(tables.states).encode())
    for name in _ARRAYS:
        array = getattr(tables, name)
        digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _tables_from_jieba() -> HmmTables:
    posseg = sys.modules.get("jieba.posseg")
    if posseg is not None:  # imported by someone already: its tables are in memory
        return tables_from_jieba(posseg.char_state_tab_P, posseg.start_P, posseg.trans_P, posseg.emit_P)
    folder = _posseg_folder()
    return tables_from_jieba(
        _module(folder, "char_state_tab").P,
        _module(folder, "prob_start").P,
        _module(folder, "prob_trans").P,
        _module(folder, "prob_emit").P,
    )


def _posseg_folder() -> Path:
    import jieba

    return Path(jieba.__file__).parent / "posseg"


def _module(folder: Path, name: str) -> ModuleType:
    """Execute jieba/posseg/<name>.py as a standalone module (its cached bytecode is used):
    importing it as jieba.posseg.<name> would run the package's slow __init__."""
    spec = importlib.util.spec_from_file_location(f"rag._jieba_posseg_{name}", folder / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {folder / name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
