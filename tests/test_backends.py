"""Every backend on the offline model: right answers, exact tokens, Stop; and what the registry reads."""

from __future__ import annotations

import pytest

from prompts import FRANCE, PROMPTS
from stopping import check_stop_ends_generation

CASES = [
    ("transformers", "fp32"), ("openvino", "int4"), ("openvino", "int8"), ("openvino", "fp16"),
    ("openvino-optimum", "int4"), ("openvino-optimum", "fp16"),
]


@pytest.mark.parametrize("backend, precision", CASES)
def test_answers_the_france_question_with_paris(load_backend, backend, precision):
    llm = load_backend(backend, precision)
    resp = llm.generate(FRANCE, max_new_tokens=32)
    pieces = list(resp)
    assert len(pieces) > 1  # streamed, not one block
    assert "Paris" in "".join(pieces) == resp.text()
    m = resp.metrics
    assert m.finish_reason in {"ended", "length"} and 0 < m.tokens == len(resp.token_ids) <= 32
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
    "backend, precision",
    [
        ("transformers", "fp32"), ("openvino", "int4"), ("openvino-optimum", "int4"), ("onnx", "int4"), ("npu", "int4"),
        ("npu-classic", "int4"),
    ],
)
def test_stop_mid_answer_ends_generation_and_the_next_question_is_answered(request, load_backend, backend, precision):
    """npu-classic runs on the labelled STAND-IN of its Windows-only library: this checks its Stop wiring only."""
    if backend == "npu-classic":
        from phi3_helpers import load

        request.getfixturevalue("stand_in_library")
        llm = load(backend, request.getfixturevalue("offline_model"), precision=precision)
    else:
        llm = load_backend(backend, precision)
    chat = llm.chat()
    resp = check_stop_ends_generation(llm, ask=chat.ask)
    assert chat.history[-1]["content"] == resp.text()  # the partial answer is kept
    nxt = chat.ask(FRANCE, max_new_tokens=32)
    assert "Paris" in nxt.text() and nxt.metrics.finish_reason in {"ended", "length"}
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


def test_the_registry_reads_each_backends_declarations():
    from phi3_helpers.backends import BACKENDS, available_backends, backend_class
    from phi3_helpers.backends.base import Backend

    status = available_backends()
    assert set(status) == set(BACKENDS) and "npu-classic" in BACKENDS
    for name in BACKENDS:
        cls = backend_class(name, check=False)
        assert issubclass(cls, Backend) and cls.name == name and cls.precisions and cls.requires
        assert status[name] == cls.missing()
    # every backend tokenizes with transformers, so every one declares it (onnx too)
    assert all("transformers" in backend_class(n, check=False).requires for n in BACKENDS)


@pytest.mark.parametrize("backend, device, precision", [("transformers", None, None), ("openvino", "cpu", "int8")])
def test_a_plan_is_plain_data_made_without_loading(offline_model, backend, device, precision):
    import dataclasses

    from phi3_helpers import plan_load

    plan = plan_load(backend, offline_model, device, precision)
    assert plan.backend == backend and plan.device == "CPU" and plan.model == offline_model
    assert plan.precision == (precision or "fp32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.device = "GPU"
    with pytest.raises(TypeError):
        plan.settings["config"] = {}  # read-only
    if backend == "openvino":
        assert plan.folder.name == f"{offline_model.name}-int8"  # where the export lives, whether built or not
    else:
        assert plan.folder == offline_model.folder  # transformers loads the Hugging Face folder itself


def test_a_plan_loads_as_it_is_with_its_notices_shown_once(capsys):
    from phi3_helpers import load, plan_load
    from phi3_helpers.errors import InvalidOption

    plan = plan_load("onnx", device="CPU")  # no model: offline here, which a notice says
    llm = load(plan)
    try:
        assert llm.plan.model == plan.model and llm.device == "CPU" and "Paris" in llm.ask(FRANCE, max_new_tokens=16)
    finally:
        llm.close()
    said = capsys.readouterr()
    assert (said.out + said.err).count("using the offline model") == 1
    with pytest.raises(InvalidOption, match=r"^load\(plan\) takes the plan's own choices; make another plan"):
        load(plan, device="GPU")


def test_unknown_backend_options_are_refused_in_one_line(offline_model):
    from phi3_helpers import load
    from phi3_helpers.errors import InvalidOption

    with pytest.raises(InvalidOption, match="has no option 'threads'; its options are: config") as err:
        load("openvino", offline_model, threads=2)
    assert "\n" not in str(err.value)
