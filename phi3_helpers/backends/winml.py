"""Windows ML for the onnx backend: which execution provider (EP) it offers here, and which one runs.

Windows ML (Windows 11 24H2, build 26100, or later) keeps a catalog of vendor EPs that Windows Update downloads on
demand; on an Intel AI PC that is the OpenVINO EP, which reaches the Intel CPU, GPU and NPU. The course uses it the
way onnxruntime-genai's own example does (examples/python/winml.py and common.py, PR #2155 "Use windowsml package"):

    from windowsml import EpCatalog
    with EpCatalog() as catalog:
        for provider in catalog.find_all_providers():
            provider.ensure_ready()                      # downloads/installs the EP if needed
            og.register_execution_provider_library(provider.name, provider.library_path)
    config = og.Config(folder); config.clear_providers(); config.append_provider(ep)

Two deliberate differences: only the EP that will run is made ready and registered (a download or a failure of
another vendor's EP cannot stop the load), and the OpenVINO EP is told its device with the provider option
``device_type`` (GPU / NPU / CPU), which ORT GenAI matches against the ``ov_device`` of the devices the EP reports
(onnxruntime-genai src/openvino/session_options.cpp; with no option it picks the CPU).

:func:`choose_winml` is the whole choice as a pure function of the installed packages, the OS name, the Windows
build and the EPs the catalog reports, so every combination is tested on any machine. The rest (reading the
catalog, registering an EP, setting up og.Config) imports ``windowsml`` lazily: it exists on Windows only.
Neither Windows ML nor its EPs have run on the project's machines; the choice and this wiring are what is tested.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import BackendUnavailable, DeviceUnavailable, UnknownDevice

MIN_BUILD = 26100  # Windows 11 24H2 (learn.microsoft.com/windows/ai/new-windows-ml/supported-execution-providers)
WINML_GENAI = "onnxruntime-genai-winml"  # ORT GenAI built for Windows ML (module onnxruntime_genai)
CATALOG = "windowsml"  # Python bindings of the Windows ML EP catalog (module windowsml)
WINML_ORT = "onnxruntime-windowsml"  # the ONNX Runtime that windowsml[with-ort] installs (module onnxruntime)
REQUIREMENTS = "pip install -r requirements-winml.txt"
INSTALL = f"{REQUIREMENTS} (it replaces the DirectML build: see that file)"
#: The EP that reaches Intel's GPU and NPU, as the catalog names it, and as og.Config names it.
INTEL_EP, INTEL_EP_CONFIG = "OpenVINOExecutionProvider", "OpenVINO"
#: Devices within Windows ML: what `device=` may add to "winml" (winml-npu, winml:gpu, ...).
WANTS = ("gpu", "npu", "cpu")
NEEDS = f"Windows ML needs Windows 11 24H2+ (build {MIN_BUILD} or later)"


@dataclass(frozen=True)
class WinMLPlan:
    """Which catalog EP to register and run on (None: the CPU EP of Windows ML's ONNX Runtime), and why."""

    ep: str | None
    device: str  # GPU | NPU | CPU: the OpenVINO EP's device_type, or CPU for the plain CPU EP
    reason: str
    fell_back: bool = False  # a GPU/NPU was possible or asked, but the CPU runs

    @property
    def label(self) -> str:
        return f"Windows ML, {INTEL_EP_CONFIG} EP on the Intel {self.device}" if self.ep else "Windows ML, CPU EP"


def this_system() -> tuple[str, int | None]:
    """(OS name, Windows build number or None) of this machine: ('Windows', 26100), ('Linux', None)."""
    name = platform.system()
    build = sys.getwindowsversion().build if name == "Windows" else None  # type: ignore[attr-defined]
    return name, build


def wanted(device: str | None) -> str | None:
    """'winml' -> None (Intel GPU first), 'winml-npu' / 'WinML:NPU' -> 'npu'; other names are refused."""
    key = (device or "").strip().lower().replace(":", "-").replace("windowsml", "winml")
    if key in {"winml", "winml-auto"}:
        return None
    sub = key.removeprefix("winml-")
    if not key.startswith("winml-") or sub not in WANTS:
        raise UnknownDevice(f"unknown Windows ML device {device!r}; use winml, winml-gpu, winml-npu or winml-cpu.")
    return sub


def genai_builds(installed: Iterable[str]) -> list[str]:
    """The ONNX Runtime GenAI builds installed (each is the module onnxruntime_genai)."""
    have = set(installed)
    names = ("onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-cuda", WINML_GENAI)
    return [n for n in names if n in have]


def conflicts(installed: Iterable[str]) -> list[str]:
    """Windows ML beside another build of ORT GenAI or ONNX Runtime: one module, two packages (one line each)."""
    have = set(installed)
    out = []
    others = [n for n in genai_builds(have) if n != WINML_GENAI]
    if WINML_GENAI in have and others:
        theirs = " ".join(others + [n for n in ("onnxruntime", "onnxruntime-directml") if n in have])
        dml = "onnxruntime-genai-directml" in others
        back = "pip install -r requirements.txt" if dml else f"pip install {others[0]}"
        out.append(
            f"{WINML_GENAI} and {' and '.join(others)} are both installed and are one module (onnxruntime_genai); "
            f"keep one: for Windows ML pip uninstall -y {theirs}, then {REQUIREMENTS}; for the other build "
            f"pip uninstall -y {WINML_GENAI} {WINML_ORT} {CATALOG}, then {back}."
        )
    ort = [n for n in ("onnxruntime", "onnxruntime-directml") if n in have]
    if WINML_ORT in have and ort:
        out.append(
            f"{WINML_ORT} and {' and '.join(ort)} are both installed and are one module (onnxruntime); "
            f"pip uninstall -y {' '.join(ort)} {WINML_ORT}, then {REQUIREMENTS}."
        )
    return out


def blocker(installed: Iterable[str], os_name: str, build: int | None) -> str | None:
    """Why Windows ML cannot run here (one line naming the fix), or None when it can."""
    have = set(installed)
    if os_name != "Windows":
        return f"{NEEDS}; this is {os_name}: use device='cpu' here (the openvino backend reaches Intel GPUs and NPUs)."
    if build is None or build < MIN_BUILD:
        return (
            f"{NEEDS}; this is build {build}: update Windows, or use DirectML (device='dml', pip install -r "
            "requirements.txt), which runs on Windows 10 and older Windows 11, or device='cpu'."
        )
    clash = conflicts(have)
    if clash:
        return clash[0]
    missing = [n for n in (WINML_GENAI, CATALOG) if n not in have]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return f"Windows ML needs {' and '.join(missing)}, which {verb} not installed; {INSTALL}."
    return None


def choose_winml(
    installed: Iterable[str],
    os_name: str,
    build: int | None,
    catalog: Sequence[str],
    want: str | None = None,
    fallback_to_cpu: bool = True,
) -> WinMLPlan:
    """The EP Windows ML runs on, from what is installed, the OS, its build and the EP names the catalog reports.

    Pure. ``want`` is None (the Intel GPU when the OpenVINO EP is offered, else the CPU), 'gpu', 'npu' or 'cpu'.
    Raises DeviceUnavailable when Windows ML cannot run here, or when the device asked is not offered and
    ``fallback_to_cpu`` is False.
    """
    why = blocker(installed, os_name, build)
    if why:
        raise DeviceUnavailable(why)
    if want not in (None, *WANTS):
        raise UnknownDevice(f"unknown Windows ML device {want!r}; use gpu, npu or cpu.")
    offered = ", ".join(catalog) if catalog else "no EP"
    if want == "cpu":
        return WinMLPlan(None, "CPU", "the CPU was asked for.")
    if INTEL_EP in catalog:
        device = (want or "gpu").upper()
        how = "was asked for" if want else "comes first (the GPU decodes Phi-3 faster than the NPU)"
        return WinMLPlan(INTEL_EP, device, f"the catalog offers the OpenVINO EP and the Intel {device} {how}.")
    label = f"the Intel {want.upper()}" if want else "an Intel GPU or NPU"
    if want and not fallback_to_cpu:
        raise DeviceUnavailable(
            f"{label} was asked for, but the Windows ML catalog offers no OpenVINO EP here (it offers {offered}); "
            "update the Intel GPU/NPU driver and Windows (the EP comes through Windows Update), "
            "or use device='winml-cpu'."
        )
    why = f"the Windows ML catalog offers no EP for {label} here ({offered}); running on its CPU EP."
    return WinMLPlan(None, "CPU", why, fell_back=True)


# -- the adapter: everything below needs Windows (windowsml is imported lazily) ---------------------------------------
@dataclass(frozen=True)
class CatalogEntry:
    """One EP the Windows ML catalog reports, as plain data."""

    name: str
    version: str
    ready: str  # Ready | NotReady | NotPresent (EpReadyState)
    certification: str  # Certified | Uncertified | Unknown


def read_catalog() -> list[CatalogEntry]:
    """Every EP the Windows ML catalog reports here (windowsml: EpCatalog().find_all_providers())."""
    try:
        from windowsml import EpCatalog
    except ImportError as exc:
        raise BackendUnavailable(f"the Windows ML catalog does not import ({exc}); {INSTALL}.") from None
    try:
        with EpCatalog() as catalog:
            return [
                CatalogEntry(p.name, p.version, p.ready_state.name, p.certification.name)
                for p in catalog.find_all_providers()
            ]
    except Exception as exc:  # the native catalog failed (no Windows App SDK runtime, a broken update, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fix = "update Windows, or use device='cpu'"
        raise DeviceUnavailable(f"the Windows ML catalog failed ({first}); {fix}.") from None


_registered: dict[str, str] = {}  # EP name -> library path, once per process (ORT keeps it registered)


def register(ep: str) -> str:
    """Make ``ep`` ready (Windows Update downloads it if needed) and register its library with ORT GenAI.

    Returns the library path. Raises DeviceUnavailable, one line naming the fix, when it cannot.
    """
    if ep in _registered:
        return _registered[ep]
    import onnxruntime_genai as og
    from windowsml import EpCatalog

    fix = "update Windows and the Intel GPU/NPU driver, or use device='winml-cpu' or device='cpu'"
    try:
        with EpCatalog() as catalog:  # the handles belong to the catalog: use them while it is open
            provider = next((p for p in catalog.find_all_providers() if p.name == ep), None)
            if provider is None:
                raise DeviceUnavailable(f"the Windows ML catalog no longer offers {ep}; {fix}.")
            provider.ensure_ready()
            path = provider.library_path
            if not path:  # as upstream's winml.py: an EP with no library cannot be registered
                raise DeviceUnavailable(f"Windows ML could not install {ep} (it has no library yet); {fix}.")
            og.register_execution_provider_library(provider.name, path)
    except DeviceUnavailable:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DeviceUnavailable(f"Windows ML could not register {ep} ({first}); {fix}.") from None
    _registered[ep] = path
    return path


def configure(config, plan: WinMLPlan) -> None:
    """Point an og.Config at the plan's EP (upstream common.py get_config: clear_providers, append_provider)."""
    config.clear_providers()  # the folder's own provider list (CPU) is replaced; empty = the CPU EP
    if plan.ep == INTEL_EP:
        config.append_provider(INTEL_EP_CONFIG)
        config.set_provider_option(INTEL_EP_CONFIG, "device_type", plan.device)


def report(installed: Iterable[str], os_name: str, build: int | None) -> list[dict]:
    """Rows for `python -m phi3_helpers devices`: what Windows ML would offer here, or why it cannot."""
    why = blocker(installed, os_name, build)
    if why:
        return [{"backend": "onnx", "device": "WINML", "available": False, "detail": why}]
    try:
        entries = read_catalog()
    except Exception as exc:  # a listing must not crash
        return [{"backend": "onnx", "device": "WINML", "available": False, "detail": f"the catalog failed: {exc}"}]
    plan = choose_winml(installed, os_name, build, [e.name for e in entries])
    rows = [{"backend": "onnx", "device": "WINML", "available": True, "detail": f"{plan.label}: {plan.reason}"}]
    for e in entries:
        what = "Intel CPU/GPU/NPU" if e.name == INTEL_EP else "not used by the course"
        detail = f"{e.name} {e.version}, {e.ready}, {e.certification} ({what})"
        rows.append({"backend": "onnx", "device": "WINML-EP", "available": e.ready != "NotPresent", "detail": detail})
    return rows
