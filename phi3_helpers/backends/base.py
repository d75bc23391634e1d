"""The backend contract: one backend is one subclass of :class:`Backend`. The registry, ``devices`` and the bench
read what it declares, so nothing outside ``backends/`` switches on a backend's name.

Declares    name, runtime ("openvino", "OpenVINO GenAI"); requires (modules checked before loading) and install;
            precisions (the default first); options (its keyword options with defaults; others are refused)
Resolves    every choice into a frozen Plan before loading (classmethods): plan() via check_options,
            check_precision and choose_device; prepared_path(plan) and prepare(plan): the folder the runtime
            loads, exported, built or fetched once; devices_here(), precisions_on(device), device_report()
Implements  _load(): load the runtime's model from self.prepared_folder; stream_tokens(input_ids, options, stop):
            yield lists of new token ids until eos, max_new_tokens or stop, keeping self.kv (its KV cache) true;
            may override close() and the limits context_length and max_prompt_tokens
The chat template, tokens, context checks and the Response are here.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import platform
import threading
import time
import types
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

from ..console import quiet
from ..errors import (
    EmptyPrompt, InvalidOption, ModelFolderError, PromptTooLong, SessionBusy, UnknownDevice, UnknownPrecision,
)
from ..models import ModelSource, plan_source
from ..options import GenerationOptions
from ..prefix import PrefixCache, chat_ids
from ..response import Response

Messages = Sequence[dict]


@dataclasses.dataclass(frozen=True)
class Plan:
    """A load's choices as plain data: ``folder`` is what the runtime loads (None until ``prepare`` knows it),
    ``settings`` the backend's resolved options (read-only), ``notices`` are shown before loading."""

    backend: str
    model: ModelSource
    device: str
    precision: str
    folder: Path | None = None
    notices: tuple[str, ...] = ()
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", types.MappingProxyType(dict(self.settings)))

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)


def positive_int(name: str, value: Any, default: int | None = None) -> int | None:
    """A whole number above 0 (``default`` for None), else a one-line InvalidOption."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        hint = f"; the default is {default}" if default is not None else ""
        raise InvalidOption(f"{name} must be a whole number above 0 (got {value!r}){hint}.")
    return value


class Backend(abc.ABC):
    """A model loaded on one runtime, device and precision. By default: a backend on the CPU only."""

    name: ClassVar[str] = ""
    runtime: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ("transformers",)
    install: ClassVar[str] = "pip install -r requirements.txt"
    precisions: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def missing(cls) -> str:
        """'' when this backend can load here, else the one-line reason (with the install command)."""
        for module in cls.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:  # a dotted name whose parent is missing
                found = False
            if not found:
                return (f"backend {cls.name!r} needs the Python package {module!r}, which is not installed; "
                        f"run: {cls.install}")
        return ""

    @classmethod
    def devices_here(cls) -> list[str | None]:
        """Devices worth measuring on this machine (None: let the backend choose)."""
        return ["CPU"]

    @classmethod
    def precisions_on(cls, device: str | None) -> tuple[str, ...]:
        return cls.precisions

    @classmethod
    def device_report(cls) -> list[dict]:
        cpu = platform.processor() or platform.machine()
        return [{"backend": cls.name, "device": "CPU", "available": True, "detail": f"{cls.runtime} on {cpu}"}]

    @classmethod
    def check_precision(cls, precision: str | None) -> str:
        chosen = (precision or cls.precisions[0]).lower()
        if chosen not in cls.precisions:
            raise UnknownPrecision(f"precision {precision!r} is not available for backend {cls.name!r}; "
                                   f"use one of {', '.join(cls.precisions)}.")
        return chosen

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict:
        """The backend's options with their defaults, plus ``reuse_cache`` (every backend keeps its KV cache)."""
        options = dict(options)
        reuse = options.pop("reuse_cache", True)
        if not isinstance(reuse, bool):
            raise InvalidOption(f"reuse_cache must be True or False (got {reuse!r}); "
                                "e.g. load('onnx', reuse_cache=False).")
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            valid = ", ".join([*cls.options, "reuse_cache"])
            raise InvalidOption(f"backend {cls.name!r} has no option {unknown[0]!r}; its options are: {valid}.")
        return {**cls.options, **options, "reuse_cache": reuse}

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        """The device to run on; may record a choice in ``settings`` and add a notice (e.g. a fallback)."""
        if (device or "CPU").upper() not in {"CPU", "AUTO"}:
            raise UnknownDevice(f"the {cls.name} backend runs on CPU only (got {device!r}); use --device CPU, "
                                "or the openvino backend for GPU/NPU.")
        return "CPU"

    @classmethod
    def plan(cls, model=None, device: str | None = None, precision: str | None = None, **options: Any) -> Plan:
        """Resolve every choice, cheap checks first (a typo fails before a slow build)."""
        origin = options.pop("source", None)  # phi3-mini: "hub" (prequantized, the default) or "export"
        settings = cls.check_options(options)
        precision = cls.check_precision(precision)
        notices: list[str] = []
        device = cls.choose_device(device, settings, notices)
        # phi3-mini: the publisher's folder for this backend, if any (settings["hub"], fetched by prepare)
        source, settings["hub"], more = plan_source(model, cls.name, precision, settings.get("target"), origin)
        plan = Plan(cls.name, source, device, precision, None, tuple(notices + more), settings)
        return plan.replace(folder=cls.prepared_path(plan))

    @classmethod
    def prepared_path(cls, plan: Plan) -> Path | None:
        """Where the folder the runtime loads lives, without building it (by default the model's own)."""
        return plan.model.folder

    @classmethod
    def prepare(cls, plan: Plan) -> Plan:
        """The plan with ``folder`` ready: exported, built or fetched (once)."""
        return plan

    def __init__(self, plan: Plan):
        """Load a prepared plan (``phi3_helpers.load`` makes and prepares it)."""
        t0 = time.perf_counter()
        self.plan, self.device, self.precision, self.model = plan, plan.device, plan.precision, plan.model
        self.prepared_folder: Path = Path(plan.folder or plan.model.folder)
        self.reuse_cache = bool(plan.settings.get("reuse_cache", True))
        self.kv = PrefixCache(self.reuse_cache)  # the token ids the runtime's KV cache holds between answers
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model.folder))
        except Exception as exc:
            raise ModelFolderError(
                f"could not read the tokenizer in {self.model.folder} ({type(exc).__name__}); "
                "delete the folder and run again to rebuild it, or point --model at a complete folder."
            ) from None
        self.eos_token_ids = eos_ids(self.model.folder, self.tokenizer)
        self._busy = threading.Lock()  # one answer at a time
        self._current: Response | None = None
        self._encoded: tuple[str, list[int]] = ("", [])  # a chat counts, then sends a prompt
        with quiet():  # the runtime's load chatter is held back (replayed in full on an error)
            self._load()
        self.load_seconds = time.perf_counter() - t0

    @abc.abstractmethod
    def _load(self) -> None:
        """Load the runtime's model from ``self.prepared_folder``."""

    @abc.abstractmethod
    def stream_tokens(
        self, input_ids: list[int], options: GenerationOptions, stop: threading.Event
    ) -> Iterator[list[int]]:
        """Yield lists of generated token ids; end on eos, max_new_tokens, or when ``stop`` is set."""

    def reset(self) -> None:
        """Forget the KV cache kept between answers: the next prompt is prefilled whole."""
        self.kv.reset()

    def close(self) -> None:
        """Free the runtime's memory."""

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def max_prompt_tokens(self) -> int:
        return self.context_length

    def _prompt_too_long(self, n: int, limit: int) -> str:
        """The one-line error for a prompt of ``n`` tokens over ``limit`` (a backend may name its own fix)."""
        return (f"the prompt has {n} tokens but {self.model.name} on {self.name}/{self.device} accepts at most "
                f"{limit}; shorten it or start a new chat.")

    def describe(self) -> str:
        return f"{self.name} | {self.device} | {self.precision} | {self.model.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def format_prompt(self, messages: Messages) -> str:
        """The prompt text exactly as the model sees it (the tokenizer's own chat template)."""
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def encode(self, messages: Messages) -> list[int]:
        """The prompt's token ids; earlier answers keep the ids the model produced (their ``token_ids``)."""
        key, (cached, ids) = repr((self.tokenizer.chat_template, list(messages))), self._encoded
        if key != cached:
            ids = chat_ids(self.tokenizer, messages, self.format_prompt, self.eos_token_ids) or self.tokenizer(
                self.format_prompt(messages), add_special_tokens=False)["input_ids"]
            self._encoded = (key, list(ids))
        return list(ids)

    def count_tokens(self, messages: Messages) -> int:
        return len(self.encode(messages))

    def generate(
        self, prompt: str | Messages, options: GenerationOptions | dict | None = None, *, system: str | None = None,
        on_done=None, notices: list[str] | None = None, **overrides: Any,
    ) -> Response:
        """Start an answer; returns a Response to iterate (generation runs as it is read)."""
        opts = GenerationOptions.make(options, **overrides)
        ids = self.encode(as_messages(prompt, system))
        if len(ids) > self.max_prompt_tokens:
            raise PromptTooLong(self._prompt_too_long(len(ids), self.max_prompt_tokens))
        if len(ids) + opts.max_new_tokens > self.context_length:
            opts = GenerationOptions.make(opts, max_new_tokens=max(1, self.context_length - len(ids)))
        stop = threading.Event()

        def tokens() -> Iterator[list[int]]:
            if not self._busy.acquire(blocking=False):
                raise SessionBusy("an answer is still being generated; wait for it or call stop() first.")
            try:
                yield from self.stream_tokens(ids, opts, stop)
            finally:
                self._busy.release()

        self._current = Response(
            tokens(), self.tokenizer, stop, len(ids), opts.max_new_tokens, on_done, notices, self.eos_token_ids
        )
        return self._current

    def stop(self) -> None:
        """Stop the answer being generated, if any."""
        if self._current is not None and not self._current.done:
            self._current.stop()

    def ask(self, prompt: str | Messages, **kw: Any) -> str:
        """The whole answer as text."""
        return self.generate(prompt, **kw).text()

    def chat(self, system: str | None = None, **options: Any):
        """A multi-turn chat session over this backend."""
        from ..session import ChatSession

        return ChatSession(self, system=system, options=GenerationOptions.make(None, **options))


def as_messages(prompt: str | Messages, system: str | None = None) -> list[dict]:
    """A question or a list of {"role", "content"} messages, checked; ``system`` replaces any system message."""
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
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


def eos_ids(folder: Path, tokenizer) -> frozenset[int]:
    """The end-of-answer ids: the generation config's eos_token_id (one or a list) and the tokenizer's (an ONNX
    Runtime GenAI folder has neither generation_config.json nor config.json: the tokenizer's only)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        value = GenerationConfig.from_pretrained(str(folder)).eos_token_id
    except (OSError, ValueError):
        try:
            value = GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(folder))).eos_token_id
        except (OSError, ValueError):
            value = None
    values = value if isinstance(value, (list, tuple)) else [value]
    return frozenset(int(x) for x in [*values, tokenizer.eos_token_id] if x is not None)
