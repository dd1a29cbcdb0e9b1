"""The memory-mapped lexicon (rag/lexicon.py) and the fast path of rag/tokenize.py that cuts
short texts with it: output identical to jieba's, without loading jieba's dictionary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import jieba
import numpy as np
import pytest

from rag import lexicon
from rag.text import match_form, sentence_spans
from rag.tokenize import pos_tag, pos_words, tokenize, words
from tests.conftest import ROOT, SEED_DIR, SHARED

CMRC = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"
DRCD = SHARED / "data" / "drcd" / "DRCD_dev.json"
QUESTION = "拉萨市有多少个村？"
EDGE_CASES = [
    "",
    " ",
    "\n",
    "\n\n \t",
    "\r\n",
    "　",  # ideographic space
    "abc",
    "ABC def 123",
    "3.5%",
    "增长3.5%，达1,234.5亿元",
    "2023年12月31日",
    "C++和C#、a-b_c.d&e+f",
    "iPhone15手机",
    "GDP是什么？",
    "😀表情👍测试🇨🇳",
    "ＡＢＣ１２３全角字符，（括号）",
    "中华人民共和国国务院总理李克强",
    "南京市长江大桥",
    "阿旺洛桑和扎西顿珠在昌都市",
    "啊" * 1500,
    "的" * 600,
    "a" * 800,
    "1" * 500,
    "x\ty\u3000z\u200b",
    "臺灣的鐵路",
]


# What the fast path computes, in a process that never loads jieba's dictionary.
_FAST_SCRIPT = """
import json, sys
import jieba
import rag.tokenize as T
from rag.text import match_form
T.FAST_PATH_BUDGET_CHARS = 10**12  # keep every text on the fast path
texts = json.loads(open(sys.argv[1], encoding="utf-8", errors="surrogatepass").read())
out = []
for t in texts:
    assert T._small(t) is not None, t
    form = match_form(t)
    out.append({
        "tokenize": T.tokenize(t),
        "words": T.words(t),
        "words_no_hmm": T.words(t, hmm=False),
        "pos_words": T.pos_words(t),
        "pos_tag": T.pos_tag(t),
        "search_cut": T._search_cut(form),
        "cut": T._cut(form, True),
        "cut_no_hmm": T._cut(form, False),
        "pos_tag_form": T.pos_tag(form),
    })
out.append({"initialized": jieba.dt.initialized, "posseg": "jieba.posseg" in sys.modules})
sys.stdout.write(json.dumps(out, ensure_ascii=True))
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """RAG_CACHE_DIR at a temp dir holding a built lexicon, for this module's tests."""
    path = tmp_path_factory.mktemp("rag-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAG_CACHE_DIR", str(path))
        lexicon._loaded.clear()
        assert lexicon.default_lexicon() is not None
        yield path
    lexicon._loaded.clear()


@pytest.fixture
def fresh_cache(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the built cache, to damage."""
    path = tmp_path / "cache"
    shutil.copytree(cache_dir, path)
    monkeypatch.setenv("RAG_CACHE_DIR", str(path))
    lexicon._loaded.clear()
    return path


@pytest.fixture(scope="module")
def full_jieba() -> Any:
    jieba.setLogLevel("WARNING")
    jieba.initialize()
    import_module("jieba.posseg")  # as an attribute of the jieba module
    return jieba


def _texts() -> list[str]:
    texts = [s for path in sorted(SEED_DIR.glob("*.txt")) for s in _sentences(path.read_text(encoding="utf-8"))]
    if CMRC.exists():
        paragraphs = [p for article in json.loads(CMRC.read_text(encoding="utf-8"))["data"] for p in article["paragraphs"]]
        texts += [q["question"] for p in paragraphs for q in p["qas"]][:300]
        texts += [s for p in paragraphs[:25] for s in _sentences(p["context"])]
    if DRCD.exists():
        paragraphs = [p for article in json.loads(DRCD.read_text(encoding="utf-8"))["data"] for p in article["paragraphs"]]
        questions = [q["question"] for p in paragraphs for q in p["qas"]][:300]
        texts += [match_form(q) for q in questions] + questions[:100]  # raw too: person_names tags the raw sentence
    return texts + EDGE_CASES


def _sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def _run_fast_path(texts: list[str], cache: Path, tmp_path: Path) -> list[dict[str, Any]]:
    src = tmp_path / "texts.json"
    src.write_text(json.dumps(texts, ensure_ascii=True), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAG_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _FAST_SCRIPT, str(src)], cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _pairs(rows: list[Any]) -> list[tuple[str, str]]:
    return [(w, f) for w, f in rows]


def test_lexicon_holds_jiebas_dictionary_exactly(cache_dir: Path, full_jieba: Any) -> None:
    lex = lexicon.default_lexicon()
    assert lex is not None
    freq, tags = lex.lookup(full_jieba.dt.FREQ)
    assert freq == full_jieba.dt.FREQ
    assert tags == full_jieba.posseg.dt.word_tag_tab
    assert lex.total == full_jieba.dt.total
    assert len(lex.hashes) == len(full_jieba.dt.FREQ)
    assert all(w in lex for w in list(full_jieba.dt.FREQ)[::97])
    assert not any(w in lex for w in ("拉萨市有", "的的的", "xyz", "", "个村"))


def test_substrings_are_the_texts_dictionary_entries(cache_dir: Path, full_jieba: Any) -> None:
    lex = lexicon.default_lexicon()
    assert lex is not None
    for text in [
        QUESTION,
        "中华人民共和国国务院总理李克强",
        "的" * 40,
        "😀表情ＡＢＣ",
        "\ud800孤立",
        "",
    ]:  # a lone surrogate: match_form rejects it, the lexicon need not
        subs = {text[i:j] for i in range(len(text)) for j in range(i + 1, len(text) + 1)}
        freq, tags = lex.substrings(text)
        assert freq == {s: full_jieba.dt.FREQ[s] for s in subs if s in full_jieba.dt.FREQ}
        assert tags == {s: full_jieba.posseg.dt.word_tag_tab[s] for s in subs if s in full_jieba.posseg.dt.word_tag_tab}


def test_fast_path_equals_jieba_on_corpus_and_edge_cases(cache_dir: Path, full_jieba: Any, tmp_path: Path) -> None:
    texts = _texts()
    fast = _run_fast_path(texts, cache_dir, tmp_path)
    assert fast.pop() == {"initialized": False, "posseg": False}
    mismatches = []
    for text, got in zip(texts, fast, strict=True):
        form = match_form(text)
        want = {
            # rag.tokenize's public functions on jieba's full dictionary (it is loaded here)...
            "tokenize": tokenize(text),
            "words": words(text),
            "words_no_hmm": words(text, hmm=False),
            "pos_words": pos_words(text),
            "pos_tag": pos_tag(text),
            # ...and jieba itself.
            "search_cut": full_jieba.lcut_for_search(form),
            "cut": full_jieba.lcut(form, HMM=True),
            "cut_no_hmm": full_jieba.lcut(form, HMM=False),
            "pos_tag_form": [(p.word, p.flag) for p in full_jieba.posseg.lcut(form)],
        }
        assert want["pos_tag"] == [(p.word, p.flag) for p in full_jieba.posseg.lcut(text)]
        got = {k: _pairs(v) if k.startswith("pos") else v for k, v in got.items()}
        mismatches += [(text[:40], k) for k in want if got[k] != want[k]]
    assert len(texts) > 1000
    assert mismatches == []


def test_cold_question_does_not_load_jiebas_dictionary(cache_dir: Path, full_jieba: Any) -> None:
    code = (
        "import sys, json, jieba\n"
        "from rag.tokenize import tokenize, pos_words\n"
        "from rag.verify import person_names\n"
        f"q = {QUESTION!r}\n"
        "out = [tokenize(q), pos_words(q), person_names('党支部书记阿旺洛桑说')]\n"
        "print(json.dumps([out, jieba.dt.initialized, 'jieba.posseg' in sys.modules]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAG_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120, check=True)
    (tokens, pairs, names), initialized, posseg_loaded = json.loads(done.stdout)
    assert (initialized, posseg_loaded) == (False, False)
    assert tokens == tokenize(QUESTION)
    assert _pairs(pairs) == pos_words(QUESTION)
    assert names == [
        w for w, f in ((p.word, p.flag) for p in full_jieba.posseg.lcut("党支部书记阿旺洛桑说")) if f.startswith("nr") and len(w) >= 2
    ]


def _only_lexicon(cache: Path) -> Path:
    (path,) = [p for p in cache.iterdir() if p.name.startswith("jieba-lexicon-")]
    return path


def _assert_good(lex: lexicon.Lexicon | None, full_jieba: Any) -> None:
    assert lex is not None
    freq, tags = lex.substrings(QUESTION)
    subs = {QUESTION[i:j] for i in range(len(QUESTION)) for j in range(i + 1, len(QUESTION) + 1)}
    assert freq == {s: full_jieba.dt.FREQ[s] for s in subs if s in full_jieba.dt.FREQ}
    assert tags == {s: full_jieba.posseg.dt.word_tag_tab[s] for s in subs if s in full_jieba.posseg.dt.word_tag_tab}


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "hashes.npy").write_bytes((d / "hashes.npy").read_bytes()[:1000]),  # truncated
        lambda d: (d / "tags.npy").unlink(),  # missing
        lambda d: (d / "header.json").write_text("{not json", encoding="utf-8"),
        lambda d: (d / "header.json").unlink(),  # a directory left without its header
        lambda d: np.save(d / "freqs.npy", np.zeros(len(np.load(d / "freqs.npy")), dtype=np.uint32)),  # wrong values
        lambda d: np.save(d / "hashes.npy", np.arange(3, dtype=np.uint64)),  # wrong shape
        lambda d: (d / "freqs.npy").write_bytes(b"garbage"),
    ],
    ids=["truncated", "missing-array", "bad-header", "no-header", "zeroed-freqs", "short-hashes", "garbage-npy"],
)
def test_damaged_lexicon_is_rebuilt(fresh_cache: Path, full_jieba: Any, damage: Any) -> None:
    damage(_only_lexicon(fresh_cache))
    _assert_good(lexicon.default_lexicon(), full_jieba)
    lexicon._loaded.clear()  # and what was rebuilt reads back next time
    lexicon.open_lexicon(_only_lexicon(fresh_cache))


def test_unwritable_cache_falls_back_to_jieba(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_jieba: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    monkeypatch.setenv("RAG_CACHE_DIR", str(blocker / "cache"))
    lexicon._loaded.clear()
    assert lexicon.default_lexicon() is None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = f"import jieba; from rag.tokenize import tokenize, pos_words; print(repr((tokenize({QUESTION!r}), pos_words({QUESTION!r}), jieba.dt.initialized)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == repr((tokenize(QUESTION), pos_words(QUESTION), True))  # jieba's own dictionary, same words
    lexicon._loaded.clear()


def test_racing_builders_both_get_a_whole_lexicon(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAG_CACHE_DIR": str(tmp_path / "cache")}
    code = f"import rag.tokenize as T; assert T.default_lexicon() is not None; print(T.tokenize({QUESTION!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == f"{tokenize(QUESTION)}\n"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [_only_lexicon(tmp_path / "cache").name]  # no temp dirs left


def test_default_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lexicon.cache_root() == tmp_path / "xdg" / "rag-zh"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert lexicon.cache_root() == tmp_path / "home" / ".cache" / "rag-zh"
    name = lexicon.lexicon_dir().name
    assert name.startswith(f"jieba-lexicon-{jieba.__version__}-{lexicon.jieba_dict_path().stat().st_size}-")
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "mine"))
    assert lexicon.lexicon_dir().parent == tmp_path / "mine"


def test_seam_checks_use_the_same_keys(cache_dir: Path, full_jieba: Any) -> None:
    from rag.ingest import _jieba_prefixes

    lex = lexicon.default_lexicon()
    assert lex is not None
    probes = ["快递企业", "快递企", "企业", "拉萨市有", "业", "😀", "ab", *list(full_jieba.dt.FREQ)[:2000:7]]
    assert [p in lex for p in probes] == [p in full_jieba.dt.FREQ for p in probes]
    keys = _jieba_prefixes()
    assert [p in keys for p in probes] == [p in full_jieba.dt.FREQ for p in probes]


def test_spent_budget_switches_to_jiebas_dictionary(cache_dir: Path, full_jieba: Any) -> None:
    """Past the budget a process loads jieba's dictionary (and then words added to it count)."""
    long_text = "藏东乡村处处锣鼓喧天，喜庆热闹。" * 20
    code = (
        "import json, jieba\n"
        "import rag.tokenize as T\n"
        "T.FAST_PATH_BUDGET_CHARS = 200\n"
        f"out = [T.tokenize({QUESTION!r}), jieba.dt.initialized, T.tokenize({long_text!r}), jieba.dt.initialized]\n"
        "jieba.add_word('拉萨市有', 10**6)\n"
        f"out.append(T.tokenize({QUESTION!r}))\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAG_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120, check=True)
    short, before, long, after, added = json.loads(done.stdout)
    assert (short, before, long, after) == (tokenize(QUESTION), False, tokenize(long_text), True)
    assert "拉萨市有" in added
