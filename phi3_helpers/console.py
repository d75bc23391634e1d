"""Notices read as information (``notice``); third-party noise of exports and loads held back (``quiet``):
warnings, progress bars and log lines collapse into one notice, replayed on stderr if the block raises.
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


def notice(message: str) -> None:
    """A visible one-line notice: stdout in a notebook (where stderr is drawn in a red box), stderr in a terminal."""
    out, err = _visible or (sys.stdout, sys.stderr)
    ipython = sys.modules.get("IPython") if "ipykernel" in sys.modules else None
    in_kernel = ipython is not None and getattr(ipython.get_ipython(), "kernel", None)
    print(f"{PREFIX} {message}", file=out if in_kernel else err, flush=True)


class _Switch(io.TextIOBase):
    """stdout/stderr during quiet(): writes go to the capture of the block running now, else to the real stream,
    so code that grabbed ``sys.stdout`` inside a block (a logging handler) still works after it, quiet in the next."""

    def __init__(self, real):
        self._real = real

    def write(self, text: str) -> int:
        return (_active or self._real).write(text)

    def flush(self) -> None:
        if _active is None:
            self._real.flush()

    def isatty(self) -> bool:
        return _active is None and bool(getattr(self._real, "isatty", lambda: False)())

    def writable(self) -> bool:
        return True

    def __getattr__(self, name):  # encoding, fileno, ... of the real stream
        return getattr(self._real, name)


class Captured(io.StringIO):
    """What a quiet() block held back: ``text`` and its number of non-empty ``lines``."""

    text = property(io.StringIO.getvalue)

    @property
    def lines(self) -> int:
        return len([line for line in self.text.replace("\r", "\n").splitlines() if line.strip()])


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]  # placeholders have no handlers
    handlers = [h for logger in loggers for h in getattr(logger, "handlers", [])]
    return [h for h in handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """Hold back third-party output of the block; notices still show; replay it all if the block raises."""
    global _visible, _active
    captured = Captured()
    verbose = os.environ.get(VERBOSE_ENV, "").strip().lower() not in {"", "0", "false", "no", "off"}
    with _lock:
        outer = _visible is not None or verbose  # an outer block captures already, or the user wants everything
        if not outer:
            real_out, real_err = _visible = (sys.stdout, sys.stderr)
            out, err = _Switch(real_out), _Switch(real_err)
            reals = {id(s) for s in (real_out, real_err, sys.__stdout__, sys.__stderr__) if s is not None}
            swapped = [(h, h.stream) for h in _stream_handlers() if id(h.stream) in reals]
            for h, old in swapped:
                h.stream = out if old in (real_out, sys.__stdout__) else err
            _active = captured
    if outer:
        yield captured
        return
    failed = False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: captured.write(
                warnings.formatwarning(msg, cat, fn, ln, line))
            yield captured
    except BaseException as exc:
        failed = not isinstance(exc, KeyboardInterrupt)  # Ctrl-C is no error to explain
        raise
    finally:
        with _lock:
            for h, old in swapped:
                if h.stream in (out, err):
                    h.stream = old
            _visible = _active = None
        if failed and captured.text.strip():
            real_err.write(captured.text.rstrip("\n") + "\n")
            real_err.flush()
        elif captured.lines:
            notice(f"({captured.lines} lines of runtime messages hidden; {VERBOSE_ENV}=1 shows them.)")
