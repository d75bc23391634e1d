"""One output policy for every notebook, kept by a tool: stored without outputs (nbstripout),
re-executed by nbval (`pytest --nbval-lax notebooks`). And each reads as a course chapter.

Inside a git checkout the checks read what git stores (the index: the committed notebook plus anything
staged), not the working copy, so outputs an attendee's JupyterLab saved do not fail them; the git filter
that course.py installs strips outputs on `git add`. A notebook git does not track yet is read from disk.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def stored_text(path: Path, repo: Path = REPO) -> str:
    """The notebook as git stores it (`git show :path`), or the file when git does not track it."""
    rel = path.relative_to(repo).as_posix()
    try:
        shown = subprocess.run(["git", "show", f":{rel}"], cwd=repo, capture_output=True)
    except OSError:  # no git: a downloaded copy
        return path.read_text(encoding="utf-8")
    return shown.stdout.decode("utf-8") if shown.returncode == 0 else path.read_text(encoding="utf-8")


def test_the_course_has_its_chapters():
    names = [p.name for p in NOTEBOOKS]
    assert all(re.match(r"\d\d-[a-z0-9-]+\.ipynb$", n) for n in names), names
    assert "03-openvino.ipynb" in names


def test_checks_read_what_git_stores_not_saved_outputs(tmp_path):
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "HOME": str(tmp_path)}
    nb = tmp_path / "notebooks" / "03-x.ipynb"
    nb.parent.mkdir()
    nb.write_text(NOTEBOOKS[0].read_text(encoding="utf-8"), encoding="utf-8")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, env=env, capture_output=True)
    committed = nb.read_text(encoding="utf-8")
    saved = nbformat.reads(committed, as_version=4)
    code = next(c for c in saved.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="saved in a session\n")]
    nbformat.write(saved, str(nb))
    assert stored_text(nb, tmp_path) == committed  # the working copy's outputs are not what is checked
    new = tmp_path / "notebooks" / "05-new.ipynb"
    new.write_text("{}", encoding="utf-8")
    assert stored_text(new, tmp_path) == "{}"  # untracked: read from disk


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path, tmp_path):
    stored = tmp_path / path.name
    stored.write_text(stored_text(path), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", "--keep-id", str(stored)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"{path.name} is stored with outputs; run `make strip`." + result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_as_a_chapter(path):
    nb = nbformat.reads(stored_text(path), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# Chapter")
    assert re.search(r"hardware", first.source, re.I), "the first cell says what hardware the chapter wants"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "trust_remote_code" not in code
    assert not re.search(r"urlretrieve|requests\.get|wget |curl ", code), "no helper code downloaded at run time"
    assert "chat_widget(" in code, "each chapter ends in the chat widget"
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "a parameters cell reads the environment"
    assert "import *" not in code
