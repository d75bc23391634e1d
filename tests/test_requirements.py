"""Every requirements file resolves, from wheels only, on Windows (win_amd64), macOS (arm64) and Linux (x86_64).

`uv pip compile --python-platform ...` evaluates the environment markers for the target platform and needs no
install (pip's `--platform` does not change how markers evaluate), so a pin that breaks Windows fails here.
Against PyPI itself; skipped, with the reason, only when PyPI is unreachable.

Which files and platforms (every requirements*.txt is found by its name, so a new file is covered):
- requirements.txt alone; every other file together with it (it is installed on top), unless its comments say
  to install it with --no-deps (the offline model's wheel): then alone, with --no-deps;
- a file for one OS only: a comment line `# platforms: windows` (or macos, linux; comma-separated), else
  `win`/`mac`/`linux` in its name (requirements-winml.txt: Windows), else every line's marker (all
  `sys_platform == "win32"`: Windows); otherwise every platform.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = sorted(REPO.glob("requirements*.txt"))
MAIN = REPO / "requirements.txt"
PYTHON_VERSION = "3.11"
#: platform name -> (uv's --python-platform, extra environment)
PLATFORMS = {
    "windows": ("windows", {}),  # x86_64-pc-windows-msvc: win_amd64 wheels
    "macos": ("aarch64-apple-darwin", {"MACOSX_DEPLOYMENT_TARGET": "14.0"}),  # torch 2.13 ships macosx_14_0_arm64
    "linux": ("x86_64-unknown-linux-gnu", {}),
}
_NAME_HINTS = {"windows": ("win", "directml", "dml"), "macos": ("mac", "darwin"), "linux": ("linux",)}
#: Distributions that install the same Python module: at most one of each set may resolve.
SAME_MODULE = (
    {"onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-winml", "onnxruntime-genai-cuda"},
    {"onnxruntime", "onnxruntime-directml", "onnxruntime-windowsml", "onnxruntime-gpu"},
)
INDEX = os.environ.get("UV_INDEX_URL") or os.environ.get("UV_DEFAULT_INDEX") or "https://pypi.org/simple"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(text: str) -> list:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def platforms_for(path: Path) -> list:
    """The platforms a requirements file is meant for (see the module's docstring)."""
    text = path.read_text(encoding="utf-8")
    declared = re.search(r"^#\s*platforms:\s*(.+)$", text, re.M | re.I)
    if declared:
        names = [n.strip().lower() for n in declared.group(1).split(",")]
        unknown = set(names) - set(PLATFORMS)
        assert not unknown, f"{path.name}: unknown platforms {sorted(unknown)}; use {', '.join(PLATFORMS)}"
        return names
    stem = path.stem.removeprefix("requirements").lower()
    by_name = [p for p, hints in _NAME_HINTS.items() if any(h in stem for h in hints)]
    if by_name:
        return by_name
    lines = requirement_lines(text)
    if lines and all(re.search(r"""sys_platform\s*==\s*["']win32["']""", ln) for ln in lines):
        return ["windows"]
    return list(PLATFORMS)


def installed_without_deps(path: Path) -> bool:
    return path != MAIN and "--no-deps" in path.read_text(encoding="utf-8")


def cases() -> list:
    return [pytest.param(path, plat, id=f"{path.name}-{plat}") for path in FILES for plat in platforms_for(path)]


def find_uv() -> str | None:
    try:
        from uv import find_uv_bin
    except ImportError:
        return shutil.which("uv")
    return find_uv_bin()


@pytest.fixture(scope="module")
def uv():
    exe = find_uv()
    assert exe, "uv is missing: it is pinned in requirements.txt; run `python course.py setup`"
    try:
        with urllib.request.urlopen(INDEX.rstrip("/") + "/uv/", timeout=15) as r:
            r.read(1)
    except OSError as exc:
        pytest.skip(f"PyPI ({INDEX}) is unreachable here ({exc}); the resolution check needs it")
    return exe


def test_the_files_are_found_and_sorted_by_platform(tmp_path):
    assert MAIN in FILES and len(FILES) >= 2
    assert platforms_for(MAIN) == list(PLATFORMS)
    # the conventions, on files this test writes
    for name, text, expected in [
        ("requirements-winml.txt", "onnxruntime-genai-winml==0.18.0\n", ["windows"]),
        ("requirements-x.txt", 'a==1 ; sys_platform == "win32"\nb==2 ; sys_platform == "win32"\n', ["windows"]),
        ("requirements-y.txt", "# platforms: macos, linux\na==1\n", ["macos", "linux"]),
        ("requirements-z.txt", "a==1\n", list(PLATFORMS)),
    ]:
        (tmp_path / name).write_text(text)
        assert platforms_for(tmp_path / name) == expected, name


@pytest.mark.parametrize("path,platform", cases())
def test_requirements_resolve_for_the_platform(uv, path, platform):
    target, extra_env = PLATFORMS[platform]
    files = [path] if path == MAIN or installed_without_deps(path) else [MAIN, path]
    cmd = [
        uv, "pip", "compile", *[str(f) for f in files],
        "--python-platform", target, "--python-version", PYTHON_VERSION,
        "--only-binary", ":all:", "--no-python-downloads", "--no-header", "--no-annotate",
        "--cache-dir", str(REPO / ".cache" / "uv"),
    ]
    if installed_without_deps(path):
        cmd.append("--no-deps")
    overrides = REPO / path.name.replace("requirements", "overrides", 1)
    if path != MAIN and overrides.is_file():  # e.g. requirements-winml.txt replaces requirements.txt's DirectML lines
        cmd += ["--override", str(overrides)]
    env = {**os.environ, **extra_env, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    if run.returncode != 0 and re.search(r"(?i)dns error|failed to fetch|connect(ion)? (error|refused)|timed out",
                                         run.stderr):
        pytest.skip(f"PyPI became unreachable during the resolution: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, f"{path.name} does not resolve for {platform}:\n{run.stderr}"
    resolved = {canonical(ln.split("==")[0]) for ln in requirement_lines(run.stdout)}
    assert resolved, run.stdout
    for line in requirement_lines(path.read_text(encoding="utf-8")):
        if ";" not in line:  # unconditional pins are all in the resolution
            assert canonical(re.split(r"[=<>!~ \[]", line)[0]) in resolved, line
    # DirectML's runtime and plain onnxruntime together break DirectML ("Specified provider is not supported")
    assert not {"onnxruntime", "onnxruntime-directml"} <= resolved, f"{path.name} ({platform}): {sorted(resolved)}"
    # builds that install the same module (onnxruntime_genai, onnxruntime) can never share one environment
    for builds in SAME_MODULE:
        assert len(builds & resolved) <= 1, f"{path.name} ({platform}) resolves {sorted(builds & resolved)} together"
