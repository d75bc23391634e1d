"""Bridges from callback-style runtimes to a plain iterator, and incremental detokenization.

Every backend produces token ids. Callback runtimes (transformers streamers, OpenVINO GenAI
streamers) run in a worker thread that pushes ids into a queue; the consumer reads them with a
timeout, and an exception in the worker is re-raised in the consumer, so a crashed worker never
hangs the reader. Closing the iterator early sets the stop event, so the runtime really stops.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, Sequence

from .errors import GenerationTimeout

_DONE = object()

#: Seconds the reader waits for the next token before giving up (first token included:
#: compiling a model for an NPU can take a while, so this is generous).
DEFAULT_STALL_TIMEOUT = 600.0


class _WorkerFailed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def bridge(
    run: Callable[[Callable[[Sequence[int]], bool]], object], stop: threading.Event,
    timeout: float = DEFAULT_STALL_TIMEOUT, name: str = "phi3-generate",
) -> Iterator[list[int]]:
    """Run ``run(emit)`` in a thread and yield what it emits.

    ``emit(token_ids)`` queues ids and returns True when the runtime should stop (the stop
    event is set). ``run`` returns when generation ends.
    """
    q: "queue.Queue[object]" = queue.Queue()

    def emit(ids: Sequence[int]) -> bool:
        if ids:
            q.put(list(ids))
        return stop.is_set()

    def worker() -> None:
        try:
            run(emit)
        except BaseException as exc:  # re-raised in the consumer
            q.put(_WorkerFailed(exc))
        finally:
            q.put(_DONE)

    thread = threading.Thread(target=worker, name=name, daemon=True)
    thread.start()
    grace = timeout  # how long to wait for the worker to end once the reader is done
    try:
        while True:
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                stop.set()
                grace = 1.0  # a stuck runtime may never end: leave its daemon thread behind
                raise GenerationTimeout(
                    f"the runtime produced no token for {timeout:.0f} s; it may be stuck or still compiling"
                    " - try a smaller model or precision, or raise the timeout."
                ) from None
            if item is _DONE:
                break
            if isinstance(item, _WorkerFailed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        # Reached on normal end, on error, and when the consumer closes the iterator early.
        stop.set()
        thread.join(timeout=grace)


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces without splitting multi-byte characters.

    Decodes only the tokens since the last safe point (like transformers' TextStreamer), so the
    cost per token stays constant however long the answer gets.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._printed = 0  # characters of the current window already emitted

    def _decode(self) -> str:
        return self._tok.decode(self._ids, skip_special_tokens=self._skip, clean_up_tokenization_spaces=False)

    def push(self, ids: Sequence[int]) -> str:
        self._ids.extend(ids)
        text = self._decode()
        if text.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        piece = text[self._printed :]
        if len(self._ids) > 32:
            # Start a new window, keeping the last token as context so that tokenizers that
            # drop a leading space at the start of a decode (SentencePiece) stay correct.
            self._ids = self._ids[-1:]
            self._printed = len(self._decode())
        else:
            self._printed = len(text)
        return piece

    def flush(self) -> str:
        """Text still held back at the end (an unfinished character), if any."""
        text = self._decode()
        piece = text[self._printed :]
        self._ids.clear()
        self._printed = 0
        return piece.replace("\ufffd", "")
