"""OpenVINO specifics: export recipes, the shown CLI command, devices, atomic exports."""

from __future__ import annotations

import json

import pytest

from phi3_helpers.backends import openvino as ovb
from phi3_helpers.errors import DeviceUnavailable, UnknownDevice, UnknownPrecision


def test_int4_recipe_is_the_classic_one_adapted_to_the_576_wide_layers(offline_model):
    r = ovb.export_recipe(offline_model, "int4")
    assert (r.bits, r.sym, r.group_size, r.ratio) == (4, True, 128, 0.6)
    assert r.group_size_fallback == "adjust"  # 576 % 128 != 0
    cmd = ovb.export_command(offline_model, r, "out")
    assert cmd.startswith("optimum-cli export openvino --model ")
    for flag in ["--weight-format int4", "--sym", "--group-size 128", "--ratio 0.6", "--group-size-fallback adjust"]:
        assert flag in cmd


def test_exports_differ_in_size_as_their_precision_says(load_backend):
    sizes = {}
    for p in ("int4", "int8", "fp16"):
        folder = load_backend("openvino", p).prepared_folder
        sizes[p] = (folder / "openvino_model.bin").stat().st_size
        meta = json.loads((folder / "phi3_helpers_export.json").read_text())
        assert meta["precision"] == p
        assert (folder / "openvino_tokenizer.xml").is_file()
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"]


def test_device_choice_is_checked_against_what_openvino_found():
    assert ovb.pick_device("cpu", ["CPU"]) == "CPU"
    assert ovb.pick_device("AUTO", ["CPU"]) == "AUTO"
    assert ovb.pick_device("GPU", ["CPU", "GPU.0", "NPU"]) == "GPU"
    with pytest.raises(DeviceUnavailable, match="found: CPU"):
        ovb.pick_device("NPU", ["CPU"])
    with pytest.raises(UnknownDevice, match="use one of"):
        ovb.pick_device("TPU", ["CPU"])


def test_real_devices_here_are_listed(load_backend):
    found = ovb.available_devices()
    assert "CPU" in found
    rows = {r["device"]: r for r in ovb.device_report()}
    assert rows["CPU"]["available"] is True
    for d in ("GPU", "NPU"):
        assert rows[d]["available"] == any(f.startswith(d) for f in found)


def test_unknown_precision_is_refused_before_any_work(offline_model):
    from phi3_helpers import load

    with pytest.raises(UnknownPrecision, match="int4, int8, fp16"):
        load("openvino", model=offline_model, precision="int3")


def test_ctrl_c_during_an_export_leaves_nothing_and_the_next_run_completes(offline_model, monkeypatch, tmp_path):
    from optimum.intel import OVModelForCausalLM

    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path))
    recipe = ovb.ExportRecipe("fp16", "fp16", variant="interrupt-test")
    target = ovb.export_folder(offline_model, "fp16", "interrupt-test")
    real_export = OVModelForCausalLM.from_pretrained

    def interrupted(*a, **kw):
        raise KeyboardInterrupt  # Ctrl-C while NNCF/OpenVINO is converting

    monkeypatch.setattr(OVModelForCausalLM, "from_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ovb.export_openvino(offline_model, recipe=recipe, progress=lambda *_: None)
    assert not target.exists() and list(target.parent.iterdir()) == []

    monkeypatch.setattr(OVModelForCausalLM, "from_pretrained", real_export)
    out = ovb.export_openvino(offline_model, recipe=recipe, progress=lambda *_: None)
    assert out == target and ovb.is_complete_export(out)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no leftovers


def test_a_corrupt_export_folder_is_refused_with_the_fix(tmp_path):
    from phi3_helpers.errors import ModelFolderError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="export again"):
        ovb.check_export_folder(tmp_path)


def test_openvino_on_the_npu_goes_through_the_npu_backend(offline_model, monkeypatch):
    """On an NPU the openvino backend needs the NPU export; here (no NPU) the NPU path says what it found."""
    from phi3_helpers import load
    from phi3_helpers.backends import npu

    seen = {}
    real = npu.NPUBackend.__init__

    def spy(self, *a, **kw):
        seen["class"] = type(self).__name__
        return real(self, *a, **kw)

    monkeypatch.setattr(npu.NPUBackend, "__init__", spy)
    if any(d.startswith("NPU") for d in ovb.available_devices()):
        assert load("openvino", model=offline_model, device="NPU").name == "npu"
    else:
        with pytest.raises(DeviceUnavailable, match="NPU"):
            load("openvino", model=offline_model, device="NPU")
    assert seen["class"] == "NPUBackend"


def test_optimum_backend_refuses_the_npu_with_the_fix(monkeypatch):
    monkeypatch.setattr(ovb, "available_devices", lambda: ["CPU", "NPU"])  # as on an AI PC
    backend = object.__new__(ovb.OptimumOpenVINOBackend)
    with pytest.raises(DeviceUnavailable, match="dynamic shapes.*openvino or npu backend"):
        backend._pick_device("NPU")
    assert backend._pick_device("CPU") == "CPU"
