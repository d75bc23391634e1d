"""The response object every backend returns: iterate it for text pieces; metrics come after."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .streaming import IncrementalDecoder

#: Why an answer ended: one word set for metrics, the chat widget, the CLI and the docs.
FINISH_REASONS = {
    "ended": "the model ended its answer", "length": "max_new_tokens was reached",
    "stopped": "you pressed Stop (or Ctrl-C)", "error": "the runtime failed; the error is on response.error",
}


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
        return (
            f"time to first token {ttft} | {self.tokens} tokens | {speed} | "
            f"{self.total_s:.2f} s total | prompt {self.prompt_tokens} tokens | {self.finish_reason}"
        )


class Response:
    """A streamed answer.

    >>> for piece in response: print(piece, end="")   # streams
    >>> response.text()                               # the whole answer (waits for the end)
    >>> response.metrics                              # time to first token, tokens, tokens/s
    >>> response.stop()                               # ends generation inside the runtime
    """

    def __init__(
        self, token_stream: Iterator[list[int]], tokenizer, stop_event: threading.Event, prompt_tokens: int,
        max_new_tokens: int, on_done: Optional[Callable[["Response"], None]] = None,
        notices: Optional[list[str]] = None, eos_token_ids: frozenset[int] = frozenset(),
    ):
        self._stream = token_stream
        self._decoder = IncrementalDecoder(tokenizer)
        self._stop_event = stop_event
        self._user_stopped = False
        self._on_done = on_done
        self._eos = eos_token_ids
        self._pieces: list[str] = []
        self._started = False
        self._done = False
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._reader: Optional[int] = None  # thread that iterates the stream
        self.max_new_tokens = max_new_tokens
        self.token_ids: list[int] = []
        self.notices: list[str] = list(notices or [])
        self.error: Optional[BaseException] = None
        self.metrics = Metrics(prompt_tokens=prompt_tokens)
        self._t0 = 0.0
        self._t_first: Optional[float] = None
        self._t_last: Optional[float] = None

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the runtime to end generation; the iterator finishes after at most a token or so."""
        self._user_stopped = True
        self._stop_event.set()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def stopped(self) -> bool:
        return self._user_stopped

    # -- streaming -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        if self._started:
            # Already consumed (or being consumed): give back what was produced.
            yield from list(self._pieces)
            return
        self._started = True
        self._reader = threading.get_ident()
        self._t0 = time.perf_counter()
        try:
            for ids in self._stream:
                now = time.perf_counter()
                if self._t_first is None:
                    self._t_first = now
                self._t_last = now
                self.token_ids.extend(ids)
                visible = [i for i in ids if i not in self._eos]
                piece = self._decoder.push(visible) if visible else ""
                self._update(running=True)
                if piece:
                    self._pieces.append(piece)
                    yield piece
            tail = self._decoder.flush()
            if tail:
                self._pieces.append(tail)
                yield tail
        except GeneratorExit:  # the reader stopped iterating: that is a Stop
            self._user_stopped = True
            raise
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._finish()

    def text(self) -> str:
        """The full answer. Consumes the stream if nobody iterated it yet."""
        if not self._started:
            for _ in self:
                pass
        elif self._reader != threading.get_ident():
            self._finished.wait()  # another thread (a chat widget) is reading: wait for the end
        return "".join(self._pieces)

    def __str__(self) -> str:
        return self.text()

    def _repr_markdown_(self) -> str:
        return self.text()

    # -- bookkeeping -----------------------------------------------------------------------
    def _update(self, running: bool) -> None:
        m = self.metrics
        m.tokens = len(self.token_ids)
        now = time.perf_counter()
        m.total_s = now - self._t0
        if self._t_first is not None:
            m.ttft_s = self._t_first - self._t0
            if m.tokens > 1 and self._t_last and self._t_last > self._t_first:
                m.tokens_per_s = (m.tokens - 1) / (self._t_last - self._t_first)

    def _finish(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._stop_event.set()  # a consumer that stops reading stops the runtime too
        close = getattr(self._stream, "close", None)
        if close:
            close()
        self._update(running=False)
        if self.error is not None:
            self.metrics.finish_reason = "error"
        elif self._user_stopped:
            self.metrics.finish_reason = "stopped"
        elif len(self.token_ids) >= self.max_new_tokens:
            self.metrics.finish_reason = "length"
        else:
            self.metrics.finish_reason = "ended"
        try:
            if self._on_done is not None:
                self._on_done(self)
        finally:
            self._finished.set()
