"""What `make run` installs (`pip install -e .`, no extras) must cover what the default path
imports: indexing an article, asking in both scripts, building the API app. A package only an
extra brings (as `[test]`'s and `[train]`'s are in the test environment) would pass every other
test here and fail on a fresh machine: the default path runs here with every package outside
the plain install's closure made unimportable, as on that machine (a library's optional
import, bm25s's of scipy, falls back as it would there)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DEFAULT_PATH = """
import importlib.abc, json, sys
from pathlib import Path

class NotInstalled(importlib.abc.MetaPathFinder):
    blocked = frozenset(json.loads(sys.argv[3]))

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from rag.cli import main

corpus, index = Path(sys.argv[1]), Path(sys.argv[2])
assert main(["--index", str(index), "index", str(corpus)]) == 0
assert main(["--index", str(index), "ask", "然乌村的党支部书记是谁？"]) == 0
assert main(["--index", str(index), "ask", "然烏村的黨支部書記是誰？"]) == 0
assert main(["--index", str(index), "add", *sys.argv[4:]]) == 0  # every file format's parser
from api.app import create_app
from api.settings import ApiSettings
create_app(ApiSettings(index_dir=index))
"""


def base_closure(distribution: str) -> set[str]:
    """`distribution` and everything its requirements pull in: its own extras left out, the
    extras its dependencies ask of theirs (justext's `lxml[html_clean]`) followed."""
    seen: set[tuple[str, str]] = set()
    pending = [(distribution, "")]
    while pending:
        name, extra = pending.pop()
        name = canonicalize_name(name)
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                pending += [(requirement.name, wanted) for wanted in ("", *requirement.extras)]
    return {name for name, _ in seen}


def test_the_default_path_runs_with_only_what_a_plain_install_brings(tmp_path: Path) -> None:
    installed = base_closure("rag-zh")
    blocked = sorted(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in distributions} & installed
    )
    assert "torch" in blocked and "numpy" not in blocked  # the closure is computed, not empty or everything
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "news.txt").write_text("然烏村的黨支部書記\n\n八宿縣然烏鎮然烏村黨支部書記蔣雄帶領群眾發展旅遊。\n", encoding="utf-8")
    uploads = formats_to_add(tmp_path / "uploads")
    done = subprocess.run(
        [sys.executable, "-c", DEFAULT_PATH, str(corpus), str(tmp_path / "index"), json.dumps(blocked), *map(str, uploads)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "蔣雄" in done.stdout or "蒋雄" in done.stdout
    reported = {line.split(": ")[0]: line for line in done.stdout.splitlines() if ": " in line}
    for upload in uploads:
        assert reported[upload.name].endswith("1 article")  # parsed, its format and article count reported


def formats_to_add(folder: Path) -> list[Path]:
    """One small file per format `rag add` reads (made with test-only tools where need be)."""
    import docx

    from tests.test_formats import make_pdf

    folder.mkdir()
    article = "林芝市开展“三访”工作。巴宜区组织党员干部走访群众。"
    (folder / "page.html").write_text(f"<html><head><title>三访</title></head><body><article><h1>三访</h1><p>{article}</p></article></body></html>", encoding="utf-8")
    (folder / "notes.md").write_text(f"# 三访\n\n{article}\n", encoding="utf-8")
    (folder / "gbk.txt").write_bytes(f"三访\n\n{article}\n".encode("gb18030"))
    (folder / "rows.jsonl").write_text(json.dumps({"title": "三访", "text": article}, ensure_ascii=False) + "\n", encoding="utf-8")
    document = docx.Document()
    document.add_heading("三访", 1)
    document.add_paragraph(article)
    document.save(str(folder / "farm.docx"))
    (folder / "report.pdf").write_bytes(make_pdf([["三访", article]]))
    return sorted(folder.iterdir())
