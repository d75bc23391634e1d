"""The onnx backend's Windows ML provider: its choice, its wiring, and bad input.

Windows ML exists on Windows 11 24H2+ only, so nothing here runs it. What is tested:
- the choice, a pure function of (installed packages, OS name, Windows build, the EPs the catalog reports), for every
  combination;
- the adapter (phi3_helpers/backends/winml.py) against tests/stand_ins/windowsml, a labelled STAND-IN for the
  Windows-only windowsml package, with the real onnxruntime_genai: a stand-in EP library fails to register and the
  real runtime refuses the OpenVINO EP it was not built with, and in both cases the real model then runs on the CPU;
- bad input on this machine: a one-line error naming the fix, then a real CPU load of the offline model.
"""

from __future__ import annotations

import itertools
import sys

import pytest

from phi3_helpers import load
from phi3_helpers.backends import onnx, winml
from phi3_helpers.backends.onnx_provider import choose_provider, package_conflicts
from phi3_helpers.backends.winml import INTEL_EP, MIN_BUILD, WinMLPlan, choose_winml
from phi3_helpers.errors import BackendUnavailable, DeviceUnavailable, UnknownDevice

from prompts import FRANCE
from stand_ins import HERE, forget

CPU_ONLY = frozenset({"onnxruntime-genai", "onnxruntime"})
DIRECTML = frozenset({"onnxruntime-genai-directml", "onnxruntime-directml"})
WINML = frozenset({"onnxruntime-genai-winml", "windowsml", "onnxruntime-windowsml"})
INSTALLS = {
    "cpu": CPU_ONLY,
    "directml": DIRECTML,
    "winml": WINML,
    "winml-without-catalog": WINML - {"windowsml"},
    "winml+directml": WINML | DIRECTML,
}
SYSTEMS = [("Linux", None), ("Darwin", None)] + [("Windows", b) for b in (19045, 22631, 26100, 26200)]
CATALOGS = {
    "empty": (),
    "intel": (INTEL_EP,),
    "intel+qualcomm": ("QNNExecutionProvider", INTEL_EP),
    "nvidia": ("NvTensorRtRtxExecutionProvider",),
}


def test_choose_winml_refuses_an_unknown_device_in_one_line():
    with pytest.raises(UnknownDevice, match=r"^unknown Windows ML device 'tpu'; use gpu, npu or cpu\.$"):
        choose_winml(INSTALLS["winml"], "Windows", MIN_BUILD, [INTEL_EP], "tpu")


# -- the choice: every combination --------------------------------------------------------------------------------
@pytest.mark.parametrize("fallback", [True, False])
@pytest.mark.parametrize("want", [None, "gpu", "npu", "cpu"])
@pytest.mark.parametrize("catalog", CATALOGS)
@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: f"{s[0]}-{s[1]}")
@pytest.mark.parametrize("install", INSTALLS)
def test_the_winml_choice_for_every_combination(install, system, catalog, want, fallback):
    os_name, build = system
    eps = CATALOGS[catalog]

    def refused(*needles):
        with pytest.raises(DeviceUnavailable) as err:
            choose_winml(INSTALLS[install], os_name, build, eps, want, fallback)
        msg = str(err.value)
        assert "\n" not in msg and all(n in msg for n in needles), msg

    if os_name != "Windows":
        return refused("Windows ML needs Windows 11 24H2+", f"this is {os_name}", "device='cpu'")
    if build < MIN_BUILD:
        return refused(f"this is build {build}", "update Windows", "device='dml'", "Windows 10")
    if install == "winml+directml":
        return refused("are both installed", "pip uninstall -y onnxruntime-genai-directml", "requirements-winml.txt")
    if install != "winml":
        return refused("not installed", "pip install -r requirements-winml.txt")
    if want and want != "cpu" and INTEL_EP not in eps and not fallback:
        return refused("offers no OpenVINO EP", "Windows Update", "winml-cpu")
    plan = choose_winml(INSTALLS[install], os_name, build, eps, want, fallback)
    if want == "cpu":
        assert plan == WinMLPlan(None, "CPU", "the CPU was asked for.")
    elif INTEL_EP in eps:  # the Intel GPU first, the NPU when asked; never another vendor's EP
        assert (plan.ep, plan.device, plan.fell_back) == (INTEL_EP, (want or "gpu").upper(), False)
        assert "OpenVINO EP" in plan.label and plan.device in plan.label
    else:
        assert (plan.ep, plan.device, plan.fell_back) == (None, "CPU", True)
        assert (", ".join(eps) or "no EP") in plan.reason and "CPU EP" in plan.reason


@pytest.mark.parametrize(
    "device, installed, system, provider, why",
    [
        (None, WINML, ("Windows", 26100), "winml", "onnxruntime-genai-winml is installed"),
        ("winml", WINML, ("Windows", 26100), "winml", "Windows ML was asked for"),
        ("WinML-NPU", WINML, ("Windows", 26100), "winml", "Windows ML was asked for"),
        ("gpu", WINML, ("Windows", 26100), "winml", "Windows ML was asked for"),
        ("cpu", WINML, ("Windows", 26100), "cpu", "the CPU was asked for"),
        (None, WINML, ("Windows", 22631), "cpu", "this is build 22631"),
        (None, DIRECTML, ("Windows", 26100), "dml", "onnxruntime-genai-directml is installed"),
        ("dml", WINML, ("Windows", 26100), "cpu", "onnxruntime-genai-directml is not installed"),
        (None, CPU_ONLY, ("Linux", None), "cpu", "only the CPU package"),
    ],
)
def test_the_provider_follows_the_installed_build_and_the_windows_version(device, installed, system, provider, why):
    choice = choose_provider(device, installed, system=system)
    assert choice.provider == provider and why in choice.reason
    assert "\n" not in choice.notice and choice.notice.startswith("ONNX Runtime GenAI runs on ")


@pytest.mark.parametrize("device", ["winml", "winml-gpu", "WinML:NPU", "windowsml-cpu"])
@pytest.mark.parametrize("system", [("Linux", None), ("Windows", 22631)], ids=["linux", "windows-23h2"])
def test_asking_for_winml_where_it_cannot_run_is_refused_whatever_the_fallback(device, system):
    for fallback in (True, False):
        with pytest.raises(DeviceUnavailable, match="Windows ML needs Windows 11 24H2\\+ \\(build 26100"):
            choose_provider(device, WINML, fallback, system=system)
    with pytest.raises(UnknownDevice, match="use winml, winml-gpu, winml-npu or winml-cpu"):
        choose_provider("winml-tpu", WINML, system=system)


def test_both_builds_installed_at_once_is_refused_for_any_device_and_named_as_a_conflict():
    for device in (None, "cpu", "winml", "dml"):
        with pytest.raises(BackendUnavailable) as err:
            choose_provider(device, WINML | DIRECTML, system=("Windows", 26100))
        msg = str(err.value)
        assert "onnxruntime-genai-winml and onnxruntime-genai-directml are both installed" in msg and "\n" not in msg
        assert "pip uninstall -y onnxruntime-genai-directml" in msg
        assert "pip uninstall -y onnxruntime-genai-winml" in msg
    found = package_conflicts(WINML | DIRECTML)
    assert len(found) == 2 and "one module (onnxruntime)" in found[1]  # onnxruntime-windowsml vs -directml too
    assert package_conflicts(WINML) == [] and package_conflicts(DIRECTML) == []


# -- the adapter against the windowsml STAND-IN -----------------------------------------------------------------------
@pytest.fixture
def catalog(monkeypatch):
    """The windowsml STAND-IN (tests/stand_ins/windowsml), on sys.path only inside this fixture."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delitem(sys.modules, "windowsml", raising=False)
    import windowsml

    assert windowsml.STAND_IN
    monkeypatch.setattr(windowsml, "PROVIDERS", [])
    monkeypatch.setattr(windowsml, "CALLS", [])
    monkeypatch.setattr(winml, "_registered", {})
    yield windowsml
    for library in ("windowsml", "intel_npu_acceleration_library"):  # a device report here imports the NPU one too
        forget(library)


def intel_ep(**kw) -> dict:
    return {"name": INTEL_EP, "version": "1.8.69.0", "ready": "NotPresent",
            "library_path": r"C:\WinML\onnxruntime_providers_openvino_plugin.dll", **kw}


def test_the_catalog_is_read_as_plain_data(catalog):
    qnn = {"name": "QNNExecutionProvider", "ready": "Ready", "certification": "Uncertified"}
    catalog.PROVIDERS[:] = [intel_ep(), qnn]
    entries = winml.read_catalog()
    assert [(e.name, e.ready, e.certification) for e in entries] == [
        (INTEL_EP, "NotPresent", "Certified"), ("QNNExecutionProvider", "Ready", "Uncertified")]
    assert catalog.CALLS == [("EpCatalog", None), ("find_all_providers", None)]  # read only: nothing downloaded


def test_only_the_chosen_ep_is_made_ready_and_registered_once(catalog, monkeypatch):
    import onnxruntime_genai as og

    catalog.PROVIDERS[:] = [{"name": "QNNExecutionProvider", "ready": "NotPresent"}, intel_ep()]
    registered = []  # a real EP library exists on Windows only: record what would be registered
    monkeypatch.setattr(og, "register_execution_provider_library", lambda name, path: registered.append((name, path)))
    assert winml.register(INTEL_EP) == intel_ep()["library_path"]
    assert winml.register(INTEL_EP) == intel_ep()["library_path"]  # a second load registers nothing again
    assert registered == [(INTEL_EP, intel_ep()["library_path"])]
    assert [c for c in catalog.CALLS if c[0] == "ensure_ready"] == [("ensure_ready", INTEL_EP)]


def test_an_ep_that_fails_to_register_gives_one_line_naming_the_fix(catalog):
    catalog.PROVIDERS[:] = [intel_ep()]  # its library path names no file: the REAL runtime refuses it
    with pytest.raises(DeviceUnavailable) as err:
        winml.register(INTEL_EP)
    msg = str(err.value)
    assert msg.startswith(f"Windows ML could not register {INTEL_EP} (Failed to register execution provider library")
    assert "\n" not in msg and "device='cpu'" in msg and "update Windows" in msg
    catalog.PROVIDERS[:] = [intel_ep(installs=False)]  # Windows Update could not install it
    with pytest.raises(DeviceUnavailable, match="has no library yet"):
        winml.register(INTEL_EP)
    catalog.PROVIDERS[:] = [intel_ep(fails="[WinError -2147024893] The system cannot find the path specified")]
    with pytest.raises(DeviceUnavailable, match="could not register .* \\(\\[WinError -2147024893\\]"):
        winml.register(INTEL_EP)
    catalog.PROVIDERS[:] = []
    with pytest.raises(DeviceUnavailable, match="no longer offers"):
        winml.register(INTEL_EP)


def test_the_config_names_the_openvino_ep_and_its_device_to_the_real_runtime(load_backend):
    import onnxruntime_genai as og

    folder = str(load_backend("onnx", "int4").prepared_folder)
    config = og.Config(folder)
    winml.configure(config, WinMLPlan(INTEL_EP, "NPU", "test"))
    with pytest.raises(RuntimeError, match="OpenVINO execution provider is not supported in this build"):
        og.Model(config)  # the Linux build has no OpenVINO EP: the name reached the runtime as its own
    config = og.Config(folder)
    winml.configure(config, WinMLPlan(None, "CPU", "test"))
    assert og.Model(config).device_type == "CPU"


def test_devices_lists_what_the_catalog_offers_or_why_windows_ml_cannot_run(catalog, capsys):
    catalog.PROVIDERS[:] = [intel_ep(ready="Ready"), {"name": "QNNExecutionProvider", "ready": "NotPresent"}]
    rows = winml.report(WINML, "Windows", 26100)
    assert rows[0]["available"] and "OpenVINO EP on the Intel GPU" in rows[0]["detail"]
    assert [r["available"] for r in rows[1:]] == [True, False]
    assert "Intel CPU/GPU/NPU" in rows[1]["detail"] and "not used by the course" in rows[2]["detail"]
    (old,) = winml.report(WINML, "Windows", 22631)
    assert not old["available"] and "this is build 22631" in old["detail"]
    from phi3_helpers.cli import main

    assert main(["devices"]) == 0  # this machine, for real
    out = capsys.readouterr().out
    assert any("WINML" in line and "Windows ML needs Windows 11 24H2+" in line for line in out.splitlines()), out


# -- the backend: Windows ML wiring, then the CPU keeps working -----------------------------------------------------
@pytest.fixture
def windows_24h2(catalog, monkeypatch):
    """This machine as a Windows 11 24H2 one with the Windows ML packages: the OS facts and package list are set,
    the catalog is the STAND-IN, ONNX Runtime GenAI is the real one."""
    monkeypatch.setattr(winml, "this_system", lambda: ("Windows", 26100))
    monkeypatch.setattr(onnx, "installed_packages", lambda: frozenset({"onnxruntime-genai-winml", "windowsml"}))
    return catalog


def test_the_windows_ml_choice_is_plain_data_in_the_plan_before_anything_loads(windows_24h2, offline_model,
                                                                                 monkeypatch):
    from phi3_helpers import plan_load

    windows_24h2.PROVIDERS[:] = [intel_ep()]
    plan = plan_load("onnx", model=offline_model, precision="int4", device="winml-npu")
    assert plan.device == "NPU" and plan.settings["winml"] == WinMLPlan(INTEL_EP, "NPU", plan.settings["winml"].reason)
    assert plan.settings["target"] == "cpu" and plan.folder.name.endswith("int4-cpu")  # the CPU build is what runs
    assert not [c for c in windows_24h2.CALLS if c[0] == "ensure_ready"]  # nothing downloaded or registered yet

    def broken():
        raise OSError("Class not registered")

    monkeypatch.setattr(windows_24h2, "EpCatalog", broken)  # the native catalog fails
    plan = plan_load("onnx", model=offline_model, precision="int4", device="winml")
    assert plan.device == "CPU" and "the Windows ML catalog failed (Class not registered)" in plan.notices[0]
    with pytest.raises(DeviceUnavailable, match="catalog failed"):
        plan_load("onnx", model=offline_model, precision="int4", device="winml", fallback_to_cpu=False)


def test_an_ep_that_fails_to_register_leaves_the_model_running_on_the_cpu(windows_24h2, offline_model, capsys):
    windows_24h2.PROVIDERS[:] = [intel_ep()]
    llm = load("onnx", model=offline_model, precision="int4", device="winml")
    err = capsys.readouterr().err
    planned, fallback = [x for x in err.splitlines() if "Windows ML" in x]  # the plan, then what happened
    assert "runs on Windows ML, OpenVINO EP on the Intel GPU" in planned
    assert f"Windows ML could not register {INTEL_EP}" in fallback and "the CPU runs instead" in fallback
    assert llm.device == "CPU" and llm.winml_plan.fell_back and "Windows ML, CPU EP" in llm.describe()
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=16)
    with pytest.raises(DeviceUnavailable, match="could not register"):
        load("onnx", model=offline_model, precision="int4", device="winml", fallback_to_cpu=False)


def test_an_ep_that_registers_but_does_not_start_falls_back_to_the_cpu(windows_24h2, offline_model, capsys,
                                                                         monkeypatch):
    import onnxruntime_genai as og

    windows_24h2.PROVIDERS[:] = [intel_ep()]
    monkeypatch.setattr(og, "register_execution_provider_library", lambda name, path: None)  # Windows-only effect
    llm = load("onnx", model=offline_model, precision="int4", device="winml-npu")
    err = capsys.readouterr().err
    assert "runs on Windows ML, OpenVINO EP on the Intel NPU" in err  # the plan, as the notice says it
    assert f"{INTEL_EP} did not start (OpenVINO execution provider is not supported in this build)" in err
    assert llm.device == "CPU" and "Paris" in llm.ask(FRANCE, max_new_tokens=16)


def test_a_catalog_without_an_intel_ep_runs_windows_ml_on_its_cpu_ep(windows_24h2, offline_model, capsys):
    windows_24h2.PROVIDERS[:] = [{"name": "QNNExecutionProvider", "ready": "Ready"}]
    llm = load("onnx", model=offline_model, precision="int4", device="winml")
    assert "offers no EP for an Intel GPU or NPU here (QNNExecutionProvider)" in capsys.readouterr().err
    assert llm.device == "CPU" and not [c for c in windows_24h2.CALLS if c[0] == "ensure_ready"]
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=16)


@pytest.mark.parametrize(
    "system, installed, error, needle",
    [
        (None, None, DeviceUnavailable, "this is Linux"),  # this machine, as it is
        (("Windows", 22631), None, DeviceUnavailable, "this is build 22631: update Windows, or use DirectML"),
        (("Windows", 26100), WINML | DIRECTML, BackendUnavailable, "are both installed"),
    ],
    ids=["linux", "windows-before-24h2", "both-builds"],
)
def test_a_refused_winml_request_then_the_cpu_loads_for_real(system, installed, error, needle, offline_model,
                                                               monkeypatch):
    with monkeypatch.context() as m:
        if system:
            m.setattr(winml, "this_system", lambda: system)
        if installed:
            m.setattr(onnx, "installed_packages", lambda: installed)
        with pytest.raises(error) as err:
            load("onnx", model=offline_model, precision="int4", device="winml")
    assert needle in str(err.value) and "\n" not in str(err.value)
    llm = load("onnx", model=offline_model, precision="int4", device="cpu")  # the session goes on, on the CPU
    assert llm.device == "CPU" and "Paris" in llm.ask(FRANCE, max_new_tokens=16)


def test_every_winml_message_fits_one_line():
    for (install, system, eps, want) in itertools.product(INSTALLS.values(), SYSTEMS, CATALOGS.values(), winml.WANTS):
        try:
            reason = choose_winml(install, *system, eps, want, fallback_to_cpu=False).reason
        except DeviceUnavailable as exc:
            reason = str(exc)
        assert "\n" not in reason and len(reason) < 400, reason
