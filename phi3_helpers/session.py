"""A multi-turn chat over any backend: keeps the history, trims it to fit the context."""

from __future__ import annotations

from typing import Any

from .errors import EmptyPrompt, PromptTooLong
from .models import notice
from .options import GenerationOptions
from .response import Response


class ChatSession:
    """One conversation: ``llm.chat(system=...).ask(question)`` returns a Response.

    When the history no longer fits (prompt plus max_new_tokens), the oldest turns are dropped with a notice.
    Each answer keeps the ids the model produced (``token_ids``), so the backend reuses its KV cache for them.
    """

    def __init__(self, backend, system: str | None = None, options: GenerationOptions | None = None):
        self.backend = backend
        self.system = system
        self.options = options or GenerationOptions()
        self.history: list[dict] = []  # user/assistant turns, oldest first
        self.print_notices = True  # a UI that shows ``response.notices`` itself sets False
        self._response: Response | None = None

    def messages(self, extra_user: str | None = None) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + self.history + ([] if extra_user is None else [{"role": "user", "content": extra_user}])

    def _fit(self, question: str, max_new_tokens: int) -> list[str]:
        """Drop the oldest turns until the prompt fits; return the notices to show."""
        b = self.backend
        budget = min(b.max_prompt_tokens, b.context_length - max_new_tokens)
        dropped = 0
        while (n := b.count_tokens(self.messages(question))) > budget and self.history:
            del self.history[: 2 if len(self.history) > 1 and self.history[1]["role"] == "assistant" else 1]
            dropped += 1
        if n > b.max_prompt_tokens:
            raise PromptTooLong(
                f"this message alone is {n} tokens with the system prompt, but the model accepts at most "
                f"{b.max_prompt_tokens}; shorten it."
            )
        if not dropped:
            return []
        msg = f"dropped the {dropped} oldest turn(s) to fit the context of {b.context_length} tokens."
        if self.print_notices:
            notice(msg)
        return [msg]

    def ask(self, question: str, **overrides: Any) -> Response:
        """Send a user message; returns the streamed answer. The turn is recorded when it ends."""
        if not isinstance(question, str) or not question.strip():
            raise EmptyPrompt("the message is empty; type a question first.")
        opts = GenerationOptions.make(self.options, **overrides)
        notices = self._fit(question, opts.max_new_tokens)

        def record(resp: Response) -> None:
            self._response = None
            answer = "".join(resp)  # read to its end: never waits
            if resp.error is None or answer:  # a failed answer with no text is not recorded: the user can retry
                self.history += [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer, "token_ids": list(resp.token_ids)},
                ]

        self._response = self.backend.generate(self.messages(question), opts, on_done=record, notices=notices)
        return self._response

    def stop(self) -> None:
        """End the answer being generated; the partial answer stays in the history."""
        if self._response is not None:
            self._response.stop()

    def clear(self) -> None:
        """Forget the conversation and the runtime's KV cache."""
        self.stop()
        self.history.clear()
        self.backend.reset()

    def __repr__(self) -> str:
        return f"<ChatSession {len(self.history) // 2} turns on {self.backend.describe()}>"
