"""A multi-turn streaming chat (ipywidgets) over any backend's ChatSession (STYLE.md, "Widgets").

State ``idle`` -> ``generating`` -> (``stopping``) -> ``idle``, controls disabled meanwhile; the answer is read in a
background thread that only sets widget values, painted in place at most every ``paint_interval`` s; Stop ends
generation inside the runtime; errors show next to the partial answer; model text goes through ``safe_markdown``.
"""

from __future__ import annotations

import html
import re
import threading
import time
import warnings
from typing import Any, Optional

import ipywidgets as widgets
import traitlets

from ..errors import InvalidOption, Phi3Error
from ..response import Metrics, Response

IDLE, GENERATING, STOPPING = "idle", "generating", "stopping"

#: Seconds between updates of the live metrics line (the text itself follows paint_interval).
METRICS_INTERVAL = 0.25

#: Characters per token, roughly, for English text: used to refuse a huge paste before tokenizing it.
_CHARS_PER_TOKEN = 4


def _as_session(llm_or_session: Any, system: Optional[str]):
    """A ChatSession from a backend (``load(...)``) or a session (``llm.chat(...)``)."""
    if hasattr(llm_or_session, "ask") and hasattr(llm_or_session, "history") and hasattr(llm_or_session, "backend"):
        session = llm_or_session
        if system is not None:
            session.system = system
        return session
    if hasattr(llm_or_session, "chat") and hasattr(llm_or_session, "generate"):
        return llm_or_session.chat(system=system)
    raise InvalidOption(
        f"chat_widget needs a loaded model or a chat session (got {type(llm_or_session).__name__}); "
        "use chat_widget(phi3_helpers.load('openvino'))."
    )


_ZWSP = "\u200b"
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})(.*)$")
_SCRIPT_URL = re.compile(r"(?i)\b(javascript|vbscript)\s*:")


def safe_markdown(text: str) -> str:
    """The model's answer as Markdown that cannot run code in the page (Output renders Markdown as trusted).

    Outside fenced blocks each ``<`` gets a zero-width space after it (no tag or autolink can start) and
    ``javascript:`` links are broken; a fence ends on any line the renderer (marked) would end it on.
    """
    out = []
    fence: Optional[str] = None
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if fence is None:
            m = _FENCE_OPEN.match(body)
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence = m.group(1)
                out.append(line)
            else:
                out.append(_SCRIPT_URL.sub(lambda u: u.group(1) + _ZWSP + ":", line.replace("<", "<" + _ZWSP)))
        else:
            stripped = body.lstrip(" ")
            if len(body) - len(stripped) <= 3 and stripped.startswith(fence) and not stripped[len(fence):].strip("`~ "):
                fence = None
            out.append(line)
    return "".join(out)


#: How an answer ended (``Response.metrics.finish_reason``), explained in the legend and the word's tooltip.
FINISH_REASONS = {
    "ended": "the model ended its answer",
    "length": "the answer reached Max new tokens",
    "stopped": "you pressed Stop",
    "error": "the runtime failed (the error is shown above the line)",
}
LEGEND = "How an answer ended: " + " · ".join(f"{word} = {meaning}" for word, meaning in FINISH_REASONS.items())


def metrics_line(m: Metrics, running: bool = False) -> str:
    """One line of timings: time to first token, tokens, tokens/s (and, at the end, how the answer ended)."""
    ttft = f"{m.ttft_s * 1000:.0f} ms" if m.ttft_s is not None else "…"
    speed = f"{m.tokens_per_s:.1f} tok/s" if m.tokens_per_s else "… tok/s"
    parts = [f"first token {ttft}", f"{m.tokens} token{'' if m.tokens == 1 else 's'}", speed]
    if not running:
        parts += [f"{m.total_s:.2f} s", m.finish_reason]
    return " · ".join(parts)


class Turn:
    """One question and its answer in the conversation view."""

    def __init__(self, question: str):
        self.question = question
        self.user = widgets.HTML(
            f"<div style='white-space:pre-wrap;background:var(--jp-layout-color2,#eee);"
            f"border-radius:6px;padding:4px 8px'><b>You:</b> {html.escape(question)}</div>"
        )
        self.notices = widgets.HTML("")
        self.answer = widgets.Output(layout=widgets.Layout(padding="0 8px"))
        self.metrics = widgets.HTML("")
        self.error = widgets.HTML("")
        # flex 0 0 auto: a turn keeps its full height in the scrolling conversation (never squeezed)
        self.box = widgets.VBox(
            [self.user, self.notices, self.answer, self.error, self.metrics], layout=widgets.Layout(flex="0 0 auto")
        )
        self.box.add_class("phi3-chat-turn")
        self.answer.add_class("phi3-chat-answer")
        self.metrics.add_class("phi3-chat-metrics")
        self.pieces: list[str] = []
        self.response: Optional[Response] = None
        self.error_text = ""
        self._metrics_painted = 0.0

    @property
    def text(self) -> str:
        """The answer so far (raw Markdown)."""
        return "".join(self.pieces)

    def show_notices(self, notices: list[str]) -> None:
        self.notices.value = "".join(
            f"<div style='color:var(--jp-warn-color0,#a60)'><i>Note: {html.escape(n)}</i></div>" for n in notices
        )

    def paint(self, running: bool) -> None:
        """Put the answer so far into its output (one Markdown output, replaced in place)."""
        shown = safe_markdown(self.text) + (" ▌" if running else "")
        self.answer.outputs = (
            {"output_type": "display_data", "data": {"text/markdown": shown, "text/plain": shown}, "metadata": {}},
        )
        now = time.monotonic()
        if self.response is not None and (not running or now - self._metrics_painted >= METRICS_INTERVAL):
            self._metrics_painted = now
            m = self.response.metrics
            how = "" if running else f" data-finish='{html.escape(m.finish_reason)}'"
            meaning = "" if running else f" title='{html.escape(FINISH_REASONS.get(m.finish_reason, LEGEND))}'"
            self.metrics.value = (
                f"<span class='phi3-chat-metrics-line'{how}{meaning} "
                "style='color:var(--jp-ui-font-color2,#777);font-size:smaller'>"
                f"{html.escape(metrics_line(m, running))}</span>"
            )

    def show_error(self, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, Phi3Error) else f"{type(exc).__name__}: {exc}"
        self.error_text = msg
        self.error.value = (
            "<div style='color:var(--jp-error-color0,#c00);white-space:pre-wrap'>"
            f"<b>Error:</b> {html.escape(msg)}</div>"
        )


class ChatWidget(widgets.VBox):
    """A chat over a ChatSession. Display it in a notebook; or drive it from code:

    >>> w = ChatWidget(llm)
    >>> w.input.value = "What is the capital of France?"; w.send_button.click(); w.wait()
    >>> w.turns[-1].text
    """

    #: idle | generating | stopping (observe it from code; the page shows it in the status line).
    state = traitlets.Unicode(IDLE)

    def __init__(
        self,
        llm_or_session: Any,
        *,
        system: Optional[str] = None,
        max_new_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        max_chars: Optional[int] = None,
        paint_interval: float = 0.03,
        height: str = "420px",
    ):
        super().__init__()
        self.session = _as_session(llm_or_session, system)
        self.session.print_notices = False  # the chat shows each turn's notices itself (no prints from threads)
        backend = self.session.backend
        opts = self.session.options
        self.paint_interval = float(paint_interval)
        context = int(backend.context_length)
        self.max_chars = int(max_chars) if max_chars else _CHARS_PER_TOKEN * int(backend.max_prompt_tokens)
        self.turns: list[Turn] = []
        self._lock = threading.RLock()
        self._submit_pending = False
        self._submit_timer: Optional[threading.Timer] = None
        self._worker: Optional[threading.Thread] = None
        self._refocus = False  # the question came from the text box: put the cursor back there when it ends
        self._clear_requested = False

        # -- controls ------------------------------------------------------------------------
        self.model_label = widgets.HTML(
            f"<b>backend</b> {html.escape(backend.name)} · <b>device</b> {html.escape(str(backend.device))} · "
            f"<b>precision</b> {html.escape(str(backend.precision))} · <b>model</b> {html.escape(backend.model.name)}"
        )
        self.system_prompt = widgets.Text(
            value=self.session.system or "", placeholder="System prompt (optional), e.g. You are a concise assistant.",
            description="System", layout=widgets.Layout(width="100%"),
        )
        self.temperature = widgets.BoundedFloatText(
            value=opts.temperature if temperature is None else float(temperature),
            min=0.0, max=2.0, step=0.1, description="Temperature",
            style={"description_width": "initial"}, layout=widgets.Layout(width="200px"),
        )
        self.max_new_tokens = widgets.BoundedIntText(
            value=opts.max_new_tokens if max_new_tokens is None else int(max_new_tokens),
            min=1, max=max(1, context - 1), step=32, description="Max new tokens",
            style={"description_width": "initial"}, layout=widgets.Layout(width="220px"),
        )
        # Newest turn first, shown bottom-up (column-reverse): the browser keeps the view pinned
        # to the newest text as it streams in, and still lets the reader scroll back.
        self.conversation = widgets.VBox(
            layout=widgets.Layout(
                height=height, overflow_y="auto", flex_flow="column-reverse",
                border="1px solid var(--jp-border-color1,#ccc)", padding="4px",
            )
        )
        # continuous_update=False: the page sends the text once, right after Enter's "submit" event
        # (or when the box loses focus), not per keystroke; see _on_submit.
        self.input = widgets.Text(placeholder="Ask something and press Enter", continuous_update=False,
                                  layout=widgets.Layout(flex="1 1 auto", width="auto"))
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.clear_button = widgets.Button(description="Clear", icon="trash")
        self.status = widgets.HTML()
        self.hint = widgets.HTML()
        self.legend = widgets.HTML(
            f"<span style='color:var(--jp-ui-font-color2,#777);font-size:smaller'>{html.escape(LEGEND)}</span>"
        )

        # Enter sends: the submit event (deprecated in ipywidgets 8) and then the value, see _on_submit; the value
        # alone also changes when the box merely loses focus, which would send half-typed questions.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.input.on_submit(self._on_submit)
        self.input.observe(self._on_input_value, names="value")
        self.send_button.on_click(lambda _b: self.send())
        self.stop_button.on_click(lambda _b: self.stop())
        self.clear_button.on_click(lambda _b: self.clear())
        self.observe(self._on_state, names="state")

        self.children = [
            self.model_label, self.system_prompt, widgets.HBox([self.temperature, self.max_new_tokens]),
            self.conversation, widgets.HBox([self.input, self.send_button, self.stop_button, self.clear_button]),
            widgets.HBox([self.status, self.hint]), self.legend,
        ]
        self.add_class("phi3-chat")  # stable names for the page (and the browser test)
        named = {"conversation": self.conversation, "input": self.input, "send": self.send_button,
                 "stop": self.stop_button, "clear": self.clear_button, "max-new-tokens": self.max_new_tokens,
                 "temperature": self.temperature, "system": self.system_prompt, "legend": self.legend}
        for name, w in named.items():
            w.add_class(f"phi3-chat-{name}")
        self._on_state({"new": IDLE})

    # -- actions -----------------------------------------------------------------------------
    def send(self, text: Optional[str] = None) -> bool:
        """Send the input box's text (or ``text``); returns False when nothing was sent, and says why."""
        question = self.input.value if text is None else text
        with self._lock:
            if self.state != IDLE:
                self._hint("Still answering: wait, or press Stop first.")
                return False
            if not question or not question.strip():
                self._hint("Type a question first.")
                return False
            if len(question) > self.max_chars:
                self._hint(
                    f"The message has {len(question):,} characters; the limit is {self.max_chars:,} "
                    f"(the model reads at most {self.session.backend.max_prompt_tokens:,} tokens). Shorten it."
                )
                return False
            try:
                self.session.system = self.system_prompt.value.strip() or None
                response = self.session.ask(
                    question, max_new_tokens=int(self.max_new_tokens.value), temperature=float(self.temperature.value)
                )
            except Phi3Error as exc:  # too long with the system prompt, bad option...: nothing started
                self._hint(str(exc))
                return False
            turn = self._new_turn(question)
            turn.response = response
            if response.notices:
                turn.show_notices(response.notices)
            self.turns.append(turn)
            self.conversation.children = (turn.box,) + tuple(self.conversation.children)
            self._refocus = text is None
            self._hint("")
            if text is None:
                self.input.value = ""
            self.state = GENERATING
            self._worker = threading.Thread(target=self._generate, args=(turn,), name="phi3-chat-widget", daemon=True)
            self._worker.start()
            return True

    #: Seconds to wait, after Enter, for the box's text when the page sends none (Enter on unchanged text).
    submit_wait = 0.3

    def _on_submit(self, _widget=None) -> None:
        """Enter in the page: send when the box's text arrives (a later message), or after ``submit_wait``."""
        with self._lock:
            if self._submit_timer is not None:
                self._submit_timer.cancel()
            self._submit_pending = True
            timer = threading.Timer(self.submit_wait, self._claim_submit)
            timer.daemon = True
            self._submit_timer = timer
        timer.start()

    def _on_input_value(self, _change) -> None:
        self._claim_submit()

    def _claim_submit(self) -> None:
        with self._lock:
            if not self._submit_pending:
                return
            self._submit_pending = False
            timer = self._submit_timer  # kept: wait() joins it, so a send from the timer is waited for
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        self.send()

    def _new_turn(self, question: str) -> Turn:
        """The view of one question and its answer (a subclass may observe or restyle it)."""
        return Turn(question)

    def stop(self) -> None:
        """End the answer being generated (in the runtime); safe when idle."""
        with self._lock:
            if self.state == IDLE:
                self._hint("Nothing to stop.")
                return
            self.state = STOPPING
        self.session.stop()

    def clear(self) -> None:
        """Empty the conversation, the session's history and the runtime's cache; safe while generating."""
        with self._lock:
            busy = self.state != IDLE
            if busy:  # let the answer end first: it records its turn when it ends, and Clear must win
                self._clear_requested = True
                self.state = STOPPING
        if busy:
            self.session.stop()
        else:
            self._clear_now()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the current answer has ended (for code and tests); True when idle."""
        timer = self._submit_timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout)
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return self.state == IDLE

    # -- the background answer -----------------------------------------------------------------
    def _generate(self, turn: Turn) -> None:
        """Read the answer, repainting (in this thread) when a piece arrives, at most every ``paint_interval`` s."""
        last_paint = 0.0
        try:
            turn.paint(running=True)
            for piece in turn.response:
                turn.pieces.append(piece)
                now = time.monotonic()
                if now - last_paint >= self.paint_interval:
                    last_paint = now
                    turn.paint(running=True)
        except Exception as exc:  # shown in the chat, never lost
            turn.show_error(exc)
        finally:
            try:
                turn.paint(running=False)
            finally:
                with self._lock:
                    clear = self._clear_requested
                    self._clear_requested = False
                    self.state = IDLE
                if clear:
                    self._clear_now()

    def _clear_now(self) -> None:
        self.session.clear()
        self.turns = []
        self.conversation.children = ()
        self._hint("Conversation cleared.")

    # -- view state ------------------------------------------------------------------------------
    def _hint(self, text: str) -> None:
        self.hint.value = f"<i>{html.escape(text)}</i>" if text else ""

    def _on_state(self, change) -> None:
        state = change["new"]
        busy = state != IDLE
        for w in (self.input, self.send_button, self.system_prompt, self.temperature, self.max_new_tokens):
            w.disabled = busy
        if not busy and self._refocus:
            # The box was disabled while answering, which took the cursor out of it: put it back, so a
            # follow-up typed straight away lands in the box (sent after `disabled`, so the page can focus it).
            self._refocus = False
            self.input.focus()
        self.stop_button.disabled = state != GENERATING
        label = {IDLE: "ready", GENERATING: "generating…", STOPPING: "stopping…"}[state]
        self.status.value = f"<span class='phi3-chat-state' data-state='{state}'>{label}</span>&nbsp;"

    @property
    def history(self) -> list[dict]:
        """The session's history (user/assistant messages)."""
        return self.session.history


def chat_widget(llm_or_session: Any, **kw: Any) -> ChatWidget:
    """A chat widget over a loaded model (``load(...)``) or a ChatSession; display it as a cell's last line.

    Keywords: system, max_new_tokens, temperature, max_chars, paint_interval, height.
    """
    return ChatWidget(llm_or_session, **kw)
