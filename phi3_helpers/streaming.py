"""From a callback runtime to an iterator of token ids (a queue read with a timeout, the worker's exception
re-raised in the reader, a stop event for early ends), and from ids to text pieces."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, Sequence

from .errors import GenerationTimeout

_DONE = object()


def bridge(
    run: Callable[[Callable[[Sequence[int]], bool]], object], stop: threading.Event,
    timeout: float = 600.0, name: str = "phi3-generate",
) -> Iterator[list[int]]:
    """Run ``run(emit)`` in a thread and yield what it emits; ``emit(ids)`` returns True when it should stop.

    ``timeout``: seconds to wait for each token, the first included (compiling for an NPU takes a while).
    """
    q: queue.Queue = queue.Queue()

    def emit(ids: Sequence[int]) -> bool:
        if ids:
            q.put(list(ids))
        return stop.is_set()

    def worker() -> None:
        try:
            run(emit)
        except BaseException as exc:  # re-raised in the reader
            q.put(exc)
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
                grace = 1.0  # a stuck runtime may never end: leave its daemon thread behind
                raise GenerationTimeout(
                    f"the runtime produced no token for {timeout:.0f} s; it may be stuck or still compiling"
                    " - try a smaller model or precision, or raise the timeout."
                ) from None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # a normal end, an error, or the reader closing the iterator early
        stop.set()
        thread.join(timeout=grace)


class IncrementalDecoder:
    """Token ids in, text pieces out, never splitting a character; decodes a short window (as transformers'
    TextStreamer does), so the cost per token stays the same however long the answer gets."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._printed = 0  # characters of the current window already given out

    def _decode(self) -> str:
        return self._tok.decode(self._ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, ids: Sequence[int]) -> str:
        self._ids.extend(ids)
        text = self._decode()
        if text.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        piece = text[self._printed:]
        self._printed = len(text)
        if len(self._ids) > 32:  # a new window; its last token kept (SentencePiece drops a leading space otherwise)
            self._ids = self._ids[-1:]
            self._printed = len(self._decode())
        return piece

    def flush(self) -> str:
        """Text still held back at the end (an unfinished character), if any."""
        piece = self._decode()[self._printed:]
        self._ids.clear()
        self._printed = 0
        return piece.replace("\ufffd", "")
