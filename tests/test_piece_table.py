"""The reader's tokenizer over the memory-mapped piece table gives exactly the ids and
offsets of the dict-based tokenizer, and a missing or damaged table never changes them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rag.reader.e5_format import E5File
from rag.reader.piece_table import load_piece_table, open_table, table_dir
from rag.reader.tokenizer import E5Tokenizer

CMRC = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_trial.json"
EDGE_CASES = ["", " ", "  两个  空格 ", "ＡＢＣ全角１２３", "3.5%的增长", "Tibet 西藏 Lhasa", "😀表情😀", "\u00a0nbsp", "ß straße", "x" * 300, "龘" * 40]


@pytest.fixture(scope="module")
def model() -> E5File:
    return E5File()


def texts() -> list[str]:
    picked = list(EDGE_CASES)
    if CMRC.exists():
        data = json.loads(CMRC.read_text(encoding="utf-8"))
        contexts = [p["context"] for a in data["data"] for p in a["paragraphs"]]
        questions = [q["question"] for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]
        rng = random.Random(3)
        picked += [c[:400] for c in rng.sample(contexts, 40)] + rng.sample(questions, 200)
    return picked


def test_table_and_dict_tokenise_identically(model: E5File) -> None:
    with_table, with_dict = E5Tokenizer(model), E5Tokenizer(model, piece_table=False)
    assert with_table._table is not None and with_dict._table is None
    for text in texts():
        assert with_table.encode(text) == with_dict.encode(text), text


def test_a_damaged_table_is_rebuilt(model: E5File, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its own cache folder: the session's table is mapped by the readers of other tests.
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    folder = table_dir(model)
    assert load_piece_table(model) is not None
    ids = np.load(folder / "ids.npy")
    np.save(folder / "ids.npy", np.roll(ids, 1))  # every id wrong: the probes catch it
    with pytest.raises(ValueError, match="probe"):
        open_table(folder, model)
    assert load_piece_table(model) is not None  # rebuilt
    assert E5Tokenizer(model).encode("拉萨市有多少个村？") == E5Tokenizer(model, piece_table=False).encode("拉萨市有多少个村？")


def test_an_unwritable_cache_falls_back_to_the_dict(model: E5File, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    monkeypatch.setenv("RAG_CACHE_DIR", str(blocked))
    tokenizer = E5Tokenizer(model)
    assert tokenizer._table is None
    assert tokenizer.encode("林芝市的地区生产总值") == E5Tokenizer(model, piece_table=False).encode("林芝市的地区生产总值")
