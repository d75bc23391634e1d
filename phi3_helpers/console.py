"""How phi3_helpers talks to you: its own notices read as information, third-party noise stays out of sight.

``notice(message)``
    One line ``[phi3_helpers] message``. In a Jupyter kernel it goes to stdout, so it shows as a plain
    output line and not in a red stderr box; in a terminal it goes to stderr, so stdout keeps only the
    answer (``python -m phi3_helpers ask ... > answer.txt``).
``quiet()``
    A context manager for exports and loads. Inside it, third-party output (TracerWarnings, deprecation
    lines, optimum-intel's "Could not infer ... [Errno 2] ... refs/main", NNCF tables, progress bars)
    is captured instead of printed; notices still show. When the block ends normally the capture is
    collapsed into one notice line; when it raises, everything captured is written to stderr first, so
    an error still shows in full. ``PHI3_VERBOSE=1`` turns the capture off.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from typing import Iterator

PREFIX = "[phi3_helpers]"
VERBOSE_ENV = "PHI3_VERBOSE"

_lock = threading.RLock()
_visible: tuple | None = None  # (stdout, stderr) as they were when the outermost quiet() began
_active: io.StringIO | None = None  # the capture of the quiet() block running now


def in_kernel() -> bool:
    """Whether this runs inside a Jupyter kernel (where stderr output is drawn in a red box)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def notice(message: str) -> None:
    """A visible one-line notice: stdout in a notebook (information, not an error), stderr in a terminal."""
    out, err = _visible or (sys.stdout, sys.stderr)
    stream = out if in_kernel() else err
    print(f"{PREFIX} {message}", file=stream, flush=True)


class _Switch(io.TextIOBase):
    """Stands in for stdout/stderr: writes go to the capture while it is on, to the real stream after.

    Code that grabs ``sys.stdout`` while a block is quiet (a logging handler made at import time, a
    progress bar) keeps a working stream afterwards instead of a dead buffer, and is quiet again in
    any later quiet() block.
    """

    def __init__(self, real, capture: io.StringIO):
        self._real = real
        self._capture = capture
        self.on = True

    def _target(self):
        return self._capture if self.on else _active

    def write(self, text: str) -> int:
        target = self._target()
        return (target or self._real).write(text)

    def flush(self) -> None:
        if self._target() is None:
            self._real.flush()

    def isatty(self) -> bool:
        return False if self._target() is not None else bool(getattr(self._real, "isatty", lambda: False)())

    def writable(self) -> bool:
        return True

    def __getattr__(self, name):  # encoding, fileno, ... of the real stream
        return getattr(self._real, name)


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


class Captured:
    """What a quiet() block held back: ``text`` and its number of ``lines``."""

    def __init__(self) -> None:
        self._buf = io.StringIO()

    @property
    def text(self) -> str:
        return self._buf.getvalue()

    @property
    def lines(self) -> int:
        return len([ln for ln in self.text.replace("\r", "\n").splitlines() if ln.strip()])


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """Hold back third-party output of the block; notices still show; replay it all if the block raises."""
    global _visible, _active
    captured = Captured()
    verbose = os.environ.get(VERBOSE_ENV, "").strip().lower() not in {"", "0", "false", "no", "off"}
    with _lock:
        nested = _visible is not None
        if not (nested or verbose):
            real_out, real_err = sys.stdout, sys.stderr
            out, err = _Switch(real_out, captured._buf), _Switch(real_err, captured._buf)
            reals = {id(s) for s in (real_out, real_err, sys.__stdout__, sys.__stderr__) if s is not None}
            swapped = [(h, h.stream) for h in _stream_handlers() if id(h.stream) in reals]
            for h, old in swapped:
                h.stream = out if old in (real_out, sys.__stdout__) else err
            _visible = (real_out, real_err)
            _active = captured._buf
    if nested or verbose:  # the outer block captures already, or the user wants to see everything
        yield captured
        return
    try:
        with warnings.catch_warnings():
            # Warnings (TracerWarning, FutureWarning, DeprecationWarning, ...) become captured lines.
            warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: captured._buf.write(
                warnings.formatwarning(msg, cat, fn, ln, line)
            )
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield captured
    except KeyboardInterrupt:
        _end(out, err, swapped)
        if captured.lines:
            notice(f"({captured.lines} lines of runtime output were hidden; {VERBOSE_ENV}=1 shows them.)")
        raise
    except BaseException:
        _end(out, err, swapped)
        text = captured.text
        if text.strip():
            real_err.write(text if text.endswith("\n") else text + "\n")
            real_err.flush()
        raise
    else:
        _end(out, err, swapped)
        if captured.lines:
            notice(f"({captured.lines} lines of runtime messages hidden; {VERBOSE_ENV}=1 shows them.)")


def _end(out: _Switch, err: _Switch, swapped: list) -> None:
    global _visible, _active
    with _lock:
        out.on = err.on = False
        for h, old in swapped:
            if h.stream in (out, err):
                h.stream = old
        _visible = _active = None


__all__ = ["notice", "quiet", "in_kernel", "Captured", "PREFIX", "VERBOSE_ENV"]
