"""A memory-mapped, hashed copy of jieba's default dictionary.

`jieba.initialize()` unmarshals a 500k-entry prefix dictionary (~0.9 s) and importing
`jieba.posseg` re-parses dict.txt for tags (~0.4 s), yet segmenting a text only ever looks
up substrings of that text. This module keeps jieba's data as sorted 64-bit hashes with
their frequency and POS tag in .npy files, memory-mapped, so the entries a short text needs
cost one vectorised hash pass and one `np.searchsorted`.

Collisions: keys are distinct 64-bit hashes (checked when building); a substring that is
not a key matches a key's hash with probability ~5e5 / 2**64 ≈ 3e-14, which we accept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NO_TAG = 255  # tag id of a key that is only a prefix (dict.txt gives it no tag)
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1
_ARRAYS = {"hashes": np.uint64, "freqs": np.uint32, "tags": np.uint8}
_N_PROBES = 16
_STALE_TEMP_S = 3600


class LexiconError(Exception):
    """The lexicon files are missing, stale or damaged."""


@dataclass(frozen=True)
class Lexicon:
    """jieba's prefix dictionary FREQ, its `total` and dict.txt's POS tags, hashed."""

    hashes: np.ndarray  # sorted uint64 key hashes
    freqs: np.ndarray  # uint32, aligned with hashes (0 for a prefix-only key)
    tag_ids: np.ndarray  # uint8 index into tag_names, NO_TAG for none
    tag_names: tuple[str, ...]
    total: int
    max_len: int

    def substrings(self, text: str) -> tuple[dict[str, int], dict[str, str]]:
        """({substring: freq}, {substring: tag}) for every substring of `text` that is a key:
        all that jieba's DAG, route and search-mode n-gram checks ever look up for `text`."""
        if not text:
            return {}, {}
        hashed = substring_hashes(code_points(text), self.max_len)
        found = self._find(np.concatenate(hashed))
        seg_starts = np.cumsum([0] + [len(h) for h in hashed[:-1]])
        lengths = np.searchsorted(seg_starts, found[0], side="right")
        starts = found[0] - seg_starts[lengths - 1]
        return self._entries([text[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)], found[1])

    def lookup(self, words: Iterable[str]) -> tuple[dict[str, int], dict[str, str]]:
        """({word: freq}, {word: tag}) for those of `words` that are keys."""
        unique = sorted({w for w in words if 0 < len(w) <= self.max_len})
        if not unique:
            return {}, {}
        found = self._find(hash_words(unique))
        return self._entries([unique[i] for i in found[0].tolist()], found[1])

    def __contains__(self, word: object) -> bool:
        """Whether `word` is a key (a word or a word's prefix), without numpy array setup."""
        if not isinstance(word, str) or not 0 < len(word) <= self.max_len:
            return False
        h = hash_word(word)
        i = int(self.hashes.searchsorted(np.uint64(h)))
        return i < len(self.hashes) and int(self.hashes[i]) == h

    def _find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `hashes` that are keys, their row in the lexicon)."""
        rows = np.searchsorted(self.hashes, hashes)
        np.minimum(rows, len(self.hashes) - 1, out=rows)
        hit = np.flatnonzero(self.hashes[rows] == hashes)
        return hit, rows[hit]

    def _entries(self, keys: list[str], rows: np.ndarray) -> tuple[dict[str, int], dict[str, str]]:
        freqs = self.freqs[rows].tolist()
        tag_ids = self.tag_ids[rows].tolist()
        freq = dict(zip(keys, freqs, strict=True))
        tags = {k: self.tag_names[t] for k, t in zip(keys, tag_ids, strict=True) if t != NO_TAG}
        return freq, tags


# Hashing: FNV-1a over code points, then the splitmix64 finaliser (FNV alone leaves the high
# bits, which sorting and searchsorted look at first, poorly mixed). Arrays wrap mod 2**64.


def code_points(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate (e.g. from surrogateescape decoding) is one code point, as in str.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(30))) * np.uint64(_MIX1)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(_MIX2)
    return h ^ (h >> np.uint64(31))


def substring_hashes(cps: np.ndarray, max_len: int) -> list[np.ndarray]:
    """[hashes of the substrings of length n at every start, for n = 1..max_len]: the FNV
    state of length n extends that of length n-1, so each length costs one array op."""
    out = []
    h = np.full(len(cps), _FNV_OFFSET, dtype=np.uint64)
    for n in range(1, min(max_len, len(cps)) + 1):
        h = (h[: len(cps) - n + 1] ^ cps[n - 1 :]) * np.uint64(_FNV_PRIME)
        out.append(_mix(h))
    return out


def hash_words(words: list[str]) -> np.ndarray:
    """The hash of each word (vectorised per word length), in the order given."""
    out = np.empty(len(words), dtype=np.uint64)
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(words):
        by_len.setdefault(len(w), []).append(i)
    for n, idx in by_len.items():
        cps = code_points("".join(words[i] for i in idx)).reshape(len(idx), n)
        h = np.full(len(idx), _FNV_OFFSET, dtype=np.uint64)
        for j in range(n):
            h = (h ^ cps[:, j]) * np.uint64(_FNV_PRIME)
        out[idx] = _mix(h)
    return out


def sorted_hashes(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the keys' hashes sorted, the order of `keys` that sorts them) for a searchsorted
    table; LexiconError if two keys share a hash (the table could not tell them apart)."""
    hashes = hash_words(keys)
    order = np.argsort(hashes, kind="stable")
    hashes = hashes[order]
    if np.any(hashes[1:] == hashes[:-1]):
        raise LexiconError("two keys share a 64-bit hash")
    return hashes, order


def hash_word(word: str) -> int:
    """`hash_words([word])[0]` in plain Python: cheaper than numpy for one short word."""
    h = _FNV_OFFSET
    for c in word:
        h = ((h ^ ord(c)) * _FNV_PRIME) & _MASK
    h = ((h ^ (h >> 30)) * _MIX1) & _MASK
    h = ((h ^ (h >> 27)) * _MIX2) & _MASK
    return h ^ (h >> 31)


# Where the files live, and loading them.

_lock = threading.Lock()
_loaded: dict[str, Lexicon | None] = {}


def cache_root() -> Path:
    """RAG_CACHE_DIR, else $XDG_CACHE_HOME/rag-zh, else ~/.cache/rag-zh."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rag-zh"


def jieba_dict_path() -> Path:
    """jieba's default dictionary (what `jieba.Tokenizer().get_dict_file()` opens)."""
    import jieba

    return Path(jieba.__file__).parent / jieba.DEFAULT_DICT_NAME


def lexicon_dir(dict_path: Path | None = None) -> Path:
    """The lexicon's directory, named by what invalidates it: jieba's version, the dict
    file's size and mtime (a stat, not a hash: this runs on every cold start) and our format."""
    import jieba

    dict_path = dict_path or jieba_dict_path()
    st = dict_path.stat()
    return cache_root() / f"jieba-lexicon-{jieba.__version__}-{st.st_size}-{st.st_mtime_ns}-v{FORMAT_VERSION}"


def default_lexicon() -> Lexicon | None:
    """The lexicon of jieba's default dictionary, built on first use; None where it can be
    neither read nor written (callers then use jieba itself: slower, same output). Once per
    process and cache directory."""
    key = str(cache_root())
    if key in _loaded:
        return _loaded[key]
    with _lock:
        if key not in _loaded:
            _loaded[key] = _load_or_build()
        return _loaded[key]


def _load_or_build() -> Lexicon | None:
    try:
        dict_path = jieba_dict_path()
        path = lexicon_dir(dict_path)
        try:
            return open_lexicon(path)
        except Exception as e:  # missing, damaged in any way, or stale: build it again
            if path.exists():
                log.info("rebuilding the jieba lexicon at %s: %s", path, e)
        build_lexicon(dict_path, path)
        return open_lexicon(path)
    except Exception as e:  # any failure: jieba's own slow path gives the same output
        log.debug("jieba lexicon unavailable, using jieba's full dictionary: %s", e)
        return None


def open_lexicon(path: Path) -> Lexicon:
    """Memory-map the lexicon at `path`; raises (LexiconError, OSError, ValueError…) if it is damaged."""
    import jieba

    header = json.loads((path / "header.json").read_text(encoding="utf-8"))
    if header.get("format") != FORMAT_VERSION or header.get("jieba") != jieba.__version__:
        raise LexiconError(f"format {header.get('format')} / jieba {header.get('jieba')}")
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
    for name, dtype in _ARRAYS.items():
        if arrays[name].dtype != dtype or arrays[name].shape != (header["keys"],):
            raise LexiconError(f"{name}.npy: {arrays[name].dtype} {arrays[name].shape}")
    lexicon = Lexicon(
        arrays["hashes"], arrays["freqs"], arrays["tags"], tuple(header["tag_names"]), int(header["total"]), int(header["max_len"])
    )
    _check_probes(lexicon, header["probes"])
    return lexicon


def _check_probes(lexicon: Lexicon, probes: dict[str, list[Any]]) -> None:
    """A few known entries must read back: catches garbage arrays and a changed hash."""
    freq, tags = lexicon.lookup(probes)
    for word, (want_freq, want_tag) in probes.items():
        if freq.get(word) != want_freq or tags.get(word) != want_tag:
            raise LexiconError(f"probe {word!r}: {freq.get(word)} {tags.get(word)}")


# Building.


def build_lexicon(dict_path: Path, dest: Path) -> None:
    """Write the lexicon of `dict_path` to `dest` atomically: into a temp directory beside
    it, then renamed, so readers never see half a lexicon and racing builders both end
    with a whole one (the loser keeps the winner's)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-lexicon-", dir=dest.parent))
    try:
        _write(dict_path, tmp)
        install_directory(tmp, dest, open_lexicon)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temp_dirs(folder: Path) -> None:
    """What a builder killed mid-way left behind (an hour old: not a build still running)."""
    for stale in [*folder.glob(".tmp-lexicon-*"), *folder.glob(".old-lexicon-*")]:
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(stale, ignore_errors=True)


def install_directory(tmp: Path, dest: Path, check: Any) -> None:
    """Rename the finished `tmp` to `dest`. A whole `dest` (`check(dest)` does not raise:
    a racing builder's) is kept; a damaged one is moved out of the way in one step."""
    if dest.exists():
        try:
            check(dest)
            return  # a racing builder installed a whole one first: keep it, drop ours
        except Exception:  # damaged: move it out of the way in one step
            trash = Path(tempfile.mkdtemp(prefix=".old-lexicon-", dir=dest.parent))
            with contextlib.suppress(OSError):  # another process moved it first
                os.replace(dest, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, dest)
    except OSError:
        if not dest.exists():
            raise  # else a racing builder installed its copy meanwhile


def _write(dict_path: Path, out: Path) -> None:
    freq, total = _jieba_freq(dict_path)
    word_tags = _word_tags(dict_path)
    keys = list(freq)
    hashes, order = sorted_hashes(keys)
    tag_names = sorted(set(word_tags.values()))
    if len(tag_names) >= NO_TAG:
        raise LexiconError(f"{len(tag_names)} POS tags do not fit in uint8")
    tag_index = {t: i for i, t in enumerate(tag_names)}
    sorted_keys = [keys[i] for i in order.tolist()]
    freqs = np.array([freq[k] for k in sorted_keys], dtype=np.uint32)
    tags = np.array([tag_index[word_tags[k]] if k in word_tags else NO_TAG for k in sorted_keys], dtype=np.uint8)
    if int(freqs.max()) != max(freq.values()):
        raise LexiconError("a frequency does not fit in uint32")
    for name, array in (("hashes", hashes), ("freqs", freqs), ("tags", tags)):
        _write_synced(out / f"{name}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False))
    header = {
        "format": FORMAT_VERSION,
        "jieba": _jieba_version(),
        "dict_sha256": hashlib.sha256(dict_path.read_bytes()).hexdigest(),
        "total": total,
        "keys": len(sorted_keys),
        "max_len": max(map(len, sorted_keys)),
        "tag_names": tag_names,
        "probes": _probes(sorted_keys, freq, word_tags),
    }
    # Written last: a directory without it is never taken for a lexicon.
    _write_synced(out / "header.json", lambda f: f.write(json.dumps(header, ensure_ascii=False).encode("utf-8")))


def _write_synced(path: Path, write: Any) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _jieba_version() -> str:
    import jieba

    return str(jieba.__version__)


def _jieba_freq(dict_path: Path) -> tuple[dict[str, int], int]:
    """FREQ and total exactly as jieba makes them (its own parser: words and every prefix)."""
    import jieba

    with open(dict_path, "rb") as f:
        return jieba.Tokenizer.gen_pfdict(f)  # type: ignore[no-any-return]


def _word_tags(dict_path: Path) -> dict[str, str]:
    """{word: tag} as `jieba.posseg.POSTokenizer.load_word_tag` reads dict.txt (the last
    entry of a word wins); importing jieba.posseg to ask it would cost what we avoid."""
    tags: dict[str, str] = {}
    with open(dict_path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip().decode("utf-8")
            if not line:
                continue
            try:
                word, _, tag = line.split(" ")
            except ValueError as e:
                raise LexiconError(f"invalid POS dictionary entry in {dict_path} at line {lineno}: {line}") from e
            tags[word] = tag
    return tags


def _probes(sorted_keys: list[str], freq: dict[str, int], word_tags: dict[str, str]) -> dict[str, list[Any]]:
    """Entries spread over the hash order (so over the files) to check when opening."""
    step = max(1, len(sorted_keys) // _N_PROBES)
    picked = [*sorted_keys[::step], sorted_keys[-1]]
    return {k: [freq[k], word_tags.get(k)] for k in picked}
