"""Model resolution and the offline model: an exact Phi-3 conversion with a correct tokenizer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from phi3_helpers.errors import ModelFolderError, UnknownModel
from phi3_helpers.models import check_model_folder, resolve_model
from phi3_helpers.models.cache import atomic_folder


def test_converted_phi3_logits_equal_the_source_llama_logits(offline_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi3_helpers.models.offline import load_source_llama

    phi3 = AutoModelForCausalLM.from_pretrained(str(offline_model.folder))
    assert type(phi3).__name__ == "Phi3ForCausalLM"
    assert phi3.model.layers[0].self_attn.qkv_proj.weight.shape == (576 + 2 * 192, 576)
    llama = load_source_llama()
    tok = AutoTokenizer.from_pretrained(str(offline_model.folder))
    text = tok.apply_chat_template([{"role": "user", "content": "Explain rope scaling in 3 words."}], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        a, b = phi3(ids).logits, llama(ids).logits
    assert a.shape == b.shape and torch.max(torch.abs(a - b)).item() < 1e-4


def test_offline_tokenizer_is_the_models_own(offline_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(offline_model.folder))
    assert len(tok) == offline_model.config["vocab_size"] == 49152  # no extra tokens past the embedding
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 2, 0)
    ids = tok("Hello 2024", add_special_tokens=True)["input_ids"]
    assert ids[0] != tok.bos_token_id  # no bos prepended
    assert tok.convert_ids_to_tokens(ids)[-4:] == ["2", "0", "2", "4"]  # digits split one by one
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert "<|user|>" not in prompt  # ChatML, not Phi-3 tags: always the tokenizer's own template


def test_interrupted_offline_build_leaves_no_folder(monkeypatch, tmp_path):
    from phi3_helpers.models import offline

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(offline, "load_source_llama", interrupt)
    target = tmp_path / "hf" / "smollm2-135m-phi3"
    with pytest.raises(KeyboardInterrupt):
        offline.build_offline_model(target, progress=lambda *_: None)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_atomic_folder_removes_leftovers_of_an_earlier_crash(tmp_path):
    final = tmp_path / "model"
    stale = tmp_path / ".model.partial-abc"
    stale.mkdir()
    (stale / "junk").write_text("x")
    with atomic_folder(final) as tmp:
        (tmp / "ok").write_text("y")
    assert (final / "ok").read_text() == "y" and not stale.exists()


def test_atomic_folder_keeps_the_folder_of_a_build_running_in_another_process(tmp_path):
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        running = tmp_path / f".model.partial-{other.pid}-xyz"
        running.mkdir()
        with atomic_folder(tmp_path / "model") as tmp:
            (tmp / "ok").write_text("y")
        assert running.is_dir()  # not ours to delete: that build is still going
    finally:
        other.kill()
        other.wait()


def test_default_model_offline_is_the_small_one_with_a_notice(offline_model, monkeypatch, capsys):
    monkeypatch.delenv("PHI3_MODEL", raising=False)
    m = resolve_model()
    assert m.name == "smollm2-135m-phi3" and m.folder == offline_model.folder
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "offline model" in err and err.count("\n") == 1


def test_model_chosen_by_environment_variable(offline_model, monkeypatch):
    monkeypatch.setenv("PHI3_MODEL", str(offline_model.folder))
    assert resolve_model().folder == offline_model.folder


def test_a_file_given_as_model_folder_is_refused(tmp_path):
    f = tmp_path / "README.md"
    f.write_text("x")
    with pytest.raises(ModelFolderError, match="is a file, not a model folder"):
        resolve_model(str(f))


def test_unknown_model_name_is_refused():
    with pytest.raises(UnknownModel, match="phi3-mini, smollm2-135m-phi3"):
        resolve_model("phi-42")


def test_phi3_mini_offline_says_how_to_fall_back():
    with pytest.raises(ModelFolderError, match="PHI3_MODEL=smollm2-135m-phi3"):
        resolve_model("phi3-mini")


def _small_folder(tmp_path, offline_model):
    from safetensors.numpy import save_file

    d = tmp_path / "m"
    d.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(offline_model.folder / f, d / f)
    save_file({"w": np.ones((64, 64), np.float32)}, str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("damage, word", [
    ("missing", "does not exist"),
    ("no-config", "config.json"),
    ("config-without-type", "model_type"),
    ("bad-tokenizer", "tokenizer.json"),
    ("bad-config", "not valid JSON"),
    ("no-tokenizer", "tokenizer"),
    ("no-weights", "safetensors"),
    ("truncated", "truncated"),
])
def test_missing_or_corrupt_model_folders_are_refused_with_the_fix(tmp_path, offline_model, damage, word):
    d = _small_folder(tmp_path, offline_model)
    check_model_folder(d)  # intact: accepted
    if damage == "missing":
        shutil.rmtree(d)
    elif damage == "no-config":
        (d / "config.json").unlink()
    elif damage == "config-without-type":
        (d / "config.json").write_text("{}")
    elif damage == "bad-tokenizer":
        (d / "tokenizer.json").write_text("{ truncated")
    elif damage == "bad-config":
        (d / "config.json").write_text("{ nope")
    elif damage == "no-tokenizer":
        (d / "tokenizer.json").unlink()
    elif damage == "no-weights":
        (d / "model.safetensors").unlink()
    elif damage == "truncated":
        w = d / "model.safetensors"
        w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(ModelFolderError) as err:
        resolve_model(str(d))
    msg = str(err.value)
    assert word in msg and "\n" not in msg and ("rebuild" in msg or "delete" in msg)


# -- the real-Phi-3 path: hub probe, catalog, memory ---------------------------------------------
def _answering_server():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_hub_probe_asks_the_endpoint_over_http_on_its_own_port(monkeypatch):
    from huggingface_hub import constants

    from phi3_helpers.models import hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    httpd = _answering_server()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
        assert hub_reachable() == (True, "")
    finally:
        httpd.shutdown()
        httpd.server_close()
    ok, why = hub_reachable(timeout=1)  # the same port, nobody answering now
    assert not ok and constants.ENDPOINT in why
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_reachable() == (False, "HF_HUB_OFFLINE is set")


def test_each_backend_gets_its_publishers_folder_and_the_npu_exports_locally():
    from phi3_helpers.models import hub

    assert hub.hub_folder("openvino", "int4").repo_id == "OpenVINO/Phi-3-mini-4k-instruct-int4-ov"
    assert hub.hub_folder("openvino-optimum", "fp16").repo_id == "OpenVINO/Phi-3-mini-4k-instruct-fp16-ov"
    cpu, dml = hub.hub_folder("onnx", "int4", "cpu"), hub.hub_folder("onnx", "int4", "dml")
    assert cpu.allow_patterns[0].startswith("cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/")
    assert dml.wanted("directml/directml-int4-awq-block-128/model.onnx.data")
    assert not cpu.wanted(dml.subfolder + "/model.onnx")
    assert not cpu.wanted(cpu.subfolder + "/configuration_phi3.py")  # no remote code
    assert hub.hub_folder("npu", "int4") is None and hub.hub_folder("onnx", "fp32", "cpu") is None
    assert hub.hub_folder("transformers", "fp32") is hub.CHECKPOINT


def test_plan_offline_with_nothing_cached_says_why_and_the_published_size(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from phi3_helpers.models import hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    lines = hub.plan_lines("openvino", "int4")
    assert len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0] and "2.16 GB" in lines[0]
    lines = hub.plan_lines("npu", "int4")
    assert "prepares it here" in lines[0] and "microsoft/Phi-3-mini-4k-instruct" in lines[1]


def test_source_option_is_checked(offline_model):
    from phi3_helpers.errors import InvalidOption
    from phi3_helpers.models import resolve_prepared

    with pytest.raises(InvalidOption, match="'hub'.*'export'"):
        resolve_prepared("phi3-mini", "openvino", "int4", source="cloud")
    with pytest.raises(InvalidOption, match="for phi3-mini only"):
        resolve_prepared(str(offline_model.folder), "openvino", "int4", source="hub")


class _Loaded:
    def __init__(self, name, folder):
        from phi3_helpers.models import ModelSource

        self.model = ModelSource(name, folder)
        self.prepared_folder = folder
        self.closed = False

    def describe(self):
        return f"openvino | CPU | int4 | {self.model.name}"

    def close(self):
        self.closed = True


def test_loading_a_second_real_phi3_says_two_copies_or_closes_the_first(tmp_path, offline_model):
    from phi3_helpers.models import loaded

    said = []
    big, small = _Loaded("phi3-mini", tmp_path), _Loaded("smollm2-135m-phi3", offline_model.folder)
    for b in (big, small):
        loaded.register(b)
    try:
        assert loaded.before_load("smollm2-135m-phi3", say=said.append) == [] and said == []  # a small one: both fit
        assert loaded.before_load("phi3-mini", say=said.append) == [] and not big.closed
        assert "two copies" in said[-1] and "phi3-mini" in said[-1] and "close_previous=True" in said[-1]
        assert loaded.before_load("phi3-mini", close=True, say=said.append) == [big]
        assert big.closed and not small.closed and "closed openvino | CPU | int4 | phi3-mini" in said[-1]
        assert loaded.before_load("phi3-mini", close=True, say=said.append) == []  # closed and forgotten
    finally:
        loaded.forget(big)
        loaded.forget(small)
