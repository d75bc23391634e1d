"""The chat widget, driven from code on the offline model: set the input, click, wait, read.

The same calls the page makes: ``send_button.click()`` runs the button's click handlers, and a
``{"event": "submit"}`` message on the input box is what JupyterLab sends when Enter is pressed.
"""

from __future__ import annotations

import copy
import threading
import time

import pytest

from phi3_helpers.errors import Phi3Error
from phi3_helpers.widgets import ChatWidget, chat_widget
from phi3_helpers.widgets.chat import FINISH_REASONS, Turn, safe_markdown

from prompts import FRANCE
LONG = "Write a long story about a dragon."
TIMEOUT = 600  # seconds for one answer on a busy 2-core machine (a guard against hangs, not a timing check)


@pytest.fixture(scope="module")
def llm(load_backend):
    return load_backend("transformers")


def _backend(load_backend, name):
    try:
        return load_backend(name)
    except (Phi3Error, ImportError) as exc:
        pytest.skip(f"backend {name!r} is not usable here: {exc}")


def variant(backend, **members):
    """A second handle on a loaded backend (same model in memory) with some members replaced.

    Used for a small context or a failing runtime without touching the shared backend.
    """
    cls = type(f"{type(backend).__name__}Variant", (type(backend),), members)
    other = copy.copy(backend)
    other.__class__ = cls
    return other


def ask(w: ChatWidget, text: str, max_new_tokens: int = 48):
    w.max_new_tokens.value = max_new_tokens
    w.input.value = text
    w.send_button.click()
    assert w.wait(TIMEOUT), "the answer did not end"
    return w.turns[-1]


def wait_for_tokens(turn, n: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while len(turn.response.token_ids) < n:
        assert not turn.response.done, f"the answer ended before {n} tokens: {turn.text!r}"
        assert time.monotonic() < deadline, "no tokens came"
        time.sleep(0.01)


def shown_markdown(turn) -> str:
    (out,) = turn.answer.outputs
    return out["data"]["text/markdown"]


def generation_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("phi3-generate", "phi3-chat-widget")]


def assert_idle(w: ChatWidget) -> None:
    assert w.state == "idle"
    assert not w.input.disabled and not w.send_button.disabled
    assert w.stop_button.disabled


# -- the conversation ------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["transformers", "openvino"])
def test_multi_turn_second_answer_uses_the_first(load_backend, backend_name):
    llm = _backend(load_backend, backend_name)
    w = chat_widget(llm)
    assert llm.name in w.model_label.value and llm.model.name in w.model_label.value
    first = ask(w, "What is the capital of Japan?")
    assert "Tokyo" in first.text
    second = ask(w, "What is the population of that city?")
    # "that city" only means Tokyo through the history: asked alone, the model names another city.
    assert "Tokyo" in second.text, second.text
    alone = ask(chat_widget(llm), "What is the population of that city?")
    assert "Tokyo" not in alone.text, alone.text
    assert [m["role"] for m in w.history] == ["user", "assistant"] * 2
    assert w.history[2]["content"] == "What is the population of that city?"
    # rendered as Markdown, with the live metrics line from Response.metrics
    assert shown_markdown(second) == safe_markdown(second.text)
    m = second.response.metrics
    assert m.finish_reason == "ended" and m.tokens > 0 and m.ttft_s is not None
    assert f"{m.tokens} tokens" in second.metrics.value and "first token" in second.metrics.value
    assert_idle(w)


def press_enter(w: ChatWidget, typed: str | None) -> None:
    """What the page does on Enter: a "submit" event, then the box's text when it changed."""
    w.input._handle_string_msg(None, {"event": "submit"}, [])
    if typed is not None:
        w.input.value = typed


def test_enter_sends(llm):
    w = chat_widget(llm)
    press_enter(w, FRANCE)
    assert w.state == "generating"  # sent as soon as the text arrived
    assert w.wait(TIMEOUT)
    assert "Paris" in w.turns[-1].text and w.turns[-1].question == FRANCE
    assert w.input.value == ""
    # Enter on text the page had already sent (no new value comes): sent a moment later
    w.input.value = "What is the capital of Japan?"
    press_enter(w, None)
    assert w.wait(TIMEOUT)
    assert len(w.turns) == 2 and "Tokyo" in w.turns[-1].text
    # a late keystroke can never be lost or leak into the next question
    assert [m["content"] for m in w.history if m["role"] == "user"] == [FRANCE, "What is the capital of Japan?"]


def test_earlier_answers_are_not_repainted(llm):
    w = chat_widget(llm)
    first = ask(w, FRANCE)
    first_box = first.box
    repaints = []
    first.answer.observe(lambda change: repaints.append(change), names="outputs")
    second_paints = []
    w.input.value = "What is the capital of Japan?"
    w.send_button.click()
    second = w.turns[-1]
    second.answer.observe(lambda change: second_paints.append(change["new"]), names="outputs")
    assert w.wait(TIMEOUT)
    assert repaints == [] and w.conversation.children == (second.box, first_box)  # newest first, shown bottom-up
    # throttled: never more paints than text pieces (plus the empty first one and the final one)
    assert 2 <= len(second_paints) <= len(second.pieces) + 2
    assert second_paints[-1][0]["data"]["text/markdown"] == safe_markdown(second.text)


@pytest.mark.parametrize("backend_name", ["transformers", "openvino"])
def test_stop_mid_answer_then_a_normal_answer(load_backend, backend_name):
    llm = _backend(load_backend, backend_name)
    w = chat_widget(llm)
    w.max_new_tokens.value = 200
    w.input.value = LONG
    w.send_button.click()
    turn = w.turns[-1]
    assert w.state == "generating" and w.input.disabled and w.send_button.disabled and not w.stop_button.disabled
    wait_for_tokens(turn, 4)
    at_stop = len(turn.response.token_ids)
    w.stop_button.click()
    assert w.state in ("stopping", "idle")
    assert w.wait(TIMEOUT)
    m = turn.response.metrics
    assert m.finish_reason == "stopped"
    # the runtime ended within about one token: no generation thread is left, the model is free
    assert len(turn.response.token_ids) <= at_stop + 2, (at_stop, len(turn.response.token_ids))
    assert generation_threads() == []
    assert llm._busy.acquire(blocking=False)
    llm._busy.release()
    assert "data-finish='stopped'" in turn.metrics.value and FINISH_REASONS["stopped"] in turn.metrics.value
    assert_idle(w)
    # the partial answer stays in the history, and the next question works
    assert w.history[-1]["content"] == turn.text and turn.text
    after = ask(w, FRANCE)
    assert "Paris" in after.text and after.response.metrics.finish_reason == "ended"


def test_focus_returns_to_the_text_box_when_an_answer_ends(llm):
    w = chat_widget(llm)
    focus = []  # what the page is told, with the box's state at that moment
    w.input.send = lambda content, buffers=None: focus.append((content, w.input.disabled))
    ask(w, FRANCE)
    assert focus == [({"do": "focus"}, False)]  # once, after the box is enabled again (a disabled box takes no focus)
    w.max_new_tokens.value = 200
    w.input.value = LONG
    w.send_button.click()
    wait_for_tokens(w.turns[-1], 2)
    assert len(focus) == 1  # not while answering
    w.stop_button.click()
    assert w.wait(TIMEOUT) and focus[-1] == ({"do": "focus"}, False) and len(focus) == 2  # after Stop too
    w.send("What is the capital of Japan?")  # asked from code, not the box: the cursor is left where it is
    assert w.wait(TIMEOUT) and len(focus) == 2


def test_metrics_line_says_how_the_answer_ended(llm):
    w = chat_widget(llm)
    assert all(f"{word} = {meaning}" in w.legend.value for word, meaning in FINISH_REASONS.items())  # explained once
    for question, max_new, expected in ((LONG, 4, "length"), (FRANCE, 64, None)):
        turn = ask(w, question, max_new_tokens=max_new)
        word = turn.response.metrics.finish_reason
        assert expected in (None, word), word
        assert f"data-finish='{word}'" in turn.metrics.value
        assert turn.metrics.value.split("</span>")[0].endswith(f"· {word}")  # the word itself, as metrics say it
        if word in FINISH_REASONS:
            assert f"title='{FINISH_REASONS[word]}'" in turn.metrics.value
    assert word not in ("length", "stopped", "error")  # a short answer the model ended itself


def test_stop_when_idle_is_safe(llm):
    w = chat_widget(llm)
    w.stop_button.click()
    assert "Nothing to stop" in w.hint.value
    assert_idle(w)
    assert "Paris" in ask(w, FRANCE).text


def test_clear_empties_history_and_view(llm):
    w = chat_widget(llm)
    ask(w, FRANCE)
    assert len(w.history) == 2 and len(w.conversation.children) == 1
    w.clear_button.click()
    assert w.history == [] and w.conversation.children == () and w.turns == []
    assert "cleared" in w.hint.value
    assert_idle(w)


def test_clear_while_generating_is_safe(llm):
    w = chat_widget(llm)
    w.max_new_tokens.value = 200
    w.input.value = LONG
    w.send_button.click()
    wait_for_tokens(w.turns[-1], 3)
    w.clear_button.click()
    assert w.wait(TIMEOUT)
    # Clear wins over the stopped answer recording its turn
    assert w.history == [] and w.conversation.children == ()
    assert generation_threads() == []
    assert_idle(w)
    assert "Paris" in ask(w, FRANCE).text
    assert len(w.history) == 2


def test_second_send_while_generating_is_ignored(llm):
    w = chat_widget(llm)
    w.max_new_tokens.value = 48
    w.input.value = FRANCE
    w.send_button.click()
    assert w.input.disabled
    w.send_button.click()
    assert "Still answering" in w.hint.value
    w._hint("")
    press_enter(w, "What is the capital of Japan?")
    assert "Still answering" in w.hint.value
    assert w.wait(TIMEOUT)
    assert len(w.turns) == 1 and len(w.conversation.children) == 1
    assert [m["content"] for m in w.history if m["role"] == "user"] == [FRANCE]
    assert "Paris" in w.turns[0].text and "Tokyo" not in w.turns[0].text
    assert w.input.value == "What is the capital of Japan?"  # kept, to send when idle


def test_context_overflow_drops_oldest_turns_with_a_notice(llm):
    max_new = 24
    one = llm.count_tokens([{"role": "user", "content": FRANCE}])
    # room for about two short turns: the third question must drop the oldest
    small = variant(llm, context_length=2 * one + max_new + 8)
    w = chat_widget(small)
    questions = [FRANCE, "What is the capital of Japan?", "What is the capital of Spain?", "What is the capital of Germany?"]
    noticed = None
    for q in questions:
        turn = ask(w, q, max_new_tokens=max_new)
        assert turn.error.value == "", turn.error.value
        if turn.response.notices:
            noticed = turn
            break
    assert noticed is not None, "no turn was dropped"
    assert "dropped the" in noticed.notices.value and "oldest turn" in noticed.notices.value
    users = [m["content"] for m in w.history if m["role"] == "user"]
    assert FRANCE not in users and users[-1] == noticed.question
    assert noticed.text  # the answer still came
    assert small.count_tokens(w.session.messages()) <= small.context_length


def test_runtime_error_is_shown_in_the_chat(llm):
    base = type(llm)

    def stream_tokens(self, input_ids, options, stop):
        it = base.stream_tokens(self, input_ids, options, stop)
        for i, ids in enumerate(it):
            yield ids
            if self.fail and i == 2:
                it.close()
                raise RuntimeError("the runtime failed (a test backend that raises)")

    broken = variant(llm, stream_tokens=stream_tokens)
    broken.fail = True
    w = chat_widget(broken)
    turn = ask(w, LONG, max_new_tokens=64)
    assert "the runtime failed" in turn.error.value and "RuntimeError" in turn.error.value
    assert turn.response.metrics.finish_reason == "error"
    assert turn.text and shown_markdown(turn) == safe_markdown(turn.text)  # the partial answer is kept
    assert_idle(w)
    broken.fail = False
    assert "Paris" in ask(w, FRANCE).text


# -- bad input ---------------------------------------------------------------------------------


def test_empty_message_is_ignored_with_a_hint(llm):
    w = chat_widget(llm)
    for text in ("", "   \n\t "):
        w.input.value = text
        w.send_button.click()
        assert "Type a question first" in w.hint.value
    assert w.turns == [] and w.history == []
    assert_idle(w)


def test_very_long_paste_is_refused_with_the_limit(llm):
    w = chat_widget(llm)
    paste = "All work and no play. " * 5000
    assert len(paste) > w.max_chars
    w.input.value = paste
    w.send_button.click()
    assert f"{w.max_chars:,}" in w.hint.value and "Shorten" in w.hint.value
    assert w.turns == [] and w.input.value == paste  # kept so it can be shortened
    # within the characters limit but over the model's token limit: the session says so
    small = variant(llm, context_length=64)
    w2 = chat_widget(small, max_chars=100_000)
    w2.max_new_tokens.value = 8
    w2.input.value = "word " * 200
    w2.send_button.click()
    assert "at most" in w2.hint.value and w2.turns == []
    assert_idle(w2)


def test_unicode_emoji_html_and_code_blocks(llm):
    w = chat_widget(llm)
    turn = ask(w, "Translate to French: I love pizza 🍕", max_new_tokens=24)
    assert "🍕" in turn.user.value
    assert "\ufffd" not in turn.text
    assert "🍕" in turn.text  # the model echoes the emoji (checked on this model): its 4 bytes arrive whole
    assert shown_markdown(turn) == safe_markdown(turn.text)
    # the question is shown as text, never as HTML
    assert "&lt;b&gt;pizza&lt;/b&gt; 🍕" in Turn("<b>pizza</b> 🍕").user.value
    code = ask(chat_widget(llm), "Write a Python function that adds two numbers.", max_new_tokens=40)
    md = shown_markdown(code)
    assert md == safe_markdown(code.text) and "```python" in md and "def " in md  # Markdown passed as is: the page renders the code block
    (out,) = code.answer.outputs
    assert out["output_type"] == "display_data" and "text/markdown" in out["data"]


def test_model_html_cannot_run_in_the_page():
    answer = (
        "Hi <img src=x onerror=alert(1)> and [a link](JavaScript:alert(1))\n"
        "```html\n<b>kept</b> if a < b\n```\n"
        "after <script>alert(1)</script>\n"
        "  ```\n<i>an indented fence is not trusted</i>\n"
    )
    md = safe_markdown(answer)
    assert md.replace("\u200b", "") == answer  # looks and reads the same
    assert "<img" not in md and "<script" not in md and "</script" not in md and "<i>" not in md
    assert "JavaScript:" not in md
    assert "```html\n<b>kept</b> if a < b\n```\n" in md  # code blocks untouched
    # a block closed the way the renderer closes it: the text after it is text again
    assert "<p>" not in safe_markdown("~~~\ncode\n~~~~\n<p>")
    assert "<p>" in safe_markdown("~~~\n<p>\n")  # still inside the block (shown as text)


def test_refuses_what_is_not_a_model():
    with pytest.raises(Phi3Error, match="chat_widget needs a loaded model"):
        chat_widget("openvino")
