"""What every backend is: token ids in, token ids out; the rest is shared.

A backend implements ``_load()`` and ``stream_tokens(input_ids, options, stop)``, a generator of
token-id lists that ends when the model is done or ``stop`` is set. Prompt formatting (the
tokenizer's chat template), tokenization, context checks, detokenization and metrics live here,
so the caller never needs to know which runtime produced the tokens.
"""

from __future__ import annotations

import abc
import threading
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

from ..errors import EmptyPrompt, InvalidOption, PromptTooLong, SessionBusy, UnknownPrecision
from ..models import ModelSource, resolve_model
from ..options import GenerationOptions
from ..prefix import PrefixCache, chat_ids, check_reuse_cache
from ..response import Response

Messages = Sequence[dict]


def as_messages(prompt: str | Messages, system: str | None = None) -> list[dict]:
    """Accept a plain question or a list of {"role", "content"} messages; refuse empty input."""
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    else:
        msgs = [dict(m) for m in prompt]
    if system:
        msgs = [{"role": "system", "content": system}] + [m for m in msgs if m.get("role") != "system"]
    if not msgs:
        raise EmptyPrompt("no messages given; ask a question, e.g. generate('What is the capital of France?').")
    for m in msgs:
        if m.get("role") not in {"system", "user", "assistant"}:
            raise InvalidOption(f"message role must be system, user or assistant (got {m.get('role')!r}).")
        if not isinstance(m.get("content"), str):
            raise InvalidOption("each message needs text 'content'.")
    if not msgs[-1]["content"].strip():
        raise EmptyPrompt("the prompt is empty; type a question first.")
    return msgs


class Backend(abc.ABC):
    """A loaded model on one runtime, device and precision."""

    name: ClassVar[str] = ""
    #: Precisions this backend accepts; the first is the default.
    precisions: ClassVar[tuple[str, ...]] = ()
    runtime: ClassVar[str] = ""

    def __init__(
        self,
        model: ModelSource | str | None = None,
        device: str | None = None,
        precision: str | None = None,
        *,
        reuse_cache: bool = True,
    ):
        # cheap checks first, so a typo fails before a slow model build or download
        self.reuse_cache = check_reuse_cache(reuse_cache)
        #: the token ids the runtime's KV cache holds between answers (see phi3_helpers.prefix)
        self.kv = PrefixCache(self.reuse_cache)
        self.precision = self._check_precision(precision)
        self.device = self._pick_device(device)
        self.model = model if isinstance(model, ModelSource) else resolve_model(model)
        self.prepared_folder: Path = self.model.folder  # what the runtime loads; exports set their own
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model.folder))
        except Exception as exc:
            from ..errors import ModelFolderError

            raise ModelFolderError(
                f"could not read the tokenizer in {self.model.folder} ({type(exc).__name__}); "
                "delete the folder and run again to rebuild it, or point --model at a complete folder."
            ) from None
        self.eos_token_ids = self._eos_ids()
        self._busy = threading.Lock()
        self._current: Response | None = None
        self._load()

    # -- to implement ------------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self) -> None:
        """Export/compile as needed and load the runtime's model."""

    @abc.abstractmethod
    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event) -> Iterator[list[int]]:
        """Yield lists of generated token ids; end on eos, max_new_tokens, or when ``stop`` is set."""

    def _pick_device(self, device: str | None) -> str:
        return (device or "CPU").upper()

    @property
    def max_prompt_tokens(self) -> int:
        """Longest prompt the loaded model accepts (static-shape runtimes such as NPU lower this)."""
        return self.context_length

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def _prompt_too_long(self, n: int, limit: int) -> str:
        """The one-line message for a prompt of ``n`` tokens over ``limit`` (backends add their own fix)."""
        return (
            f"the prompt has {n} tokens but {self.model.name} on {self.name}/{self.device} accepts at most "
            f"{limit}; shorten it or start a new chat."
        )

    # -- shared ------------------------------------------------------------------------------
    def _check_precision(self, precision: str | None) -> str:
        p = (precision or self.precisions[0]).lower()
        if p not in self.precisions:
            raise UnknownPrecision(
                f"precision {precision!r} is not available for backend {self.name!r}; use one of {', '.join(self.precisions)}."
            )
        return p

    def _eos_ids(self) -> frozenset[int]:
        import json

        ids: set[int] = set()
        for fname in ("generation_config.json", "config.json"):
            f = Path(self.model.folder) / fname
            if f.is_file():
                v = json.loads(f.read_text()).get("eos_token_id")
                if isinstance(v, int):
                    ids.add(v)
                elif isinstance(v, list):
                    ids.update(int(x) for x in v)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return frozenset(ids)

    def describe(self) -> str:
        return f"{self.name} | {self.device} | {self.precision} | {self.model.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def format_prompt(self, messages: Messages) -> str:
        """The prompt text exactly as the model sees it (the tokenizer's own chat template)."""
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def encode(self, messages: Messages) -> list[int]:
        """The prompt's token ids; earlier answers keep the ids the model produced (``token_ids``)."""
        ids = chat_ids(self.tokenizer, messages, self.format_prompt, self.eos_token_ids)
        if ids is not None:
            return ids
        text = self.format_prompt(messages)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, messages: Messages) -> int:
        return len(self.encode(messages))

    def generate(
        self,
        prompt: str | Messages,
        options: GenerationOptions | dict | None = None,
        *,
        system: str | None = None,
        on_done=None,
        notices: list[str] | None = None,
        **overrides: Any,
    ) -> Response:
        """Start an answer; returns a Response to iterate (generation runs as you read it)."""
        opts = GenerationOptions.make(options, **overrides)
        msgs = as_messages(prompt, system)
        ids = self.encode(msgs)
        limit = self.max_prompt_tokens
        if len(ids) > limit:
            raise PromptTooLong(self._prompt_too_long(len(ids), limit))
        if len(ids) + opts.max_new_tokens > self.context_length:
            opts = GenerationOptions.make(opts, max_new_tokens=max(1, self.context_length - len(ids)))
        stop = threading.Event()

        def tokens() -> Iterator[list[int]]:
            # Generation starts when the response is first read; one answer at a time per model.
            if not self._busy.acquire(blocking=False):
                raise SessionBusy("an answer is still being generated; wait for it or call stop() first.")
            try:
                yield from self.stream_tokens(ids, opts, stop)
            finally:
                self._busy.release()

        def done(resp: Response) -> None:
            self._current = None
            if on_done is not None:
                on_done(resp)

        resp = Response(tokens(), self.tokenizer, stop, len(ids), opts.max_new_tokens, done, notices, self.eos_token_ids)
        self._current = resp
        return resp

    def stop(self) -> None:
        """Stop the answer being generated, if any."""
        if self._current is not None:
            self._current.stop()

    def ask(self, prompt: str | Messages, **kw: Any) -> str:
        """Generate and return the whole answer as text."""
        return self.generate(prompt, **kw).text()

    def chat(self, system: str | None = None, **options: Any):
        """A multi-turn chat session over this backend."""
        from ..session import ChatSession

        return ChatSession(self, system=system, options=GenerationOptions.make(None, **options))

    def reset(self) -> None:
        """Forget runtime state kept between answers (the KV cache); the next prompt is prefilled whole."""
        self.kv.reset()

    def close(self) -> None:
        """Free the runtime's memory."""
