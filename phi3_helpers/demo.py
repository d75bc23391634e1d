"""Demo mode for instructors: keep a device busy generating, with a live tokens/s readout.

Task Manager (Windows: Performance tab > NPU) draws a graph only while the device works; one
answer is over in a second or two. ``keep_busy`` generates answer after answer for a given number
of seconds so the class can watch the graph, and reports tokens per second as it goes.

>>> from phi3_helpers.demo import keep_busy, demo_widget
>>> keep_busy(llm, seconds=30)       # blocking; prints a live line; Ctrl-C (or Stop) ends it
>>> demo_widget(llm, seconds=120)    # in a notebook: Start / Stop buttons and a live readout

From a terminal: ``python -m phi3_helpers demo --backend npu --seconds 60``.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import InvalidOption

DEMO_PROMPT = (
    "Tell a long, detailed story about a lighthouse keeper who teaches a robot to paint the sea. "
    "Describe every season on the island."
)
#: Seconds over which the live tokens/s readout is averaged.
WINDOW_S = 2.0


@dataclass
class DemoStats:
    """Where a demo run stands. ``live_tokens_per_s`` is the rate over the last couple of seconds."""

    device: str
    seconds: float
    elapsed_s: float = 0.0
    answers: int = 0
    tokens: int = 0
    live_tokens_per_s: float = 0.0
    running: bool = True
    stopped: bool = False  # ended by Stop (or Ctrl-C) before the time was up
    error: Optional[str] = None  # "ErrorType: message" when generation failed (the run ends)

    @property
    def average_tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        if self.error:
            state = f"failed: {self.error}"
        else:
            state = "running" if self.running else ("stopped" if self.stopped else "done")
        return (
            f"{self.device}: {self.elapsed_s:5.1f} / {self.seconds:.0f} s | {self.answers} answers | "
            f"{self.tokens} tokens | now {self.live_tokens_per_s:5.1f} tok/s | "
            f"average {self.average_tokens_per_s:5.1f} tok/s | {state}"
        )

    __str__ = line


def check_seconds(seconds) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 24 * 3600:
        raise InvalidOption(f"seconds must be a number above 0 (got {seconds!r}); try seconds=60.")
    return float(seconds)


class Demo:
    """Generates answer after answer on one backend until the time is up or ``stop()`` is called."""

    def __init__(self, llm, seconds: float = 60, prompt: str = DEMO_PROMPT, max_new_tokens: int = 256):
        self.llm = llm
        self.seconds = check_seconds(seconds)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.stats = DemoStats(device=str(getattr(llm, "device", "?")), seconds=self.seconds, running=False)
        self._stop = threading.Event()
        self._response = None
        self._thread: Optional[threading.Thread] = None

    def stop(self) -> None:
        """End the demo; the answer being generated stops inside the runtime."""
        self._stop.set()
        resp = self._response
        if resp is not None:
            resp.stop()

    @property
    def running(self) -> bool:
        return self.stats.running

    def run(self, on_update: Optional[Callable[[DemoStats], None]] = None, every: float = 0.25) -> DemoStats:
        """Run in this thread; ``on_update(stats)`` is called about every ``every`` seconds and at the end."""
        self._stop.clear()
        st = self.stats = DemoStats(device=self.stats.device, seconds=self.seconds)
        recent: deque[tuple[float, int]] = deque()
        t0 = time.perf_counter()
        last_update = 0.0

        def update(now: float, force: bool = False) -> None:
            nonlocal last_update
            st.elapsed_s = now - t0
            while recent and now - recent[0][0] > WINDOW_S:
                recent.popleft()
            span = now - recent[0][0] if recent else 0.0
            st.live_tokens_per_s = sum(n for _, n in recent) / max(span, 0.25) if recent else 0.0
            if on_update is not None and (force or now - last_update >= every):
                last_update = now
                on_update(st)

        try:
            while not self._stop.is_set() and time.perf_counter() - t0 < self.seconds:
                resp = self._response = self.llm.generate(self.prompt, max_new_tokens=self.max_new_tokens)
                seen = 0
                for _piece in resp:
                    now = time.perf_counter()
                    n = len(resp.token_ids)
                    recent.append((now, n - seen))
                    st.tokens += n - seen
                    seen = n
                    update(now)
                    if now - t0 >= self.seconds or self._stop.is_set():
                        resp.stop()  # ends generation in the runtime; the loop ends after a token or so
                n = len(resp.token_ids)
                st.tokens += n - seen
                st.answers += 1
                self._response = None
        except KeyboardInterrupt:
            self.stop()
        except Exception as exc:  # e.g. SessionBusy or a runtime error: kept on the stats, never lost in a thread
            st.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        finally:
            self._response = None
            st.stopped = st.error is None and self._stop.is_set() and time.perf_counter() - t0 < self.seconds
            st.running = False
            update(time.perf_counter(), force=True)
        return st

    def start(self, on_update: Optional[Callable[[DemoStats], None]] = None, every: float = 0.25) -> threading.Thread:
        """Run in a background thread (for widgets); ``stop()`` ends it."""
        if self._thread is not None and self._thread.is_alive():
            raise InvalidOption("the demo is already running; stop it first.")
        self.stats.running = True
        self._thread = threading.Thread(target=self.run, args=(on_update, every), name="phi3-demo", daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for a background run to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


def keep_busy(llm, seconds: float = 60, prompt: str = DEMO_PROMPT, max_new_tokens: int = 256, out=None) -> DemoStats:
    """Keep ``llm``'s device busy for ``seconds``, printing a live readout line; returns the final stats.

    Ctrl-C (or the notebook's Stop button) ends it early, stopping the runtime cleanly.
    """
    out = out or sys.stdout
    is_tty = hasattr(out, "isatty") and out.isatty()

    def show(st: DemoStats) -> None:
        if is_tty:
            out.write("\r" + st.line() + ("" if st.running else "\n"))
            out.flush()

    demo = Demo(llm, seconds, prompt, max_new_tokens)
    every = 0.25 if is_tty else 10.0
    st = demo.run(on_update=show, every=every)
    if not is_tty:
        print(st.line(), file=out, flush=True)
    return st


def demo_widget(llm, seconds: float = 60, prompt: str = DEMO_PROMPT, max_new_tokens: int = 256):
    """A notebook panel: Start / Stop buttons, a seconds box and a live readout.

    The worker thread only sets widget values (never prints into an output area).
    """
    import ipywidgets as widgets

    demo = Demo(llm, seconds, prompt, max_new_tokens)
    secs = widgets.BoundedIntText(
        value=int(demo.seconds), min=1, max=3600, description="seconds", layout=widgets.Layout(width="160px")
    )
    start = widgets.Button(description="Start", button_style="success", icon="play")
    stop = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
    readout = widgets.HTML(value=f"<code>{llm.describe() if hasattr(llm, 'describe') else llm}: idle</code>")

    def paint(st: DemoStats) -> None:
        readout.value = f"<code>{html.escape(st.line())}</code>"
        if not st.running:
            start.disabled, stop.disabled, secs.disabled = False, True, False

    def on_start(_btn) -> None:
        start.disabled, stop.disabled, secs.disabled = True, False, True
        demo.seconds = check_seconds(secs.value)
        readout.value = "<code>starting ...</code>"
        try:
            demo.start(on_update=paint)
        except Exception as exc:  # shown in the panel, never lost
            readout.value = f"<code>{html.escape(f'{type(exc).__name__}: {exc}')}</code>"
            start.disabled, stop.disabled, secs.disabled = False, True, False

    def on_stop(_btn) -> None:
        stop.disabled = True
        readout.value = readout.value.replace("running", "stopping")
        demo.stop()

    start.on_click(on_start)
    stop.on_click(on_stop)
    box = widgets.VBox([widgets.HBox([start, stop, secs]), readout])
    box.demo = demo  # for tests and for stopping from code: box.demo.stop()
    return box
