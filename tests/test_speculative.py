"""Speculative and prompt-lookup decoding (OpenVINO GenAI): greedy tokens are the plain pipeline's."""

from __future__ import annotations

import pytest

from phi3_helpers import Phi3Error, load
from phi3_helpers.backends.openvino import export_folder
from phi3_helpers.backends.speculative import DRAFT_MODELS

#: an input-grounded task: most of the answer is copied from the prompt, which prompt lookup proposes
PARAGRAPH = (
    "Correct the spelling in this paragraph and repeat it: The quick brown fox jumpd over the lazy dog. "
    "The dog was not amused and barkd loudly at the fox, who ran away into the forrest."
)


#: Checking several proposed tokens in one step rounds OpenVINO's CPU quantization differently from one
#: token per step: activations quantized on the fly (int4 weights), and with a draft model also the u8 KV
#: cache, whose rejected tokens are rolled back. With both on, greedy text drifts after a few dozen tokens
#: (measured); with both off the tokens are the plain pipeline's, which is what these tests prove.
EXACT = {"config": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0", "KV_CACHE_PRECISION": "f32"}}


def tokens(llm, prompt: str, n: int) -> list[int]:
    resp = llm.generate(prompt, max_new_tokens=n)
    resp.text()
    return resp.token_ids


@pytest.fixture(scope="module")
def plain(offline_model):
    llm = load("openvino", model=offline_model, precision="int4", **EXACT)
    yield llm
    llm.close()


def test_prompt_lookup_gives_the_plain_greedy_tokens(plain, offline_model):
    fast = load("openvino", model=offline_model, precision="int4", prompt_lookup=True, **EXACT)
    assert fast.speculation.kind == "prompt_lookup"
    want = tokens(plain, PARAGRAPH, 48)
    assert len(want) == 48 and tokens(fast, PARAGRAPH, 48) == want
    fast.close()


def test_a_draft_model_gives_the_plain_greedy_tokens(plain, offline_model):
    # offline there is no separate small draft for this model: its own int4 export shares the tokenizer
    draft = export_folder(offline_model, "int4")
    fast = load("openvino", model=offline_model, precision="int4", draft_model=str(draft), **EXACT)
    assert fast.speculation.kind == "draft" and fast.speculation.draft_folder == draft.resolve()
    for prompt in (PARAGRAPH, "Write a haiku about the sea."):
        want = tokens(plain, prompt, 32)
        assert len(want) > 8 and tokens(fast, prompt, 32) == want
    fast.close()


@pytest.mark.parametrize("tokenizer, why", [("other", "its tokenizer.json differs"), (None, "no readable")])
def test_a_draft_with_another_tokenizer_is_refused(offline_model, tmp_path, tokenizer, why):
    from tokenizers import Tokenizer, models

    (tmp_path / "openvino_model.xml").write_text("<net/>")
    if tokenizer:
        Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(Phi3Error) as err:
        load("openvino", model=offline_model, precision="int4", draft_model=str(tmp_path))
    msg = str(err.value)
    assert "does not share the main model's tokenizer" in msg and why in msg
    assert "phi3-mini-draft" in msg and "\n" not in msg


def test_a_folder_that_is_no_openvino_model_is_refused(offline_model, tmp_path):
    with pytest.raises(Phi3Error, match="not an OpenVINO model folder"):
        load("openvino", model=offline_model, precision="int4", draft_model=str(tmp_path))


@pytest.mark.parametrize(
    "backend, kw, words",
    [
        ("onnx", {"prompt_lookup": True}, "OpenVINO GenAI on CPU or GPU only"),
        ("npu", {"draft_model": "phi3-mini-draft"}, "OpenVINO GenAI on CPU or GPU only"),
        ("openvino", {"device": "NPU", "prompt_lookup": True}, "not the npu backend"),
        ("openvino", {"device": "AUTO", "prompt_lookup": True}, "use device='CPU' or 'GPU'"),
        ("openvino", {"prompt_lookup": True, "draft_model": "x"}, "not both"),
        ("openvino", {"prompt_lookup": "yes"}, "prompt_lookup must be True or False"),
    ],
)
def test_speculative_decoding_where_it_is_not_offered_is_refused(offline_model, backend, kw, words):
    with pytest.raises(Phi3Error) as err:
        load(backend, model=offline_model, precision="int4", **kw)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_phi3_draft_is_intels_fastdraft_model():
    assert DRAFT_MODELS["phi3-mini-draft"] == "OpenVINO/Phi-3-mini-FastDraft-50M-int8-ov"
