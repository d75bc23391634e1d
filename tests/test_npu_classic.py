"""The npu backend's classic path (intel-npu-acceleration-library), tested with a STAND-IN.

The real library installs on Windows only, so here the adapter is checked against
``tests/stand_ins/intel_npu_acceleration_library``: a stand-in that offers the library's documented
API, records every call and runs the model with plain transformers on the CPU. These tests check
WIRING ONLY (which calls, which arguments, that answers stream and Stop stops); they say nothing
about the real library's quantization, NPU kernels or speed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prompts import FRANCE
from stopping import check_stop_ends_generation
from phi3_helpers.backends import npu, npu_classic
from phi3_helpers.errors import BackendUnavailable, DeviceUnavailable, ModelFolderError, UnknownDevice

STAND_INS = Path(__file__).parent / "stand_ins"


def _forget_library():
    for name in [m for m in sys.modules if m.split(".")[0] == npu_classic.LIBRARY]:
        del sys.modules[name]


@pytest.fixture
def stand_in_library(monkeypatch):
    """The labelled stand-in for intel_npu_acceleration_library, importable for one test."""
    _forget_library()
    monkeypatch.syspath_prepend(str(STAND_INS))
    import intel_npu_acceleration_library as lib

    assert lib.STAND_IN  # never the real library
    lib.reset()
    yield lib
    _forget_library()


def _calls(lib, name):
    return [c for c in lib.CALLS if c[0] == name]


def test_stand_in_classic_adapter_calls_the_documented_api(stand_in_library, offline_model):
    """STAND-IN wiring test: from_pretrained(folder, config=CompilerConfig(dtype=int4), export=False, ...)."""
    lib = stand_in_library
    llm = npu.NPUBackend(offline_model, path="classic", precision="int4")
    (cfg_call,) = _calls(lib, "CompilerConfig")
    assert cfg_call[2]["dtype"] is lib.int4
    (load_call,) = _calls(lib, "NPUModelForCausalLM.from_pretrained")
    args, kwargs = load_call[1], load_call[2]
    assert args == (str(offline_model.folder),)
    assert type(kwargs["config"]).__name__ == "CompilerConfig" and kwargs["config"].dtype is lib.int4
    assert kwargs["export"] is False  # the library's pickle cache does not reload under torch>=2.6
    assert kwargs["use_cache"] is True
    assert _calls(lib, "eval")
    assert llm.runtime == "intel-npu-acceleration-library" and llm.path == "classic"

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


def test_stand_in_stop_mid_answer_then_normal_answer(stand_in_library, offline_model):
    """STAND-IN wiring test: Stop ends generate() through the StoppingCriteria; the next answer is normal."""
    llm = npu.NPUBackend(offline_model, path="classic", precision="int4")
    check_stop_ends_generation(llm, unstopped=48)
    nxt = llm.generate(FRANCE, max_new_tokens=24)
    assert "Paris" in nxt.text() and nxt.metrics.finish_reason in {"stop", "length"}  # not "stopped"


def test_stand_in_no_npu_falls_back_with_a_notice(stand_in_library, offline_model, capfd):
    """STAND-IN wiring test: npu_available() False -> the library's CPU fallback, said in one line."""
    llm = npu.NPUBackend(offline_model, path="classic")
    err = capfd.readouterr().err
    assert llm.device == "CPU" and llm.fallback
    assert sum("npu_available() is False" in ln for ln in err.splitlines()) == 1


def test_stand_in_forced_npu_without_one(stand_in_library, offline_model):
    """STAND-IN wiring test: device NPU forced where the library sees none."""
    with pytest.raises(DeviceUnavailable, match="npu_available"):
        npu.NPUBackend(offline_model, path="classic", device="NPU")
    with pytest.raises(UnknownDevice):
        npu.NPUBackend(offline_model, path="classic", device="CPU")


def test_stand_in_status_with_and_without_npu(stand_in_library):
    """STAND-IN wiring test: classic_status() reads npu_available() and get_driver_version()."""
    lib = stand_in_library
    off = npu_classic.classic_status()
    assert off.installed and off.npu_available is False and off.driver_version == ""
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
        npu.NPUBackend(offline_model, path="classic")
    assert "delete" in str(err.value) and "cache" in str(err.value)


def _real_library_installed() -> bool:
    import importlib.util

    _forget_library()
    return importlib.util.find_spec(npu_classic.LIBRARY) is not None


def test_classic_path_without_the_library_says_how_to_install(offline_model):
    if _real_library_installed():
        pytest.skip("intel-npu-acceleration-library is installed here")
    with pytest.raises(BackendUnavailable) as err:
        npu.NPUBackend(offline_model, path="classic")
    msg = str(err.value)
    for needed in ("Windows", "intel-npu-acceleration-library", "neural-compressor==3.7.1", "numpy<2", "setuptools<81", "--backend npu"):
        assert needed in msg
    assert "\n" not in msg


def test_classic_status_without_the_library():
    if _real_library_installed():
        pytest.skip("intel-npu-acceleration-library is installed here")
    status = npu_classic.classic_status()
    assert not status.installed and "not installed" in status.describe()


def test_classic_path_from_environment(stand_in_library, offline_model, monkeypatch):
    """STAND-IN wiring test: PHI3_NPU_PATH=classic chooses the classic path (CLI and notebooks)."""
    monkeypatch.setenv(npu.PATH_ENV, "classic")
    llm = npu.NPUBackend(offline_model, precision="fp16")
    assert llm.path == "classic" and llm.precision == "fp16"
