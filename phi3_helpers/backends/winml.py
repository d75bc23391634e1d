"""Windows ML (Windows 11 24H2+) for the onnx backend: which execution provider (EP) its catalog offers, which runs.

As onnxruntime-genai's examples/python/winml.py, but only the EP that runs is readied and registered, and the
OpenVINO EP gets its device (``device_type``). :func:`choose_winml` is pure; the adapter imports ``windowsml`` lazily.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

from ..errors import BackendUnavailable, DeviceUnavailable, UnknownDevice

MIN_BUILD = 26100  # Windows 11 24H2
WINML_GENAI = "onnxruntime-genai-winml"  # module onnxruntime_genai
CATALOG = "windowsml"  # the EP catalog (module windowsml)
WINML_ORT = "onnxruntime-windowsml"  # module onnxruntime
REQUIREMENTS = "pip install -r requirements-winml.txt"
INSTALL = f"{REQUIREMENTS} (it replaces the DirectML build: see that file)"
INTEL_EP, INTEL_EP_CONFIG = "OpenVINOExecutionProvider", "OpenVINO"  # as the catalog and og.Config name it
WANTS = ("gpu", "npu", "cpu")  # what device= may add to "winml" (winml-npu, winml:gpu, ...)
NEEDS = f"Windows ML needs Windows 11 24H2+ (build {MIN_BUILD} or later)"
RETRY = "update Windows and the Intel GPU/NPU driver, or use device='winml-cpu' or device='cpu'"


@dataclass(frozen=True)
class WinMLPlan:
    """The catalog EP to register (None: Windows ML's CPU EP), its device (GPU | NPU | CPU), and why."""

    ep: str | None
    device: str
    reason: str
    fell_back: bool = False  # a GPU/NPU was possible or asked, but the CPU runs

    @property
    def label(self) -> str:
        return f"Windows ML, {INTEL_EP_CONFIG} EP on the Intel {self.device}" if self.ep else "Windows ML, CPU EP"


def this_system() -> tuple[str, int | None]:
    """(OS name, Windows build or None): ('Windows', 26100), ('Linux', None)."""
    name = platform.system()
    return name, sys.getwindowsversion().build if name == "Windows" else None  # type: ignore[attr-defined]


def wanted(device: str | None) -> str | None:
    """'winml' -> None (Intel GPU first), 'winml-npu' / 'WinML:NPU' -> 'npu'; other names are refused."""
    key = (device or "").strip().lower().replace(":", "-").replace("windowsml", "winml")
    if key in {"winml", "winml-auto"}:
        return None
    if not key.startswith("winml-") or key.removeprefix("winml-") not in WANTS:
        raise UnknownDevice(f"unknown Windows ML device {device!r}; use winml, winml-gpu, winml-npu or winml-cpu.")
    return key.removeprefix("winml-")


def conflicts(installed: Iterable[str]) -> list[str]:
    """Windows ML beside another build of ORT GenAI or ONNX Runtime: one module, two packages (one line each)."""
    have = set(installed)
    others = [n for n in ("onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-cuda") if n in have]
    ort = [n for n in ("onnxruntime", "onnxruntime-directml") if n in have]
    out = []
    if WINML_GENAI in have and others:
        dml = "onnxruntime-genai-directml" in others
        back = "pip install -r requirements.txt" if dml else f"pip install {others[0]}"
        out.append(
            f"{WINML_GENAI} and {' and '.join(others)} are both installed and are one module (onnxruntime_genai); "
            f"keep one: for Windows ML pip uninstall -y {' '.join(others + ort)}, then {REQUIREMENTS}; for the other "
            f"build pip uninstall -y {WINML_GENAI} {WINML_ORT} {CATALOG}, then {back}."
        )
    if WINML_ORT in have and ort:
        out.append(f"{WINML_ORT} and {' and '.join(ort)} are both installed and are one module (onnxruntime); "
                   f"pip uninstall -y {' '.join(ort)} {WINML_ORT}, then {REQUIREMENTS}.")
    return out


def blocker(installed: Iterable[str], os_name: str, build: int | None) -> str | None:
    """Why Windows ML cannot run here (one line naming the fix), or None when it can."""
    have = set(installed)
    if os_name != "Windows":
        return f"{NEEDS}; this is {os_name}: use device='cpu' here (the openvino backend reaches Intel GPUs and NPUs)."
    if build is None or build < MIN_BUILD:
        return (f"{NEEDS}; this is build {build}: update Windows, or use DirectML (device='dml', pip install -r "
                "requirements.txt), which runs on Windows 10 and older Windows 11, or device='cpu'.")
    clash = conflicts(have)
    missing = [n for n in (WINML_GENAI, CATALOG) if n not in have]
    if clash or not missing:
        return clash[0] if clash else None
    verb = "is" if len(missing) == 1 else "are"
    return f"Windows ML needs {' and '.join(missing)}, which {verb} not installed; {INSTALL}."


def choose_winml(installed: Iterable[str], os_name: str, build: int | None, catalog: Sequence[str],
                 want: str | None = None, fallback_to_cpu: bool = True) -> WinMLPlan:
    """The EP Windows ML runs on (pure): ``want`` 'gpu', 'npu', 'cpu' or None (the Intel GPU if offered, else the
    CPU). DeviceUnavailable when Windows ML cannot run here, or the device asked is not offered without fallback."""
    why = blocker(installed, os_name, build)
    if why:
        raise DeviceUnavailable(why)
    if want not in (None, *WANTS):
        raise UnknownDevice(f"unknown Windows ML device {want!r}; use gpu, npu or cpu.")
    if want == "cpu":
        return WinMLPlan(None, "CPU", "the CPU was asked for.")
    if INTEL_EP in catalog:
        device = (want or "gpu").upper()
        how = "was asked for" if want else "comes first (the GPU decodes Phi-3 faster than the NPU)"
        return WinMLPlan(INTEL_EP, device, f"the catalog offers the OpenVINO EP and the Intel {device} {how}.")
    label = f"the Intel {want.upper()}" if want else "an Intel GPU or NPU"
    offered = ", ".join(catalog) or "no EP"
    if want and not fallback_to_cpu:
        raise DeviceUnavailable(
            f"{label} was asked for, but the Windows ML catalog offers no OpenVINO EP here (it offers {offered}); "
            "update the Intel GPU/NPU driver and Windows (the EP comes through Windows Update), "
            "or use device='winml-cpu'."
        )
    why = f"the Windows ML catalog offers no EP for {label} here ({offered}); running on its CPU EP."
    return WinMLPlan(None, "CPU", why, fell_back=True)


# -- the adapter: everything below needs Windows --
class CatalogEntry(NamedTuple):
    name: str
    version: str
    ready: str  # Ready | NotReady | NotPresent
    certification: str  # Certified | Uncertified


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_catalog() -> list[CatalogEntry]:
    try:
        from windowsml import EpCatalog
    except ImportError as exc:
        raise BackendUnavailable(f"the Windows ML catalog does not import ({exc}); {INSTALL}.") from None
    try:
        with EpCatalog() as catalog:
            return [CatalogEntry(p.name, p.version, p.ready_state.name, p.certification.name)
                    for p in catalog.find_all_providers()]
    except Exception as exc:  # no Windows App SDK runtime, a broken update, ...
        raise DeviceUnavailable(f"the Windows ML catalog failed ({first_line(exc)}); update Windows, "
                                "or use device='cpu'.") from None


_registered: dict[str, str] = {}  # EP name -> library path, once per process (ORT keeps it registered)


def register(ep: str) -> str:
    """Make ``ep`` ready (Windows Update installs it if needed) and register its library with ORT GenAI."""
    if ep in _registered:
        return _registered[ep]
    import onnxruntime_genai as og
    from windowsml import EpCatalog

    try:
        with EpCatalog() as catalog:  # the handles belong to the open catalog
            provider = next((p for p in catalog.find_all_providers() if p.name == ep), None)
            if provider is None:
                raise DeviceUnavailable(f"the Windows ML catalog no longer offers {ep}; {RETRY}.")
            provider.ensure_ready()
            if not provider.library_path:
                raise DeviceUnavailable(f"Windows ML could not install {ep} (it has no library yet); {RETRY}.")
            og.register_execution_provider_library(provider.name, provider.library_path)
            _registered[ep] = provider.library_path
    except DeviceUnavailable:
        raise
    except Exception as exc:
        raise DeviceUnavailable(f"Windows ML could not register {ep} ({first_line(exc)}); {RETRY}.") from None
    return _registered[ep]


def configure(config, plan: WinMLPlan) -> None:
    """Point an og.Config at the plan's EP (no providers left: the CPU EP)."""
    config.clear_providers()
    if plan.ep == INTEL_EP:
        config.append_provider(INTEL_EP_CONFIG)
        config.set_provider_option(INTEL_EP_CONFIG, "device_type", plan.device)


def report(installed: Iterable[str], os_name: str, build: int | None) -> list[dict]:
    """Rows for `python -m phi3_helpers devices`: what Windows ML would offer here, or why it cannot."""
    def row(device, available, detail):
        return {"backend": "onnx", "device": device, "available": available, "detail": detail}

    why = blocker(installed, os_name, build)
    try:
        entries = [] if why else read_catalog()
    except Exception as exc:  # a listing must not crash
        why = f"the catalog failed: {exc}"
    if why:
        return [row("WINML", False, why)]
    plan = choose_winml(installed, os_name, build, [e.name for e in entries])
    return [row("WINML", True, f"{plan.label}: {plan.reason}")] + [
        row("WINML-EP", e.ready != "NotPresent", f"{e.name} {e.version}, {e.ready}, {e.certification} "
            f"({'Intel CPU/GPU/NPU' if e.name == INTEL_EP else 'not used by the course'})") for e in entries]
