"""The npu backend (OpenVINO GenAI on the NPU), NPU detection, its choices and the NPU export.

This machine has no NPU: the backend runs the same pipeline on the CPU, which is what these tests
exercise end to end. Detection is tested by feeding ``read_npu_info`` what OpenVINO reports on
machines with and without an NPU (the "present" values are those OpenVINO prints for a Core
Ultra 7 155H's NPU).
"""

from __future__ import annotations

import json

import pytest

from prompts import FRANCE
from phi3_helpers.backends import npu, npu_export
from phi3_helpers.errors import DeviceUnavailable, InvalidOption, PromptTooLong, UnknownDevice, UnknownPrecision

# What ov.Core() reports on a Core Ultra 7 155H (hello_query_device output).
MTL_DEVICES = ["CPU", "GPU", "NPU"]
MTL_NPU = {
    "FULL_DEVICE_NAME": "Intel(R) AI Boost", "NPU_DRIVER_VERSION": 1738334590, "DEVICE_ARCHITECTURE": "3720",
    "NPU_DEVICE_TOTAL_MEM_SIZE": 32924782592,
}


def _props(table):
    def get_property(device, key):
        if key not in table.get(device, {}):
            raise RuntimeError(f"Unsupported property {key} by {device} plugin")
        return table[device][key]

    return get_property


def _absent(found=("CPU",)):
    return npu.read_npu_info(list(found), _props({}))


# -- detection ---------------------------------------------------------------------------------
def test_detection_npu_present_reads_name_driver_architecture():
    info = npu.read_npu_info(MTL_DEVICES, _props({"NPU": MTL_NPU}))
    assert info.present and info.device == "NPU"
    assert info.name == "Intel(R) AI Boost"
    assert info.driver_version == "1738334590"
    assert info.architecture == "3720"
    assert info.memory_bytes == 32924782592
    assert "Intel(R) AI Boost" in info.describe() and "driver 1738334590" in info.describe()


def test_detection_npu_absent_names_what_was_found():
    info = _absent(["CPU", "GPU.0"])
    assert not info.present
    assert "CPU, GPU.0" in info.describe() and "no NPU" in info.describe()


def test_detection_property_not_exposed_is_left_empty():
    info = npu.read_npu_info(["CPU", "NPU"], _props({"NPU": {"FULL_DEVICE_NAME": "Intel(R) AI Boost"}}))
    assert info.present and info.name == "Intel(R) AI Boost"
    assert info.driver_version == "" and info.memory_bytes is None
    assert "driver" not in info.describe()


def test_detection_on_this_machine_matches_openvino():
    import openvino as ov

    found = ov.Core().available_devices
    info = npu.detect_npu()
    assert info.present == any(d.split(".")[0] == "NPU" for d in found)
    assert set(info.found) == set(found)


def test_device_report_row_present_and_absent(monkeypatch):
    monkeypatch.setattr(npu, "detect_npu", lambda: npu.read_npu_info(MTL_DEVICES, _props({"NPU": MTL_NPU})))
    (present,) = npu.NPUBackend.device_report()
    monkeypatch.setattr(npu, "detect_npu", lambda: _absent())
    (absent,) = npu.NPUBackend.device_report()
    assert set(present) == set(absent) == {"backend", "device", "available", "detail"}
    assert present["available"] is True and "Intel(R) AI Boost" in present["detail"]
    assert absent["available"] is False
    assert "runs on CPU instead" in absent["detail"] and "found: CPU" in absent["detail"]


# -- export ------------------------------------------------------------------------------------
def test_npu_export_recipe_is_symmetric_int4_ratio_1(offline_model):
    r = npu_export.npu_export_recipe(offline_model)
    assert (r.bits, r.sym, r.ratio, r.group_size) == (4, True, 1.0, 128)
    assert r.group_size_fallback == "adjust"  # hidden size 576 is not a multiple of 128
    flags = " ".join(r.cli_flags())
    assert "--sym" in flags and "--ratio 1.0" in flags and "--group-size 128" in flags
    cw = npu_export.npu_export_recipe(offline_model, group_size=-1)
    assert cw.group_size == -1 and cw.group_size_fallback is None and cw.variant == "npu-cw"
    with pytest.raises(InvalidOption):
        npu_export.npu_export_recipe(offline_model, group_size=0)


def _fake_export(tmp_path, name, quantization, types):
    folder = tmp_path / name
    folder.mkdir()
    if quantization != "no record":
        record = {"precision": name, "quantization": quantization}
        (folder / "phi3_helpers_export.json").write_text(json.dumps(record))
    consts = "".join(f'<layer type="Const"><data element_type="{t}"/></layer>' for t in types)
    (folder / "openvino_model.xml").write_text(f"<net><layers>{consts}</layers></net>")
    return folder


@pytest.mark.parametrize(
    "name, quantization, types, needles",
    [
        ("npu", {"bits": 4, "sym": True, "group_size": 128, "ratio": 1.0}, ["i4", "f16", "u8"], None),
        ("int4", {"bits": 4, "sym": True, "group_size": 128, "ratio": 0.6}, ["i4", "u8"], ["ratio 0.6", "--ratio 1.0"]),
        ("asym", {"bits": 4, "sym": False, "ratio": 1.0}, ["u4"], ["asymmetric int4"]),
        ("fp16", None, ["f16"], ["holds fp16 weights"]),
        ("claims-int4", {"bits": 4, "sym": True, "ratio": 1.0}, ["f32"], ["no 4-bit weights"]),
        ("unrecorded", "no record", ["u4", "f16"], ["asymmetric 4-bit weights (u4)"]),  # the IR alone tells
    ],
)
def test_npu_export_problem_tells_cpu_exports_apart(tmp_path, name, quantization, types, needles):
    problem = npu_export.npu_export_problem(_fake_export(tmp_path, name, quantization, types))
    if needles is None:
        assert problem is None
    else:
        assert all(n in problem for n in needles) and "\n" not in problem, problem


def test_cpu_export_where_the_npu_export_belongs_is_re_exported(offline_model, tmp_path, monkeypatch):
    """The decision only: the (slow) export itself is replaced by a recorder here."""
    from phi3_helpers.backends.openvino import export_folder

    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path))
    recipe = npu_export.npu_export_recipe(offline_model)
    folder = export_folder(offline_model, "int4", recipe.variant)
    assert tmp_path in folder.parents
    folder.mkdir(parents=True)
    for f in ("openvino_model.bin", "config.json"):
        (folder / f).write_text("{}")
    (folder / "openvino_model.xml").write_text('<net><data element_type="i4"/><data element_type="u8"/></net>')
    cpu_recipe = {"bits": 4, "sym": True, "group_size": 128, "ratio": 0.6}
    (folder / "phi3_helpers_export.json").write_text(json.dumps({"quantization": cpu_recipe}))
    forced = []

    def export_recorder(model, precision, recipe=None, force=False, progress=None):
        forced.append(force)
        (folder / "phi3_helpers_export.json").write_text(json.dumps({"quantization": recipe.quantization_config()}))
        return folder

    monkeypatch.setattr(npu_export, "export_openvino", export_recorder)
    said = []
    assert npu_export.export_for_npu(offline_model, progress=said.append) == folder
    assert forced == [True] and "re-exporting for the NPU" in said[0]
    assert npu_export.npu_export_problem(folder) is None
    forced.clear()
    npu_export.export_for_npu(offline_model, progress=said.append)
    assert forced == []  # the NPU export is reused from then on


def test_openvino_int4_export_made_for_cpu_is_flagged(offline_model):
    """The general int4 export (ratio 0.6) is the 'model exported for CPU' the NPU must not get."""
    from phi3_helpers.backends.openvino import export_folder, is_complete_export

    folder = export_folder(offline_model, "int4")
    if not is_complete_export(folder):
        pytest.skip("the openvino backend's int4 export is not in the cache yet (built by its own tests)")
    assert npu_export.npu_export_problem(folder) is not None


# -- the choices (no load) --------------------------------------------------------------------
def test_no_npu_plans_the_cpu_with_one_notice(offline_model, monkeypatch):
    monkeypatch.setattr(npu, "detect_npu", lambda: _absent())
    plan = npu.NPUBackend.plan(offline_model)
    (line,) = plan.notices
    assert "No NPU" in line and "CPU" in line
    assert plan.device == "CPU" and plan.settings["fallback"] is True
    assert plan.folder.name.endswith("-int4-npu")  # the NPU export, also on the CPU fallback


def test_an_npu_present_is_chosen_without_a_notice(offline_model, monkeypatch):
    monkeypatch.setattr(npu, "detect_npu", lambda: npu.read_npu_info(MTL_DEVICES, _props({"NPU": MTL_NPU})))
    plan = npu.NPUBackend.plan(offline_model, max_prompt_tokens=2048)
    assert plan.device == "NPU" and plan.notices == () and plan.settings["fallback"] is False
    assert plan.settings["max_prompt_tokens"] == 2048 and plan.settings["min_response_tokens"] == 128


def test_forced_npu_without_one_names_what_was_found(offline_model, monkeypatch):
    monkeypatch.setattr(npu, "detect_npu", lambda: _absent(["CPU", "GPU.0"]))
    with pytest.raises(DeviceUnavailable) as err:
        npu.NPUBackend.plan(offline_model, device="NPU")
    assert "found: CPU, GPU.0" in str(err.value) and "driver" in str(err.value)


@pytest.mark.skipif(npu.detect_npu().present, reason="this machine has an NPU")
def test_forced_npu_on_this_machine(offline_model):
    with pytest.raises(DeviceUnavailable, match="no NPU"):
        npu.NPUBackend.plan(offline_model, device="NPU")


def test_the_pipeline_settings_are_a_pure_function_of_the_plan(offline_model, monkeypatch, tmp_path):
    """MAX_PROMPT_LEN, MIN_RESPONSE_LEN, CACHE_DIR and prefix caching on the NPU; the CPU's settings without one."""
    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(npu, "detect_npu", lambda: npu.read_npu_info(MTL_DEVICES, _props({"NPU": MTL_NPU})))

    def settings(**options):
        return npu.pipeline_config(npu.NPUBackend.plan(offline_model, **options))

    cfg = settings(max_prompt_tokens=2048)
    assert (cfg["MAX_PROMPT_LEN"], cfg["MIN_RESPONSE_LEN"]) == (2048, 128)
    folder = npu.NPUBackend.plan(offline_model).folder
    assert cfg["CACHE_DIR"] == str(tmp_path / "npu_compiled" / folder.name)  # one blob cache per export
    assert not (tmp_path / "npu_compiled").exists()  # a choice only: nothing is made
    assert "NPUW_LLM_ENABLE_PREFIX_CACHING" not in cfg  # off by default, as upstream
    assert settings(prefix_caching=True)["NPUW_LLM_ENABLE_PREFIX_CACHING"] == "YES"
    assert "NPUW_LLM_ENABLE_PREFIX_CACHING" not in settings(prefix_caching=True, reuse_cache=False)
    assert settings(config={"MIN_RESPONSE_LEN": 256})["MIN_RESPONSE_LEN"] == 256  # the config option wins
    cpu = settings(device="CPU", max_prompt_tokens=2048)
    assert not {"MAX_PROMPT_LEN", "MIN_RESPONSE_LEN"} & set(cpu) and cpu["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.parametrize(
    "kw, error",
    [
        (dict(path="turbo"), InvalidOption), (dict(precision="int8"), UnknownPrecision),
        (dict(device="GPU"), UnknownDevice), (dict(max_prompt_tokens=0), InvalidOption),
        (dict(group_size=0), InvalidOption), (dict(beams=2), InvalidOption),
    ],
)
def test_bad_choices_are_refused_clearly_before_loading(offline_model, kw, error):
    from phi3_helpers import plan_load

    with pytest.raises(error) as err:
        plan_load("npu", offline_model, **kw)
    assert "\n" not in str(err.value)


# -- the backend on this machine ---------------------------------------------------------------
def test_the_npu_export_is_npu_ready(load_backend):
    llm = load_backend("npu")
    assert llm.prepared_folder.name.endswith("-int4-npu")
    assert npu_export.npu_export_problem(llm.prepared_folder) is None
    assert llm.runtime_settings() == npu.pipeline_config(llm.plan)  # what the pipeline compiled with


@pytest.mark.skipif(npu.detect_npu().present, reason="this machine has an NPU")
def test_france_on_the_cpu_fallback(load_backend):
    llm = load_backend("npu")
    assert llm.device == "CPU" and llm.fallback and "fallback" in llm.describe()
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=24)


@pytest.mark.skipif(not npu.detect_npu().present, reason="this machine has no NPU")
def test_france_on_the_npu(load_backend):
    llm = load_backend("npu")
    assert llm.device.startswith("NPU") and not llm.fallback
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=24)


def test_prompt_longer_than_max_prompt_len_says_the_limit(load_backend, monkeypatch):
    llm = load_backend("npu")
    monkeypatch.setattr(llm, "plan", llm.plan.replace(settings={**llm.plan.settings, "max_prompt_tokens": 32}))
    long_prompt = "Please summarise this: " + "the quick brown fox jumps over the lazy dog " * 10
    with pytest.raises(PromptTooLong) as err:
        llm.generate(long_prompt)
    msg = str(err.value)
    assert "at most 32" in msg and "MAX_PROMPT_LEN" in msg and "max_prompt_tokens=" in msg
    assert llm.context_length == 32 + 128
