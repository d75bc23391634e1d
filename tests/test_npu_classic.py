"""The npu-classic backend (intel-npu-acceleration-library), tested with a STAND-IN.

The real library installs on Windows only, so here the adapter is checked against
``tests/stand_ins/intel_npu_acceleration_library``: a stand-in that offers the library's documented
API, records every call and runs the model with plain transformers on the CPU. These tests check
WIRING ONLY (which calls, which arguments, that answers stream and Stop stops); they say nothing
about the real library's quantization, NPU kernels or speed.
"""

from __future__ import annotations

import pytest

from prompts import FRANCE
from phi3_helpers import load, plan_load
from phi3_helpers.backends import npu_classic
from stand_ins import forget
from phi3_helpers.errors import BackendUnavailable, DeviceUnavailable, ModelFolderError, UnknownDevice


def _calls(lib, name):
    return [c for c in lib.CALLS if c[0] == name]


def test_stand_in_classic_adapter_calls_the_documented_api(stand_in_library, offline_model):
    """STAND-IN wiring test: from_pretrained(folder, config=CompilerConfig(dtype=int4), export=False, ...)."""
    lib = stand_in_library
    llm = load("npu-classic", offline_model, precision="int4")
    (cfg_call,) = _calls(lib, "CompilerConfig")
    assert cfg_call[2]["dtype"] is lib.int4
    (load_call,) = _calls(lib, "NPUModelForCausalLM.from_pretrained")
    args, kwargs = load_call[1], load_call[2]
    assert args == (str(offline_model.folder),)
    assert type(kwargs["config"]).__name__ == "CompilerConfig" and kwargs["config"].dtype is lib.int4
    assert kwargs["export"] is False  # the library's pickle cache does not reload under torch>=2.6
    assert kwargs["use_cache"] is True
    assert _calls(lib, "eval")
    assert llm.runtime == "intel-npu-acceleration-library" and llm.name == "npu-classic"

    answer = llm.generate(FRANCE, max_new_tokens=24)
    text = answer.text()
    (gen_call,) = _calls(lib, "generate")
    gkw = gen_call[2]
    assert gkw["streamer"] is not None and len(gkw["stopping_criteria"]) == 1
    assert gkw["max_new_tokens"] == 24 and gkw["do_sample"] is False
    assert text.strip() and answer.metrics.tokens > 0  # the streamer delivered tokens


@pytest.mark.parametrize("precision, dtype", [("int4", "int4"), ("int8", "int8"), ("fp16", "torch.float16")])
def test_stand_in_compiler_config_dtypes(stand_in_library, precision, dtype):
    """STAND-IN wiring test: each course precision maps to the library's own dtype object."""
    import torch

    lib = stand_in_library
    cfg = npu_classic.compiler_config(lib, precision)
    expected = torch.float16 if dtype == "torch.float16" else getattr(lib, dtype)
    assert cfg.dtype is expected


# Stop mid-answer, then a normal answer: tests/test_backends.py (npu-classic is one of its cases, on the stand-in).


def test_stand_in_no_npu_plans_the_fallback_with_a_notice(stand_in_library, offline_model):
    """STAND-IN wiring test: npu_available() False -> the library's CPU fallback, said in one line."""
    plan = npu_classic.ClassicNPUBackend.plan(offline_model)
    (line,) = plan.notices
    assert plan.device == "CPU" and plan.settings["fallback"] and "npu_available() is False" in line
    assert plan.folder == offline_model.folder  # the library quantizes in memory: nothing is exported
    stand_in_library.NPU_AVAILABLE = True
    plan = npu_classic.ClassicNPUBackend.plan(offline_model, precision="int8")
    assert plan.device == "NPU" and not plan.settings["fallback"] and plan.notices == () and plan.precision == "int8"


def test_stand_in_forced_npu_without_one(stand_in_library, offline_model):
    """STAND-IN wiring test: device NPU forced where the library sees none."""
    with pytest.raises(DeviceUnavailable, match="npu_available"):
        npu_classic.ClassicNPUBackend.plan(offline_model, device="NPU")
    with pytest.raises(UnknownDevice):
        npu_classic.ClassicNPUBackend.plan(offline_model, device="CPU")


def test_stand_in_status_with_and_without_npu(stand_in_library):
    """STAND-IN wiring test: classic_status() reads npu_available() and get_driver_version()."""
    lib = stand_in_library
    off = npu_classic.classic_status()
    assert off.installed and off.npu_available is False and off.driver_version == ""
    (row,) = npu_classic.ClassicNPUBackend.device_report()
    assert row["backend"] == "npu-classic" and row["available"] is False and "npu_available() = False" in row["detail"]
    lib.NPU_AVAILABLE = True
    on = npu_classic.classic_status()
    assert on.npu_available is True and on.driver_version == "4321"
    assert "npu_available() = True" in on.describe() and "older" not in on.describe()
    import intel_npu_acceleration_library.backend as backend

    backend.DRIVER_VERSION = 2000  # below the library's own minimum (2408 in 1.4.0)
    assert "older than 2408" in npu_classic.classic_status().describe()


def test_stand_in_stale_library_cache_says_what_to_delete(stand_in_library, offline_model):
    """STAND-IN wiring test: an old ./cache/models pickle that torch cannot reload -> delete it."""
    stand_in_library.STALE_CACHE = True
    with pytest.raises(ModelFolderError) as err:
        load("npu-classic", offline_model)
    assert "delete" in str(err.value) and "cache" in str(err.value)


def _real_library_installed() -> bool:
    import importlib.util

    forget(npu_classic.LIBRARY)
    return importlib.util.find_spec(npu_classic.LIBRARY) is not None


def test_classic_path_without_the_library_says_how_to_install(offline_model):
    if _real_library_installed():
        pytest.skip("intel-npu-acceleration-library is installed here")
    with pytest.raises(BackendUnavailable) as err:
        load("npu-classic", offline_model)
    msg = str(err.value)
    for needed in (
        "Windows", "intel-npu-acceleration-library", "neural-compressor==3.7.1", "numpy<2", "setuptools<81",
        "--backend npu",
    ):
        assert needed in msg
    assert "\n" not in msg


def test_classic_status_without_the_library():
    if _real_library_installed():
        pytest.skip("intel-npu-acceleration-library is installed here")
    status = npu_classic.classic_status()
    assert not status.installed and "not installed" in status.describe()


def test_classic_path_from_environment(stand_in_library, offline_model, monkeypatch):
    """STAND-IN wiring test: PHI3_NPU_PATH=classic chooses the classic path (CLI and notebooks)."""
    from phi3_helpers.backends import NPU_PATH_ENV

    monkeypatch.setenv(NPU_PATH_ENV, "classic")
    plan = plan_load("npu", offline_model, precision="fp16")
    assert plan.backend == "npu-classic" and plan.precision == "fp16"
    monkeypatch.setenv(NPU_PATH_ENV, "maintained")
    assert plan_load("npu", offline_model).backend == "npu"


def test_a_library_that_is_installed_but_does_not_import_is_not_offered(tmp_path, monkeypatch):
    """A broken install (e.g. neural-compressor at the wrong version) is named, not shown as usable."""
    broken = tmp_path / "intel_npu_acceleration_library"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('neural_compressor 3.8 has no attribute X')\n")
    forget("intel_npu_acceleration_library")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reason = npu_classic.ClassicNPUBackend.missing()
        assert "does not import here" in reason and "neural_compressor 3.8" in reason and "\n" not in reason
        status = npu_classic.classic_status()
        assert not status.installed and "neural_compressor 3.8" in status.describe()
    finally:
        forget("intel_npu_acceleration_library")
