"""The shared machinery: options, the queue bridge, detokenization, responses, chat sessions."""

from __future__ import annotations

import threading
import time

import pytest

from phi3_helpers.errors import EmptyPrompt, GenerationTimeout, InvalidOption, PromptTooLong
from phi3_helpers.options import GenerationOptions
from phi3_helpers.streaming import IncrementalDecoder, bridge

from prompts import FRANCE


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, word",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": -5}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"), ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.01}, "top_p"),
        ({"do_sample": True, "temperature": 0}, "temperature"), ({"max_tokens": 10}, "unknown option 'max_tokens'"),
    ],
)
def test_bad_options_are_refused_with_one_line_naming_the_fix(bad, word):
    with pytest.raises(InvalidOption) as err:
        GenerationOptions.make(None, **bad)
    msg = str(err.value)
    assert word in msg and "\n" not in msg


def test_options_default_to_greedy_and_sampling_follows_temperature():
    assert GenerationOptions().sampling is False
    assert GenerationOptions.make(None, temperature=0.7).sampling is True
    assert GenerationOptions.make(None, temperature=0.7, do_sample=False).sampling is False
    base = GenerationOptions.make(None, max_new_tokens=12)
    assert GenerationOptions.make(base, top_p=0.5) == GenerationOptions(max_new_tokens=12, top_p=0.5)


# -- the queue bridge ---------------------------------------------------------------------------
def test_bridge_reraises_the_worker_exception_in_the_reader():
    def run(emit):
        emit([1])
        raise RuntimeError("runtime exploded")

    it = bridge(run, threading.Event(), timeout=5)
    assert next(it) == [1]
    with pytest.raises(RuntimeError, match="runtime exploded"):
        next(it)


def test_bridge_times_out_instead_of_hanging_and_tells_the_runtime_to_stop():
    stop = threading.Event()
    ended = threading.Event()

    def run(emit):
        stop.wait(10)  # a stuck runtime that only ends when asked
        ended.set()

    with pytest.raises(GenerationTimeout, match="no token"):
        list(bridge(run, stop, timeout=0.3))
    assert stop.is_set() and ended.wait(5)


def test_a_runtime_that_ignores_stop_does_not_hold_the_reader_after_the_timeout():
    release = threading.Event()

    def run(emit):
        release.wait(30)  # deaf to the stop event

    reader_done = threading.Event()
    errors = []

    def read():
        try:
            list(bridge(run, threading.Event(), timeout=0.3))
        except GenerationTimeout as exc:
            errors.append(exc)
        reader_done.set()

    threading.Thread(target=read, daemon=True).start()
    # the reader returns after the timeout plus a short grace, while the deaf worker still runs
    assert reader_done.wait(10)
    assert len(errors) == 1
    assert [t for t in threading.enumerate() if t.name == "phi3-generate" and t.is_alive()]  # still deaf
    release.set()


def test_closing_the_reader_early_stops_the_worker():
    stop = threading.Event()
    produced = []
    ended = threading.Event()

    def run(emit):
        try:
            for i in range(10_000):
                produced.append(i)
                if emit([i]):
                    return
                time.sleep(0.05)
        finally:
            ended.set()

    it = bridge(run, stop, timeout=5)
    assert next(it) == [0]
    it.close()
    assert stop.is_set()
    # close() joins the worker: it has ended, a token or so after the stop (a worker that ignored
    # the stop would still be running, and would produce thousands of ids)
    assert ended.is_set() and len(produced) <= 4, len(produced)


# -- detokenization ----------------------------------------------------------------------------
def test_incremental_decoding_equals_full_decoding(offline_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(offline_model.folder))
    text = "Zürich → 東京 in 2024: 👋🏽 café!\n```python\nprint('hi')\n```\n" * 6
    ids = tok(text, add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(tok)
    pieces = [dec.push([i]) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)


# -- prompts and sessions on a real backend -----------------------------------------------------
def test_empty_and_whitespace_prompts_are_refused(load_backend):
    llm = load_backend("transformers")
    for bad in ["", "   \n\t"]:
        with pytest.raises(EmptyPrompt):
            llm.generate(bad)
        with pytest.raises(EmptyPrompt):
            llm.chat().ask(bad)
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=16)  # still answers


def test_prompt_longer_than_the_context_names_the_limit(load_backend):
    llm = load_backend("transformers")
    with pytest.raises(PromptTooLong) as err:
        llm.generate("word " * (llm.context_length + 10))
    assert str(llm.context_length) in str(err.value)
    with pytest.raises(PromptTooLong):
        llm.chat().ask("word " * (llm.context_length + 10))


def test_chat_session_keeps_history_and_the_next_prompt_contains_it(load_backend):
    llm = load_backend("transformers")
    chat = llm.chat(system="You are a helpful assistant.")
    first = chat.ask(FRANCE, max_new_tokens=16).text()
    assert "Paris" in first
    assert [m["role"] for m in chat.history] == ["user", "assistant"]
    assert chat.history[1]["content"] == first
    n_before = llm.count_tokens(chat.messages("And Germany?"))
    chat.ask("And Germany?", max_new_tokens=16).text()
    assert len(chat.history) == 4
    assert llm.count_tokens(chat.messages("x")) > n_before  # the history is really sent
    chat.clear()
    assert chat.history == []


def test_chat_drops_the_oldest_turns_with_a_notice_when_the_context_is_full(offline_model, capsys):
    from phi3_helpers.backends.hf import TransformersBackend

    class SmallContext(TransformersBackend):
        context_length = 8192

    llm = SmallContext(SmallContext.plan(offline_model))
    chat = llm.chat()
    chat.ask("Name a color.", max_new_tokens=24).text()
    chat.ask("Name an animal.", max_new_tokens=24).text()
    # Now pretend the context is one token too small for the whole history plus the next answer.
    needed = llm.count_tokens(chat.messages("Name a fruit.")) + 24
    SmallContext.context_length = needed - 1
    resp = chat.ask("Name a fruit.", max_new_tokens=24)
    assert resp.notices and "dropped the 1 oldest" in resp.notices[0]
    assert "dropped" in capsys.readouterr().err
    resp.text()
    assert resp.metrics.prompt_tokens + 24 <= SmallContext.context_length
    assert chat.history[-2]["content"] == "Name a fruit."
    assert chat.history[0]["content"] == "Name an animal."  # only the oldest turn went


def test_text_from_another_thread_waits_for_the_whole_answer(offline_model):
    from transformers import AutoTokenizer

    from phi3_helpers.response import Response

    tok = AutoTokenizer.from_pretrained(str(offline_model.folder))
    ids = tok("one two three four five six", add_special_tokens=False)["input_ids"]

    def slow_tokens():
        for i in ids:
            time.sleep(0.05)
            yield [i]

    resp = Response(slow_tokens(), tok, threading.Event(), prompt_tokens=1, max_new_tokens=100)
    reader = threading.Thread(target=lambda: [None for _ in resp])
    reader.start()
    while not resp.token_ids:
        time.sleep(0.01)
    assert resp.text() == "one two three four five six"  # waited, not the text so far
    reader.join()


def test_metrics_line_counts_tokens_in_words():
    from phi3_helpers.response import Metrics

    one = str(Metrics(prompt_tokens=1, tokens=1, ttft_s=0.02, total_s=0.02, finish_reason="length"))
    assert "· 1 token ·" in one and "prompt 1 tokens" not in one and "prompt 1 token ·" in one
    assert "· 2 tokens ·" in str(Metrics(prompt_tokens=9, tokens=2, ttft_s=0.02, total_s=0.03, finish_reason="ended"))
