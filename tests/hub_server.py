"""A real Hugging Face hub server on loopback for the tests: olah, in offline mode, serving git repos.

olah (PyPI, MIT) is a hub mirror; in offline mode it serves local git repos as hub repos under any
``org/name`` (config: ``mirrors-path`` + ``[accessibility] offline = true``; layout
``MIRRORS/models/ORG/NAME``, a git repo with a commit on ``main``). olah 0.5.4 needs
huggingface-hub >= 1.27 and the course pins 1.21.0, so it gets its own venv under
``<repo>/.cache/olah-venv``, created here once (pip install from PyPI) and reused.

The served repos are built from the course's offline model (smollm2-135m-phi3) in the real
publishers' layouts and under the real repo ids, and each carries a README saying so:
offline-model weights in the real layout, not Phi-3.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLAH_PIN = "olah==0.5.4"
VENV = REPO / ".cache" / "olah-venv"
LABEL = (
    "# Stand-in repo for the phi3_helpers tests\n\n"
    "Offline-model weights (smollm2-135m-phi3, a 135M model in the Phi-3 architecture) in the real layout "
    "of {repo_id}{sub}, not Phi-3. Served by a local olah hub mirror during the tests only.\n"
)


class OlahUnavailable(RuntimeError):
    """olah could not be installed (PyPI unreachable): the caller skips with this reason."""


def olah_cli() -> Path:
    """The olah-cli of the tests' own venv, creating the venv once (about 30 s, needs PyPI).

    A marker file is written only after pip succeeded, so an interrupted install is redone.
    """
    cli, done = VENV / "bin" / "olah-cli", VENV / ".installed"
    if cli.is_file() and done.is_file() and done.read_text() == OLAH_PIN:
        return cli
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
    pip = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", OLAH_PIN], capture_output=True, text=True)
    if pip.returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        last = (pip.stderr.strip().splitlines() or ["no output"])[-1]
        raise OlahUnavailable(f"could not pip install {OLAH_PIN} into its own venv (PyPI unreachable?): {last}")
    done.write_text(OLAH_PIN)
    return cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(cwd: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="tests", GIT_AUTHOR_EMAIL="tests@localhost",
               GIT_COMMITTER_NAME="tests", GIT_COMMITTER_EMAIL="tests@localhost")
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def add_repo(mirrors: Path, repo_id: str, files: dict[str, Path | str], sub: str = "") -> Path:
    """A git repo at MIRRORS/models/ORG/NAME with ``files`` (repo path -> source file or text), committed on main."""
    root = mirrors / "models" / repo_id
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text(LABEL.format(repo_id=repo_id, sub=f" ({sub})" if sub else ""))
    for name, src in files.items():
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copyfile(src, dest)
        else:
            dest.write_text(src)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "stand-in: offline-model weights in the real layout, not Phi-3")
    return root


class HubServer:
    """olah-cli on 127.0.0.1:<port> in offline mode; ``requests()`` reads what clients asked for."""

    def __init__(self, workdir: Path, mirrors: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.mirrors = Path(mirrors)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / f"olah-{self.port}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "HubServer":
        cli = olah_cli()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"olah-{self.port}.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{self.workdir / "olah-repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "[accessibility]\noffline = true\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
        self.proc = subprocess.Popen(
            [str(cli), "-c", str(config)], cwd=self.workdir, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited with code {self.proc.returncode}: {self.log.read_text()[-500:]}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1)
                return self
            except urllib.error.HTTPError:
                return self  # it answers (even a 404 is an answer)
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"olah did not answer on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.proc = None

    def requests(self) -> list[str]:
        """The paths clients requested, from olah's access log (e.g. 'HEAD /OpenVINO/.../resolve/...')."""
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return [f"{m[0]} {m[1]}" for m in re.findall(r'"(GET|HEAD|POST) (\S+) HTTP/[\d.]+"', text)]

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
