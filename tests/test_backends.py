"""Every backend of the foundation on the offline model: right answers, exact tokens, Stop."""

from __future__ import annotations

import pytest

from prompts import FRANCE, PROMPTS
from stopping import check_stop_ends_generation

CASES = [
    ("transformers", "fp32"),
    ("openvino", "int4"),
    ("openvino", "int8"),
    ("openvino", "fp16"),
    ("openvino-optimum", "int4"),
    ("openvino-optimum", "fp16"),
]


@pytest.mark.parametrize("backend, precision", CASES)
def test_answers_the_france_question_with_paris(load_backend, backend, precision):
    llm = load_backend(backend, precision)
    resp = llm.generate(FRANCE, max_new_tokens=32)
    pieces = list(resp)
    assert len(pieces) > 1  # streamed, not one block
    assert "Paris" in "".join(pieces) == resp.text()
    m = resp.metrics
    assert m.finish_reason in {"stop", "length"} and 0 < m.tokens == len(resp.token_ids) <= 32
    assert m.ttft_s > 0 and m.tokens_per_s > 0 and m.total_s >= m.ttft_s


@pytest.mark.parametrize("backend", ["openvino", "openvino-optimum"])
def test_openvino_fp16_greedy_tokens_equal_transformers_fp32(load_backend, backend):
    ref = load_backend("transformers", "fp32")
    ov = load_backend(backend, "fp16")
    for prompt in PROMPTS:
        want = ref.generate(prompt, max_new_tokens=32).token_ids
        got = ov.generate(prompt, max_new_tokens=32).token_ids
        assert got == want, prompt


@pytest.mark.parametrize(
    "backend, precision", [("transformers", "fp32"), ("openvino", "int4"), ("openvino-optimum", "int4"), ("onnx", "int4")]
)
def test_stop_mid_answer_ends_generation_and_the_next_question_is_answered(load_backend, backend, precision):
    llm = load_backend(backend, precision)
    chat = llm.chat()
    resp = check_stop_ends_generation(llm, ask=chat.ask)
    assert chat.history[-1]["content"] == resp.text()  # the partial answer is kept
    nxt = chat.ask(FRANCE, max_new_tokens=32)
    assert "Paris" in nxt.text() and nxt.metrics.finish_reason in {"stop", "length"}
    assert [m["role"] for m in chat.history] == ["user", "assistant", "user", "assistant"]
    # the second prompt carried the first turn: it is longer than the question alone
    assert nxt.metrics.prompt_tokens > llm.count_tokens([{"role": "user", "content": FRANCE}])


def test_reading_only_part_of_a_response_releases_the_model(load_backend):
    llm = load_backend("openvino", "int4")
    resp = llm.generate("Count from one to one hundred in words.", max_new_tokens=100)
    it = iter(resp)
    next(it)
    it.close()  # the reader walks away: that is a Stop
    assert resp.done and resp.metrics.finish_reason == "stopped"
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=32)
