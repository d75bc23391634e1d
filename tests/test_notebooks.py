"""One output policy for every notebook, kept by a tool: stored without outputs (nbstripout),
re-executed by nbval (`pytest --nbval-lax notebooks`). And each reads as a course chapter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_course_has_its_chapters():
    names = [p.name for p in NOTEBOOKS]
    assert all(re.match(r"\d\d-[a-z0-9-]+\.ipynb$", n) for n in names), names
    assert "03-openvino.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nbstripout = Path(sys.executable).with_name("nbstripout")
    result = subprocess.run([str(nbstripout), "--verify", "--keep-id", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"{path.name} has outputs; run `make strip`. {result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_as_a_chapter(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# Chapter")
    assert re.search(r"hardware", first.source, re.I), "the first cell says what hardware the chapter wants"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "trust_remote_code" not in code
    assert not re.search(r"urlretrieve|requests\.get|wget |curl ", code), "no helper code downloaded at run time"
    assert "chat_widget(" in code, "each chapter ends in the chat widget"
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "a parameters cell reads the environment"
    assert "import *" not in code
