"""The numpy posseg HMM against jieba's own Viterbi (the reference), and its cached tables."""

from __future__ import annotations

import random
import re
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag import posseg_hmm
from rag.posseg_hmm import PossegHmm, load_hmm, read_tables, tables_from_jieba, write_tables

SEED_DIR = Path(__file__).resolve().parent.parent / "seeds"


@pytest.fixture(scope="module")
def jieba_posseg() -> Any:
    return import_module("jieba.posseg")


def _runs(jieba_posseg: Any) -> list[str]:
    """What the tagger hands the HMM (runs of Han characters cut from real text, 1–8 long),
    plus random strings of characters jieba lists, with some it does not."""
    text = "".join(path.read_text(encoding="utf-8") for path in sorted(SEED_DIR.glob("*.txt")))
    rng = random.Random(7)
    runs = re.findall("[\u4e00-\u9fd5]+", text)
    out = []
    for run in rng.sample(runs, min(600, len(runs))):
        length = rng.choice((1, 2, 3, 5, 8))
        start = rng.randrange(max(1, len(run) - length + 1))
        out.append(run[start : start + length])
    listed = sorted(jieba_posseg.char_state_tab_P)
    for _ in range(600):
        chars = [rng.choice(listed) if rng.random() < 0.85 else chr(rng.randint(0x3400, 0x9FFF)) for _ in range(rng.randint(1, 12))]
        out.append("".join(chars))
    return out


def _jieba_route(jieba_posseg: Any, text: str) -> list[tuple[str, str]]:
    p = jieba_posseg
    return list(p.viterbi(text, p.char_state_tab_P, p.start_P, p.trans_P, p.emit_P)[1])


def test_viterbi_route_equals_jiebas(jieba_posseg: Any, tmp_path: Path) -> None:
    p = jieba_posseg
    tables = tables_from_jieba(p.char_state_tab_P, p.start_P, p.trans_P, p.emit_P)
    write_tables(tables, tmp_path / "hmm")
    from_files = PossegHmm(read_tables(tmp_path / "hmm"))
    in_memory = PossegHmm(tables)
    runs = _runs(p)
    want = [_jieba_route(p, run) for run in runs]
    assert [in_memory.viterbi(run) for run in runs] == want
    assert [from_files.viterbi(run) for run in runs] == want
    assert len(runs) == 1200 and len({tuple(r) for r in want}) > 500  # varied routes, not one repeated


def test_ties_go_where_jiebas_max_sends_them(jieba_posseg: Any) -> None:
    # Equal scores everywhere: jieba's max((prob, state)) then picks the greatest state.
    p = jieba_posseg
    flat_start = dict.fromkeys(p.start_P, -1.0)
    flat_trans = {s: dict.fromkeys(targets, -1.0) for s, targets in p.trans_P.items()}
    flat_emit = {s: {} for s in p.emit_P}
    hmm = PossegHmm(tables_from_jieba(p.char_state_tab_P, flat_start, flat_trans, flat_emit))
    for text in ("张三", "中华人民", "龘"):
        assert hmm.viterbi(text) == list(p.viterbi(text, p.char_state_tab_P, flat_start, flat_trans, flat_emit)[1])


def test_damaged_cached_tables_are_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jieba_posseg: Any) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    first = load_hmm()
    path = posseg_hmm.cache_path()
    assert path.is_dir() and path.parent == tmp_path
    logp = path / "emit_logp.npy"
    values = np.load(logp)
    values[100] += 1.0  # a plausible-looking value: only the digest notices
    np.save(logp, values)
    with pytest.raises(ValueError, match="damaged"):
        read_tables(path)
    rebuilt = load_hmm()
    read_tables(path)  # whole again
    run = "扎西次仁"
    assert rebuilt.viterbi(run) == first.viterbi(run) == _jieba_route(jieba_posseg, run)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
