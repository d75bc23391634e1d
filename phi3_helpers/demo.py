"""Demo mode: answer after answer with a live tokens/s readout, so Task Manager's graph of the device stays up:
``keep_busy(llm, seconds=30)``, ``demo_widget(llm)``, ``python -m phi3_helpers demo``."""

from __future__ import annotations

import html
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import InvalidOption, one_line

DEMO_PROMPT = ("Tell a long, detailed story about a lighthouse keeper who teaches a robot to paint the sea. "
               "Describe every season on the island.")


@dataclass
class DemoStats:
    """Where a demo run stands; ``live_tokens_per_s`` is the decode speed of the answer being generated."""

    device: str
    seconds: float
    elapsed_s: float = 0.0
    answers: int = 0
    tokens: int = 0
    live_tokens_per_s: float = 0.0
    running: bool = False
    stopped: bool = False  # ended by Stop (or Ctrl-C) before the time was up
    error: Optional[str] = None  # one line, when generation failed (the run ends)

    @property
    def average_tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        state = "running" if self.running else "stopped" if self.stopped else "done"
        state = f"failed: {self.error}" if self.error else state
        return (f"{self.device}: {self.elapsed_s:5.1f} / {self.seconds:.0f} s | {self.answers} answers | "
                f"{self.tokens} tokens | now {self.live_tokens_per_s:5.1f} tok/s | "
                f"average {self.average_tokens_per_s:5.1f} tok/s | {state}")


class Demo:
    """Generates answer after answer on one backend until the time is up or ``stop()`` is called."""

    def __init__(self, llm, seconds: float = 60, prompt: str = DEMO_PROMPT, max_new_tokens: int = 256):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 24 * 3600:
            raise InvalidOption(f"seconds must be a number above 0 (got {seconds!r}); try seconds=60.")
        self.llm, self.seconds, self.prompt, self.max_new_tokens = llm, float(seconds), prompt, max_new_tokens
        self.stats = DemoStats(device=str(getattr(llm, "device", "?")), seconds=self.seconds)
        self._stop, self._response, self._thread = threading.Event(), None, None

    def stop(self) -> None:
        """End the demo; the answer being generated stops inside the runtime."""
        self._stop.set()
        if self._response is not None:
            self._response.stop()

    def run(self, on_update: Optional[Callable[[DemoStats], None]] = None, every: float = 0.25) -> DemoStats:
        """Run in this thread; ``on_update(stats)`` is called about every ``every`` seconds and at the end."""
        self._stop.clear()
        st = self.stats = DemoStats(device=self.stats.device, seconds=self.seconds, running=True)
        t0 = last_update = time.perf_counter()
        try:
            while not self._stop.is_set() and time.perf_counter() - t0 < self.seconds:
                resp = self._response = self.llm.generate(self.prompt, max_new_tokens=self.max_new_tokens)
                before = st.tokens
                for _piece in resp:
                    now = time.perf_counter()
                    st.elapsed_s, st.tokens = now - t0, before + len(resp.token_ids)
                    st.live_tokens_per_s = resp.metrics.tokens_per_s or 0.0
                    if st.elapsed_s >= self.seconds or self._stop.is_set():
                        resp.stop()  # ends generation in the runtime; the loop ends after a token or so
                    if on_update is not None and now - last_update >= every:
                        last_update = now
                        on_update(st)
                st.tokens = before + len(resp.token_ids)
                st.answers += 1
        except KeyboardInterrupt:
            self.stop()
        except Exception as exc:  # e.g. SessionBusy or a runtime error: kept on the stats, never lost in a thread
            st.error = one_line(exc)
        finally:
            self._response = None
            st.elapsed_s = time.perf_counter() - t0
            st.stopped = st.error is None and self._stop.is_set() and st.elapsed_s < self.seconds
            st.running = False
            if on_update is not None:
                on_update(st)
        return st

    def start(self, on_update: Optional[Callable[[DemoStats], None]] = None, every: float = 0.25) -> threading.Thread:
        if self._thread is not None and self._thread.is_alive():
            raise InvalidOption("the demo is already running; stop it first.")
        self.stats.running = True
        self._thread = threading.Thread(target=self.run, args=(on_update, every), name="phi3-demo", daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for a background run (``start()``) to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()


def keep_busy(llm, seconds: float = 60, prompt: str = DEMO_PROMPT, max_new_tokens: int = 256, out=None) -> DemoStats:
    """Keep ``llm``'s device busy for ``seconds``: a live readout line in a terminal, else the final line."""
    out = out or sys.stdout
    live = getattr(out, "isatty", lambda: False)()

    def show(st: DemoStats) -> None:
        out.write("\r" + st.line() + ("" if st.running else "\n"))
        out.flush()

    st = Demo(llm, seconds, prompt, max_new_tokens).run(on_update=show if live else None)
    if not live:
        print(st.line(), file=out, flush=True)
    return st


def demo_widget(llm, seconds: float = 60, prompt: str = DEMO_PROMPT, max_new_tokens: int = 256):
    """A notebook panel: Start / Stop buttons, a seconds box and a live readout (set from the worker thread)."""
    import ipywidgets as widgets

    demo = Demo(llm, seconds, prompt, max_new_tokens)
    secs = widgets.BoundedIntText(int(demo.seconds), min=1, max=3600, description="seconds",
                                  layout=widgets.Layout(width="160px"))
    start = widgets.Button(description="Start", button_style="success", icon="play")
    stop = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
    readout = widgets.HTML()

    def show(text: str, running: bool) -> None:
        readout.value = f"<code>{html.escape(text)}</code>"
        start.disabled = secs.disabled = running
        stop.disabled = not running

    def on_start(_button) -> None:
        demo.seconds = float(secs.value)
        show("starting ...", True)
        demo.start(on_update=lambda st: show(st.line(), st.running))

    def on_stop(_button) -> None:
        stop.disabled = True
        readout.value = readout.value.replace("running", "stopping")
        demo.stop()

    show(f"{llm.describe()}: idle", False)
    start.on_click(on_start)
    stop.on_click(on_stop)
    box = widgets.VBox([widgets.HBox([start, stop, secs]), readout])
    box.demo = demo  # for tests and for stopping from code: box.demo.stop()
    return box
