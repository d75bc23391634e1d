"""The response every backend returns: iterate it for text pieces; its metrics fill in as it streams."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .streaming import IncrementalDecoder

#: How an answer ended: one word set for the metrics, the chat widget's legend, the CLI and the docs.
FINISH_REASONS = {
    "ended": "the model ended its answer", "length": "max_new_tokens was reached",
    "stopped": "you pressed Stop (or Ctrl-C)", "error": "the runtime failed (the error is shown with the answer)",
}


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"


@dataclass
class Metrics:
    """Timings of one answer. ``tokens_per_s`` is the decode speed (tokens after the first)."""

    prompt_tokens: int = 0
    tokens: int = 0
    ttft_s: Optional[float] = None
    total_s: float = 0.0
    tokens_per_s: Optional[float] = None
    finish_reason: str = "running"  # one of FINISH_REASONS once the answer is over

    @property
    def ms_per_token(self) -> Optional[float]:
        return 1000.0 / self.tokens_per_s if self.tokens_per_s else None

    def __str__(self) -> str:
        ttft = f"{self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "-"
        speed = f"{self.tokens_per_s:.1f} tok/s" if self.tokens_per_s else "- tok/s"
        parts = [f"time to first token {ttft}", _tokens(self.tokens), speed]
        if self.finish_reason != "running":
            parts += [f"{self.total_s:.2f} s total", f"prompt {_tokens(self.prompt_tokens)}", self.finish_reason]
        return " · ".join(parts)


class Response:
    """A streamed answer: iterate it for pieces; ``text()`` waits for the whole; ``stop()`` ends it in the runtime."""

    def __init__(
        self, token_stream: Iterator[list[int]], tokenizer, stop_event: threading.Event, prompt_tokens: int,
        max_new_tokens: int, on_done: Optional[Callable[[Response], None]] = None,
        notices: Optional[list[str]] = None, eos_token_ids: frozenset[int] = frozenset(),
    ):
        self._stream = token_stream
        self._decoder = IncrementalDecoder(tokenizer)
        self._stop_event = stop_event
        self._on_done = on_done
        self._eos = eos_token_ids
        self._pieces: list[str] = []
        self._stopped = False  # by stop(), or by the reader leaving the loop
        self._reader: Optional[int] = None  # the thread that reads the stream, once it started
        self._finished = threading.Event()
        self._t0 = 0.0
        self.done = False
        self.max_new_tokens = max_new_tokens
        self.token_ids: list[int] = []
        self.notices: list[str] = list(notices or [])
        self.error: Optional[BaseException] = None
        self.metrics = Metrics(prompt_tokens=prompt_tokens)

    def stop(self) -> None:
        """Ask the runtime to end generation; the iterator finishes after at most a token or so."""
        self._stopped = True
        self._stop_event.set()

    def __iter__(self) -> Iterator[str]:
        if self._reader is not None:  # already read (or being read): what was produced
            yield from list(self._pieces)
            return
        self._reader = threading.get_ident()
        self._t0 = time.perf_counter()
        try:
            for ids in self._stream:
                self.token_ids.extend(ids)
                self._measure()
                visible = [i for i in ids if i not in self._eos]
                yield from self._keep(self._decoder.push(visible) if visible else "")
            yield from self._keep(self._decoder.flush())
        except GeneratorExit:  # the reader stopped iterating: that is a Stop
            self._stopped = True
            raise
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._finish()

    def _keep(self, piece: str) -> Iterator[str]:
        if piece:
            self._pieces.append(piece)
            yield piece

    def text(self) -> str:
        """The full answer; reads the stream if nobody did yet, or waits for the thread that reads it."""
        if self._reader is None:
            return "".join(self)
        if self._reader != threading.get_ident():
            self._finished.wait()
        return "".join(self._pieces)

    __str__ = _repr_markdown_ = text

    def _measure(self) -> None:
        m = self.metrics
        m.total_s = time.perf_counter() - self._t0
        if m.ttft_s is None:
            m.ttft_s = m.total_s
        m.tokens = len(self.token_ids)
        if m.tokens > 1 and m.total_s > m.ttft_s:
            m.tokens_per_s = (m.tokens - 1) / (m.total_s - m.ttft_s)

    def _finish(self) -> None:
        self.done = True
        self._stop_event.set()  # a reader that stops reading stops the runtime too
        if hasattr(self._stream, "close"):
            self._stream.close()
        m = self.metrics
        m.tokens = len(self.token_ids)
        m.total_s = time.perf_counter() - self._t0
        m.finish_reason = (
            "error" if self.error is not None else "stopped" if self._stopped
            else "length" if m.tokens >= self.max_new_tokens else "ended"
        )
        try:
            if self._on_done is not None:
                self._on_done(self)
        finally:
            self._finished.set()
