"""OpenVINO specifics: export recipes, the shown CLI command, devices, atomic exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3_helpers.backends import openvino as ovb
from phi3_helpers import load
from phi3_helpers.errors import DeviceUnavailable, ModelFolderError, UnknownDevice, UnknownPrecision


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


def test_unknown_precision_is_refused_before_any_work(offline_model):
    from phi3_helpers import load

    with pytest.raises(UnknownPrecision, match="int4, int8, fp16"):
        load("openvino", model=offline_model, precision="int3")


def test_ctrl_c_during_an_export_leaves_nothing_and_the_next_run_completes(offline_model, monkeypatch, tmp_path):
    from optimum.exporters.openvino import __main__ as optimum_main

    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path))
    recipe = ovb.ExportRecipe("fp16", "fp16", variant="interrupt-test")
    target = ovb.export_folder(offline_model, "fp16", "interrupt-test")
    real_export = optimum_main.main_export
    calls = []

    def interrupted(*a, **kw):
        calls.append(kw["output"])
        (Path(kw["output"]) / "openvino_model.xml").write_text("<half written/>")
        raise KeyboardInterrupt  # Ctrl-C while optimum/OpenVINO is converting

    monkeypatch.setattr(optimum_main, "main_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ovb.export_openvino(offline_model, recipe=recipe, progress=lambda *_: None)
    assert calls and not target.exists() and list(target.parent.iterdir()) == []

    said = []
    monkeypatch.setattr(optimum_main, "main_export", real_export)
    out = ovb.export_openvino(offline_model, recipe=recipe, progress=said.append)
    shown = next(line for line in said if line.startswith("Same as: "))
    assert json.loads((out / "phi3_helpers_export.json").read_text())["command"] == shown[len("Same as: ") :]
    assert out == target and ovb.is_complete_export(out)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no leftovers


def test_a_corrupt_export_folder_is_refused_with_the_fix(tmp_path):
    from phi3_helpers.errors import ModelFolderError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="export again"):
        ovb.check_export_folder(tmp_path)


def test_openvino_on_the_npu_is_planned_as_the_npu_backend(offline_model, monkeypatch, capfd):
    """On an NPU the openvino backend needs the NPU export; the plan says so, and no runtime loads."""
    from phi3_helpers import plan_load
    from phi3_helpers.backends import npu

    monkeypatch.setattr(npu, "detect_npu", lambda: npu.read_npu_info(["CPU", "NPU"], lambda d, k: ""))
    plan = plan_load("openvino", offline_model, device="NPU")
    assert plan.backend == "npu" and plan.device == "NPU" and plan.folder.name.endswith("-int4-npu")
    assert "runs as the npu backend" in capfd.readouterr().err


def test_optimum_backend_refuses_the_npu_with_the_fix(offline_model, monkeypatch):
    monkeypatch.setattr(ovb, "available_devices", lambda: ["CPU", "NPU"])  # as on an AI PC
    with pytest.raises(DeviceUnavailable, match="dynamic shapes.*openvino or npu backend"):
        ovb.OptimumOpenVINOBackend.plan(offline_model, device="NPU")
    assert ovb.OptimumOpenVINOBackend.plan(offline_model, device="CPU").device == "CPU"


def test_the_genai_backend_reports_the_pipelines_own_timings(load_backend):
    llm = load_backend("openvino", "int4")
    resp = llm.generate("Write a long story about a dragon.", max_new_tokens=16)
    resp.text()
    perf = llm.perf_metrics
    assert perf.get_num_generated_tokens() == resp.metrics.tokens  # the same answer, counted by the runtime
    assert perf.get_ttft().mean > 0 and perf.get_tpot().mean > 0


def test_a_damaged_cached_export_is_exported_again_or_refused_in_one_line(load_backend, offline_model, tmp_path,
                                                                          monkeypatch):
    """A real export (the session's int4), copied into a fresh cache and damaged after it was built."""
    import json
    import shutil

    from phi3_helpers.backends.openvino import export_folder, export_openvino, is_complete_export

    built = Path(load_backend("openvino", "int4").prepared_folder)
    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path))
    copy = export_folder(offline_model, "int4")
    shutil.copytree(built, copy)
    if "sizes" not in json.loads((copy / "phi3_helpers_export.json").read_text()):  # a cache from an older version
        export_openvino(offline_model, "int4", force=True)
    record = json.loads((copy / "phi3_helpers_export.json").read_text())
    want = record["sizes"]["openvino_model.bin"]  # the export records every file's size
    with open(copy / "openvino_model.bin", "r+b") as fh:
        fh.truncate(want // 2)
    assert not is_complete_export(copy)
    folder = export_openvino(offline_model, "int4")  # damaged: exported again, atomically
    assert folder == copy and is_complete_export(folder)
    assert (folder / "openvino_model.bin").stat().st_size == want
    # a damaged folder with no size record (an older export) is refused by the load in one line, with the fix
    record.pop("sizes")
    (folder / "phi3_helpers_export.json").write_text(json.dumps(record))
    with open(folder / "openvino_model.bin", "r+b") as fh:
        fh.truncate(want // 2)
    with pytest.raises(ModelFolderError, match="looks damaged: delete it") as err:
        load("openvino", model=offline_model, precision="int4")
    assert "\n" not in str(err.value)
