"""The chat widget in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

Opens a chapter notebook (a copy in a temp folder, so the repo's notebook is never saved over),
runs its cells up to and including the chat cell, asks "What is the capital of France?" with
Enter, waits for "Paris" in the streamed answer, types a follow-up straight away without clicking
(the cursor is back in the box) and sees it sent, then presses Stop during a long answer and checks
that generation ended. Screenshots go to <repo>/artifacts/.

Needs Chromium (Debian: ``apt-get install -y chromium``, as .ci/run does; or set PHI3_CHROMIUM to a
Chromium/Chrome executable) and the Python package playwright (requirements.txt). Playwright's own
browser download is never used. Choose the notebook with PHI3_BROWSER_NOTEBOOK (default: chapter 03,
else the first chapter with a chat widget cell: the chapters end with a Close button after it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
from prompts import FRANCE
FOLLOW_UP = "And of Italy?"
LONG = "Write a long story about a dragon."
CODE = "Write a Python function that adds two numbers."
#: Seconds to run the chapter up to its chat cell (exports on a cold cache take minutes).
RUN_TIMEOUT = float(os.environ.get("PHI3_BROWSER_TIMEOUT", "1800"))
ANSWER_TIMEOUT = 300.0
#: Flags for Chromium as root in a closed network (no sandbox, no background connections).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("PHI3_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def chat_notebook() -> Path | None:
    """The chapter notebook to open: $PHI3_BROWSER_NOTEBOOK, else 03-*, else the first with a chat cell."""
    chosen = os.environ.get("PHI3_BROWSER_NOTEBOOK")
    if chosen:
        path = Path(chosen)
        return path if path.is_absolute() else REPO / path
    chapters = sorted((REPO / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    chapters.sort(key=lambda p: not p.name.startswith("03-"))  # chapter 03 first, then in order
    for path in chapters:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        if any("chat_widget(" in "".join(c["source"]) for c in cells):  # the chat cell, wherever it is
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        pytest.skip(
            "no Chromium found: install Debian's package (apt-get install -y chromium, as .ci/run does) "
            "or set PHI3_CHROMIUM=/path/to/chromium to run the browser test"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the Python package playwright is missing: pip install -r requirements.txt")
    return exe


@pytest.fixture(scope="module")
def lab(chromium):
    """JupyterLab on 127.0.0.1 with token auth, a free port and a temp HOME; yields (url, notebook path)."""
    notebook = chat_notebook()
    if notebook is None or not notebook.is_file():
        pytest.skip("no chapter notebook has a chat widget cell (or PHI3_BROWSER_NOTEBOOK is wrong)")
    work = Path(tempfile.mkdtemp(prefix="phi3-browser-"))
    (work / "notebooks").mkdir()
    shutil.copy2(notebook, work / "notebooks" / notebook.name)
    home = work / "home"
    settings = work / "lab-settings" / "@jupyterlab"
    for plugin, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "docmanager-extension/plugin": {"autosave": False},
    }.items():
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        USERPROFILE=str(home),
        JUPYTER_CONFIG_DIR=str(home / "jupyter"),
        JUPYTER_DATA_DIR=str(home / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(work / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "lab-workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PHI3_CACHE_DIR=os.environ.get("PHI3_CACHE_DIR", str(REPO / ".cache" / "models")),
        # the kernel imports this checkout's phi3_helpers even before `pip install -e .`
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    )
    port = free_port()
    token = os.urandom(16).hex()
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(work / "jupyterlab.log", "wb")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}): {(work / 'jupyterlab.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start in 120 s: {(work / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"{base}/lab/tree/notebooks/{notebook.name}?token={token}", notebook
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


# JavaScript run in the page (JupyterLab exposes its app with --LabApp.expose_app_in_browser).
_KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""
_CELL_ERRORS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const errs = [];
  for (const cell of w.content.widgets) {
    if (cell.model.type !== 'code') continue;
    for (const o of cell.model.outputs.toJSON()) {
      if (o.output_type === 'error') errs.push(o.ename + ': ' + o.evalue);
    }
  }
  return errs;
}"""


# The conversation lists the newest turn first (shown at the bottom): `.first` is the latest answer.
def _answer_text(page) -> str:
    answers = page.locator(".phi3-chat .phi3-chat-answer")
    return answers.first.inner_text() if answers.count() else ""


def _state(page) -> str | None:
    return page.locator(".phi3-chat .phi3-chat-state").first.get_attribute("data-state")


def _finish_word(page) -> str | None:
    """How the latest answer ended, as its metrics line says it (the finish_reason word)."""
    return page.locator(".phi3-chat .phi3-chat-metrics [data-finish]").first.get_attribute("data-finish")


def _wait_state(page, state: str, timeout: float) -> None:
    page.wait_for_selector(f".phi3-chat .phi3-chat-state[data-state='{state}']", timeout=timeout * 1000)


def _wait_answered(page, question: str, timeout: float, expect: str = "") -> None:
    """Wait until the newest turn is ``question``'s, its answer has ended (its metrics name how) and shows text
    (containing ``expect``, if given).

    Waiting for the state "idle" alone can return before the answer starts: the new turn and the state
    reach the page in separate widget messages. The answer's Markdown is rendered after its metrics line.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    newest = "const t = document.querySelector('.phi3-chat .phi3-chat-turn');"
    page.wait_for_function(f"(q) => {{ {newest} return !!t && t.innerText.includes(q); }}", arg=question,
                           timeout=60_000)  # the question was sent
    page.wait_for_function(f"() => {{ {newest} return !!t.querySelector('.phi3-chat-metrics [data-finish]'); }}",
                           timeout=timeout * 1000)
    try:
        page.wait_for_function(f"(e) => {{ {newest} const a = t.querySelector('.phi3-chat-answer');"
                               " return !!a && a.innerText.trim() !== '' && a.innerText.includes(e); }",
                               arg=expect, timeout=30_000)
    except PlaywrightTimeout:
        wanted = f"text containing {expect!r}" if expect else "text"
        raise AssertionError(f"the answer to {question!r} ended with no {wanted}: {_answer_text(page)!r}") from None
    _wait_state(page, "idle", timeout)


def test_chat_in_jupyterlab(lab, chromium):
    from playwright.sync_api import sync_playwright

    url, notebook = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(url, timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function(_KERNEL_IDLE, timeout=120_000)

            # Run the chapter (run-all): the chat cell shows its box; the Close button after it only waits.
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            chat_input = page.locator(".phi3-chat .phi3-chat-input input")
            deadline = time.monotonic() + RUN_TIMEOUT
            while not chat_input.is_visible():
                errors = page.evaluate(_CELL_ERRORS)
                assert not errors, f"{notebook.name} failed before its chat cell: {errors}"
                assert time.monotonic() < deadline, f"{notebook.name} did not reach its chat cell in {RUN_TIMEOUT:.0f} s"
                time.sleep(1)
            chat_input.scroll_into_view_if_needed()
            assert "backend" in page.locator(".phi3-chat").first.inner_text()

            # A question, sent with Enter; the answer streams into the page.
            chat_input.click()
            chat_input.press_sequentially(FRANCE)
            chat_input.press("Enter")
            _wait_answered(page, FRANCE, ANSWER_TIMEOUT, expect="Paris")
            assert "Paris" in _answer_text(page)
            metrics = page.locator(".phi3-chat .phi3-chat-metrics").first.inner_text()
            word = _finish_word(page)
            assert "first token" in metrics and "tokens" in metrics and metrics.endswith(f"· {word}"), metrics
            assert word not in ("length", "stopped", "error"), metrics  # the model ended this answer itself
            legend = page.locator(".phi3-chat .phi3-chat-legend").first.inner_text()
            assert "stopped = you pressed Stop" in legend and "length = " in legend, legend
            page.locator(".phi3-chat").first.screenshot(path=str(ARTIFACTS / "browser-chat-paris.png"))

            # A follow-up typed straight away, without clicking the box first: it is sent, nothing vanishes.
            page.keyboard.type(FOLLOW_UP)
            page.keyboard.press("Enter")
            _wait_answered(page, FOLLOW_UP, ANSWER_TIMEOUT)
            assert page.locator(".phi3-chat .phi3-chat-turn").count() == 2

            # Clear, then an answer with a code block: rendered as Markdown (a <pre> block in the page).
            page.locator(".phi3-chat .phi3-chat-clear").click()
            page.wait_for_selector(".phi3-chat .phi3-chat-turn", state="detached", timeout=60_000)
            chat_input.click()
            chat_input.press_sequentially(CODE)
            chat_input.press("Enter")
            _wait_answered(page, CODE, ANSWER_TIMEOUT)
            assert page.locator(".phi3-chat .phi3-chat-turn").count() == 1
            code = page.locator(".phi3-chat .phi3-chat-answer pre").first
            assert "def " in code.inner_text(), _answer_text(page)
            assert "```" not in _answer_text(page)  # the fences became a code block
            page.locator(".phi3-chat").first.screenshot(path=str(ARTIFACTS / "browser-chat-code.png"))

            # A long answer, stopped while it streams.
            max_tokens = page.locator(".phi3-chat .phi3-chat-max-new-tokens input")
            max_tokens.fill("400")
            max_tokens.press("Enter")
            chat_input.click()
            chat_input.press_sequentially(LONG)
            chat_input.press("Enter")
            _wait_state(page, "generating", 60)
            seen: list[str] = []
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while len(seen) < 3:  # the answer is seen growing in the page: it streams
                text = _answer_text(page)
                if len(text) > 20 and (not seen or text != seen[-1]):
                    seen.append(text)
                assert _state(page) == "generating", "the long answer ended before Stop"
                assert time.monotonic() < deadline, "the long answer did not stream"
                time.sleep(0.05)
            assert chat_input.is_disabled()
            page.locator(".phi3-chat .phi3-chat-stop").click()
            _wait_state(page, "idle", 60)
            metrics = page.locator(".phi3-chat .phi3-chat-metrics").first.inner_text()
            assert _finish_word(page) == "stopped" and metrics.endswith("· stopped"), metrics
            tokens = int(metrics.split(" tokens")[0].split()[-1])
            assert tokens < 400
            stopped_text = _answer_text(page)
            time.sleep(2)  # nothing more arrives after Stop
            assert _answer_text(page) == stopped_text
            assert not chat_input.is_disabled()
            # the conversation follows the newest text: the last answer's metrics line is in view
            line = page.locator(".phi3-chat .phi3-chat-metrics").first.bounding_box()
            view = page.locator(".phi3-chat .phi3-chat-conversation").first.bounding_box()
            assert view["y"] - 1 <= line["y"] and line["y"] + line["height"] <= view["y"] + view["height"] + 1, (line, view)
            page.locator(".phi3-chat").first.screenshot(path=str(ARTIFACTS / "browser-chat.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "browser-chat-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
