"""llama.cpp beside the helpers (``bench --llama-cpp``): ``llama-bench`` built once from the llama.cpp vendored in
llama-cpp-python's sdist into ``<cache>/llama.cpp``, run on the offline model's GGUF. Whatever stops it (no
compiler, no PyPI, a failed build or run) makes its row a skipped one with a one-line reason.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from ..models.cache import cache_root
from .worker import spread

SDIST = "llama-cpp-python==0.3.36"


class Unavailable(Exception):
    """Why llama.cpp cannot run here (one line)."""


def folder() -> Path:
    return cache_root() / "llama.cpp"


def download_command(dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", str(dest)]


def build_commands() -> list[list[str]]:
    """Run in the sdist's vendor/llama.cpp (about 7 minutes on 2 cores)."""
    return [["cmake", "-B", "build", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF"],
            ["cmake", "--build", "build", "--config", "Release", "--target", "llama-bench", "-j2"]]


def bench_command(exe: Path, gguf: Path, prompt_tokens: int, tokens: int, threads: int, runs: int) -> list[str]:
    return [str(exe), "-m", str(gguf), "-p", str(prompt_tokens), "-n", str(tokens), "-t", str(threads),
            "-r", str(runs), "-o", "json"]


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{what} failed ({type(exc).__name__}: {exc})") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise Unavailable(f"{what} failed (exit {proc.returncode}): {tail.strip()[:200]}")
    return proc.stdout


def built_or_reason(progress=print) -> Path | str:
    """The llama-bench program, built on first use; or the one-line reason it cannot be."""
    home = folder()
    if exe := _program(home):
        return exe
    windows = os.name == "nt"
    missing = [tool for tool in ("cmake", "cl" if windows else "c++") if shutil.which(tool) is None]
    if missing:
        how = "CMake and Visual Studio Build Tools, in a Developer PowerShell" if windows else "apt install cmake g++"
        return f"{' and '.join(missing)} not found on PATH; install them ({how}) to build it"
    progress(f"building llama.cpp's llama-bench from {SDIST} into {home} (once, about 7 minutes) ...")
    try:
        home.mkdir(parents=True, exist_ok=True)
        if not any(home.glob("llama_cpp_python-*.tar.gz")):
            _run(download_command(home), home, f"downloading the {SDIST} sdist")
        with tarfile.open(next(home.glob("llama_cpp_python-*.tar.gz"))) as sdist:
            sdist.extractall(home, filter="data")
        src = next(home.glob("llama_cpp_python-*/vendor/llama.cpp"))
        for cmd in build_commands():
            _run(cmd, src, "building llama-bench")
    except (Unavailable, OSError, StopIteration) as exc:
        return str(exc) or "the sdist has no vendor/llama.cpp"
    return _program(home) or "the build finished but wrote no llama-bench program"


def _program(home: Path) -> Path | None:
    """build/bin/llama-bench, or build/bin/Release/llama-bench.exe where the build is multi-config (MSVC)."""
    found = home.glob("llama_cpp_python-*/vendor/llama.cpp/build/bin/**/llama-bench*")
    return next((p for p in found if p.is_file() and p.suffix in ("", ".exe")), None)


def parse(stdout: str) -> dict:
    """llama-bench's ``-o json``: a prompt test (n_gen 0) and a generation test (n_prompt 0), each with each
    run's tokens/s (samples_ts)."""
    tests = json.loads(stdout)
    pp = next(t for t in tests if t["n_prompt"] > 0 and t["n_gen"] == 0)
    tg = next(t for t in tests if t["n_gen"] > 0 and t["n_prompt"] == 0)
    short = {"prompt_tokens": pp["n_prompt"], "new_tokens": tg["n_gen"], "threads": pp["n_threads"],
             "ttft_ms": spread([1000 * pp["n_prompt"] / ts for ts in pp["samples_ts"]]),
             "ms_per_token": spread([1000 / ts for ts in tg["samples_ts"]]),
             "tokens_per_s": tg["avg_ts"]}
    return {"prompts": {"short": short}, "build": f"{tg.get('build_commit')} {tg.get('cpu_info')}"}


def llama_row(built: Path | str, prompt_tokens: int, tokens: int, threads: int, runs: int) -> dict:
    """llama.cpp's row: TTFT from the prompt test, decode from the generation test; or skipped, saying why."""
    from ..models.offline import gguf_path

    row = {"backend": "llama.cpp", "precision": "Q4_1", "device": "CPU", "runtime": "llama.cpp (llama-bench)"}
    try:
        if isinstance(built, str):
            raise Unavailable(built)
        cmd = bench_command(built, gguf_path(), prompt_tokens, tokens, threads, runs)
        return {**row, "status": "ok", "command": " ".join(cmd), **parse(_run(cmd, built.parent, "llama-bench"))}
    except Exception as exc:  # Unavailable, no GGUF, output it cannot read: the bench goes on without it
        return {**row, "status": "skipped", "reason": f"llama.cpp: {exc}"}
