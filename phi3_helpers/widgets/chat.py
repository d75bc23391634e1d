"""The course's chat widget: a streaming multi-turn chat over any backend's ChatSession.

A background thread reads the answer and only sets widget values; Stop ends generation inside the runtime.
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

from ..errors import InvalidOption, Phi3Error, one_line
from ..response import FINISH_REASONS, Response
from ..session import ChatSession

IDLE, GENERATING, STOPPING = "idle", "generating", "stopping"
LEGEND = "How an answer ended: " + " · ".join(f"{word} = {meaning}" for word, meaning in FINISH_REASONS.items())
_QUIET = "color:var(--jp-ui-font-color2,#777);font-size:smaller"
_ZWSP = "\u200b"
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})(.*)$")
_SCRIPT_URL = re.compile(r"(?i)\b(javascript|vbscript)\s*:")


def safe_markdown(text: str) -> str:
    """The answer as Markdown that cannot run code in the page: outside fenced blocks (which end where marked ends
    them) a zero-width space follows each ``<``, so no tag can start, and ``javascript:`` links are broken."""
    out, fence = [], None
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        opening = _FENCE_OPEN.match(body) if fence is None else None
        if fence is None and opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            fence = opening.group(1)
        elif fence is None:
            line = _SCRIPT_URL.sub(lambda u: u.group(1) + _ZWSP + ":", line.replace("<", "<" + _ZWSP))
        else:
            stripped = body.lstrip(" ")
            if len(body) - len(stripped) <= 3 and stripped.startswith(fence) and not stripped[len(fence):].strip("`~ "):
                fence = None
        out.append(line)
    return "".join(out)


def _named(name: str, widget: widgets.Widget) -> widgets.Widget:
    widget.add_class(f"phi3-chat-{name}")  # a stable name for the page (and the browser test)
    return widget


class Turn:
    """One question and its answer in the conversation view."""

    def __init__(self, question: str):
        self.question = question
        self.user = widgets.HTML("<div style='white-space:pre-wrap;background:var(--jp-layout-color2,#eee);"
                                 f"border-radius:6px;padding:4px 8px'><b>You:</b> {html.escape(question)}</div>")
        self.notices, self.error = widgets.HTML(), widgets.HTML()
        self.answer = _named("answer", widgets.Output(layout={"padding": "0 8px"}))
        self.metrics = _named("metrics", widgets.HTML())
        parts = [self.user, self.notices, self.answer, self.error, self.metrics]
        self.box = _named("turn", widgets.VBox(parts, layout={"flex": "0 0 auto"}))  # never squeezed
        self.pieces: list[str] = []
        self.response: Optional[Response] = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def paint(self, running: bool) -> None:
        shown = safe_markdown(self.text) + (" ▌" if running else "")
        data = {"text/markdown": shown, "text/plain": shown}
        self.answer.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
        m = self.response.metrics
        how = "" if running else (f" data-finish='{html.escape(m.finish_reason)}'"
                                  f" title='{html.escape(FINISH_REASONS.get(m.finish_reason, LEGEND))}'")
        self.metrics.value = f"<span class='phi3-chat-metrics-line'{how} style='{_QUIET}'>{html.escape(str(m))}</span>"


class ChatWidget(widgets.VBox):
    """A chat over a ChatSession; from code: ``w.input.value = "Hi"; w.send_button.click(); w.wait()``."""

    state = traitlets.Unicode(IDLE)  # idle | generating | stopping
    submit_wait = 0.3  # seconds to wait, after Enter, for the box's text when the page sends none

    def __init__(
        self, llm_or_session: Any, *, system: Optional[str] = None, max_new_tokens: Optional[int] = None,
        temperature: Optional[float] = None, max_chars: Optional[int] = None, paint_interval: float = 0.03,
        height: str = "420px",
    ):
        super().__init__()
        if isinstance(llm_or_session, ChatSession):
            self.session = llm_or_session
            self.session.system = self.session.system if system is None else system
        elif callable(getattr(llm_or_session, "chat", None)):
            self.session = llm_or_session.chat(system=system)
        else:
            raise InvalidOption(f"chat_widget needs a loaded model or a chat session (got "
                                f"{type(llm_or_session).__name__}); use chat_widget(phi3_helpers.load('openvino')).")
        self.session.print_notices = False  # each turn shows its notices (no prints from threads)
        backend, opts = self.session.backend, self.session.options
        self.paint_interval = float(paint_interval)
        self.max_chars = int(max_chars or 4 * backend.max_prompt_tokens)  # refused before it is tokenized
        self.turns: list[Turn] = []
        self._lock = threading.RLock()
        self._submit_timer: Optional[threading.Timer] = None  # from Enter until the question is sent
        self._worker: Optional[threading.Thread] = None
        self._refocus = False  # the question came from the box: give it the cursor back when the answer ends
        self._clear_requested = False

        about = {"backend": backend.name, "device": backend.device, "precision": backend.precision,
                 "model": backend.model.name}
        self.model_label = widgets.HTML(" · ".join(f"<b>{k}</b> {html.escape(str(v))}" for k, v in about.items()))
        self.system_prompt = _named("system", widgets.Text(
            self.session.system or "", placeholder="System prompt (optional), e.g. You are a concise assistant.",
            description="System", layout={"width": "100%"}))
        initial = {"description_width": "initial"}
        self.temperature = _named("temperature", widgets.BoundedFloatText(
            opts.temperature if temperature is None else float(temperature), min=0.0, max=2.0, step=0.1,
            description="Temperature", style=initial, layout={"width": "200px"}))
        self.max_new_tokens = _named("max-new-tokens", widgets.BoundedIntText(
            opts.max_new_tokens if max_new_tokens is None else int(max_new_tokens), min=1,
            max=max(1, backend.context_length - 1), step=32, description="Max new tokens", style=initial,
            layout={"width": "220px"}))
        # newest turn first, shown bottom-up: the browser keeps the newest text in view, and lets the reader scroll back
        self.conversation = _named("conversation", widgets.VBox(layout={
            "height": height, "overflow_y": "auto", "flex_flow": "column-reverse", "padding": "4px",
            "border": "1px solid var(--jp-border-color1,#ccc)"}))
        # continuous_update=False: the page sends the text after Enter (or on blur), not per keystroke
        self.input = _named("input", widgets.Text(placeholder="Ask something and press Enter", continuous_update=False,
                                                  layout={"flex": "1 1 auto", "width": "auto"}))
        self.send_button = _named("send", widgets.Button(description="Send", button_style="primary",
                                                         icon="paper-plane"))
        self.stop_button = _named("stop", widgets.Button(description="Stop", button_style="warning", icon="stop"))
        self.clear_button = _named("clear", widgets.Button(description="Clear", icon="trash"))
        self.status, self.hint = widgets.HTML(), widgets.HTML()
        self.legend = _named("legend", widgets.HTML(f"<span style='{_QUIET}'>{html.escape(LEGEND)}</span>"))

        # Enter sends: the submit event (deprecated in ipywidgets 8), then the value; the value alone also changes
        # when the box merely loses focus, which would send half-typed questions.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.input.on_submit(self._on_submit)
        self.input.observe(self._claim_submit, names="value")
        self.send_button.on_click(lambda _button: self.send())
        self.stop_button.on_click(lambda _button: self.stop())
        self.clear_button.on_click(lambda _button: self.clear())
        self.observe(self._on_state, names="state")
        self.children = [
            self.model_label, self.system_prompt, widgets.HBox([self.temperature, self.max_new_tokens]),
            self.conversation, widgets.HBox([self.input, self.send_button, self.stop_button, self.clear_button]),
            widgets.HBox([self.status, self.hint]), self.legend,
        ]
        self.add_class("phi3-chat")
        self._on_state({"new": IDLE})

    def send(self, text: Optional[str] = None) -> bool:
        """Send the input box's text (or ``text``); returns False when nothing was sent, with a hint saying why."""
        question = self.input.value if text is None else text
        with self._lock:
            why = self._why_not(question)
            if not why:
                try:
                    self.session.system = self.system_prompt.value.strip() or None
                    response = self.session.ask(question, max_new_tokens=int(self.max_new_tokens.value),
                                                temperature=float(self.temperature.value))
                except Phi3Error as exc:  # too long with the system prompt, a bad option...: nothing started
                    why = str(exc)
            self._hint(why)
            if why:
                return False
            turn = self._new_turn(question)
            turn.response = response
            turn.notices.value = "".join(f"<div style='color:var(--jp-warn-color0,#a60)'><i>Note: {html.escape(n)}</i>"
                                         "</div>" for n in response.notices)
            self.turns.append(turn)
            self.conversation.children = (turn.box, *self.conversation.children)
            self._refocus = text is None
            if text is None:
                self.input.value = ""
            self.state = GENERATING
            self._worker = threading.Thread(target=self._generate, args=(turn,), name="phi3-chat-widget", daemon=True)
            self._worker.start()
            return True

    def _why_not(self, question: str) -> str:
        if self.state != IDLE:
            return "Still answering: wait, or press Stop first."
        if not question.strip():
            return "Type a question first."
        if len(question) > self.max_chars:
            return (f"The message has {len(question):,} characters; the limit is {self.max_chars:,} "
                    f"(the model reads at most {self.session.backend.max_prompt_tokens:,} tokens). Shorten it.")
        return ""

    def _new_turn(self, question: str) -> Turn:
        """The view of one question and its answer (a subclass may observe or restyle it)."""
        return Turn(question)

    def _on_submit(self, _widget=None) -> None:
        """Enter in the page: send when the box's text arrives (a later message), or after ``submit_wait`` s."""
        with self._lock:
            if self._submit_timer is not None:
                self._submit_timer.cancel()
            self._submit_timer = threading.Timer(self.submit_wait, self._claim_submit)
            self._submit_timer.daemon = True
            self._submit_timer.start()

    def _claim_submit(self, _change=None) -> None:
        """Send once per Enter: on the box's new text or on the timer, whichever comes first."""
        with self._lock:
            timer, self._submit_timer = self._submit_timer, None
            if timer is not None:
                timer.cancel()
                self.send()

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
            if self.state == IDLE:
                self._clear_now()
                return
            self._clear_requested = True  # the answer records its turn when it ends: Clear comes after that
            self.state = STOPPING
        self.session.stop()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the current answer has ended; True when idle."""
        with self._lock:
            timer = self._submit_timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout)
        if self._worker is not None:
            self._worker.join(timeout)
        return self.state == IDLE

    def _generate(self, turn: Turn) -> None:
        """Read the answer, repainting when a piece arrives, at most every ``paint_interval`` s."""
        last_paint = 0.0
        try:
            turn.paint(running=True)
            for piece in turn.response:
                turn.pieces.append(piece)
                if time.monotonic() - last_paint >= self.paint_interval:
                    last_paint = time.monotonic()
                    turn.paint(running=True)
        except Exception as exc:  # shown in the chat, never lost
            turn.error.value = ("<div style='color:var(--jp-error-color0,#c00);white-space:pre-wrap'>"
                                f"<b>Error:</b> {html.escape(one_line(exc))}</div>")
        finally:
            try:
                turn.paint(running=False)
            finally:
                with self._lock:
                    if self._clear_requested:
                        self._clear_requested = False
                        self._clear_now()
                    self.state = IDLE

    def _clear_now(self) -> None:
        self.session.clear()
        self.turns = []
        self.conversation.children = ()
        self._hint("Conversation cleared.")

    def _hint(self, text: str) -> None:
        self.hint.value = f"<i>{html.escape(text)}</i>" if text else ""

    def _on_state(self, change) -> None:
        state = change["new"]
        for w in (self.input, self.send_button, self.system_prompt, self.temperature, self.max_new_tokens):
            w.disabled = state != IDLE
        self.stop_button.disabled = state != GENERATING
        if state == IDLE and self._refocus:  # disabling the box took the cursor out: give it back, now it is enabled
            self._refocus = False
            self.input.focus()
        label = {IDLE: "ready", GENERATING: "generating…", STOPPING: "stopping…"}[state]
        self.status.value = f"<span class='phi3-chat-state' data-state='{state}'>{label}</span>&nbsp;"

    @property
    def history(self) -> list[dict]:
        return self.session.history


def chat_widget(llm_or_session: Any, **kw: Any) -> ChatWidget:
    """A chat widget over a loaded model or a ChatSession (keywords: system, max_new_tokens, temperature,
    max_chars, paint_interval, height); display it as a cell's last line."""
    return ChatWidget(llm_or_session, **kw)
