"""Every chapter 01-04 follows one template, and its pictures are drawn by code.

The template: what you will learn and the hardware, a parameters cell, numbered sections, an "under the
hood" section whose code uses the runtime itself (not phi3_helpers), Task Manager, troubleshooting,
exercises with expected outcomes, "check your understanding" with folded answers, a recap, a closing cell.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib.image as mpimg
import nbformat
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (REPO / "notebooks").glob("0[1-4]-*.ipynb"))
RUNTIMES = ("openvino", "openvino_genai", "onnxruntime_genai", "optimum.intel")


def cells(path):
    return nbformat.read(path, as_version=4).cells


def headings(path):
    return [line for c in cells(path) if c.cell_type == "markdown" for line in c.source.splitlines()
            if line.startswith("## ")]


def section(path, title):
    """The cells from the heading containing ``title`` up to the next ``## `` heading."""
    out, inside = [], False
    for c in cells(path):
        if c.cell_type == "markdown" and c.source.lstrip().startswith("## "):
            inside = title.lower() in c.source.splitlines()[0].lower()
        if inside:
            out.append(c)
    return out


def test_there_are_four_chapters():
    assert [p.name[:2] for p in CHAPTERS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_the_template_sections(path):
    first = cells(path)[0].source
    assert "**What you will learn**" in first and "**Hardware" in first
    heads = [h.lower() for h in headings(path)]
    for wanted in ("parameters", "under the hood", "task manager", "troubleshooting", "exercises",
                   "check your understanding", "recap"):
        assert any(wanted in h for h in heads), f"{path.name} has no '{wanted}' section"
    numbered = [h for h in headings(path) if re.match(r"## \d+ · ", h)]
    assert len(numbered) >= 6, "the lesson is in numbered sections"
    assert [int(re.match(r"## (\d+)", h).group(1)) for h in numbered] == list(range(1, len(numbered) + 1))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_under_the_hood_uses_the_runtime_itself(path):
    code = [c.source for c in section(path, "under the hood") if c.cell_type == "code"]
    raw = [src for src in code if any(re.search(rf"^\s*(import|from) {re.escape(r)}\b", src, re.M) for r in RUNTIMES)]
    assert raw, f"{path.name}: no under-the-hood cell imports a runtime"
    for src in raw:
        assert "phi3_helpers" not in src, "an under-the-hood cell is what an attendee writes at home"
        body = [line for line in src.splitlines() if line.strip() and not re.match(r"(import|from) ", line)]
        assert len(body) <= 16, "a short cell: the runtime's API, not a program"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_exercises_and_questions(path):
    exercises = "\n".join(c.source for c in section(path, "exercises"))
    assert 2 <= len(re.findall(r"^\d\. ", exercises, re.M)) <= 3
    assert exercises.count("*Expected") >= 2, "each exercise says what to expect"
    check = "\n".join(c.source for c in section(path, "check your understanding"))
    assert len(re.findall(r"^\d\. ", check, re.M)) == 3
    assert check.count("<details>") == 3 and check.count("</details>") == 3, "answers are folded away"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_private_attributes_and_short_lines(path):
    for c in cells(path):
        if c.cell_type == "code":
            assert not re.search(r"\._[a-z]", c.source), f"private attribute in {path.name}: {c.source[:80]}"
        assert all(len(line) <= 120 for line in c.source.splitlines()), f"a line over 120 chars in {path.name}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_parameter_cell_maps_the_device_vocabulary(path):
    params = [c for c in cells(path) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    src = params[0].source
    assert re.search(r'DEVICE = os\.environ\.get\("PHI3_DEVICE", "AUTO"\)\.upper\(\)', src)
    assert "print(" in src, "the cell says what the chapter does with DEVICE"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_slow_cells_say_what_they_cost(path):
    nb = cells(path)
    slow = re.compile(r"\b(load\(|export_openvino\(|bench\.run\(|resolve_model\(MODEL\))")
    for i, c in enumerate(nb):
        if c.cell_type == "code" and slow.search(c.source) and "resolve_model(MODEL), " not in c.source:
            before = "\n".join(x.source for x in nb[max(0, i - 3):i] if x.cell_type == "markdown")
            first_load = not any(slow.search(x.source) for x in nb[:i] if x.cell_type == "code")
            if first_load:
                assert "Cost" in before, f"{path.name}: no cost note before the first slow cell {c.source[:60]!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_closes_what_it_loaded(path):
    last = cells(path)[-1]
    assert last.cell_type == "code" and "llm.close()" in last.source and "Shut Down Kernel" in last.source


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_pictures_exist_and_have_alt_text(path):
    for c in cells(path):
        for alt, src in re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", c.source):
            assert len(alt) > 40, f"alt text says what the picture shows: {src}"
            assert (path.parent / src).resolve().is_file(), src


def test_figures_are_redrawn_from_code(tmp_path):
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import figures
    finally:
        sys.path.pop(0)
    drawn = figures.draw_all(tmp_path)
    assert sorted(p.name for p in drawn) == sorted(figures.ALT)
    for p in drawn:
        committed = REPO / "docs" / "img" / p.name
        assert committed.is_file(), f"run `python docs/figures.py` and commit docs/img/{p.name}"
        new, old = mpimg.imread(p), mpimg.imread(committed)
        assert new.shape == old.shape and np.abs(new - old).mean() < 0.01, f"docs/img/{p.name} is stale"
