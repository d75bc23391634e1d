"""Which ONNX Runtime GenAI execution provider runs, from the one package installed: onnxruntime-genai-directml
-> dml, onnxruntime-genai-winml -> winml (winml.py), onnxruntime-genai-cuda -> cuda, onnxruntime-genai -> cpu.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Iterable

from ..errors import BackendUnavailable, DeviceUnavailable, UnknownDevice
from . import installed_version, winml
from .onnx_build import TARGET_NAMES

GENAI_PACKAGES = {"dml": "onnxruntime-genai-directml", "winml": winml.WINML_GENAI, "cuda": "onnxruntime-genai-cuda",
                  "cpu": "onnxruntime-genai"}
INSTALL_HINTS = {
    "dml": "on Windows: pip install onnxruntime-genai-directml==0.13.1 (and no plain onnxruntime beside it)",
    "cuda": "with an NVIDIA GPU and CUDA 12: pip install onnxruntime-genai-cuda",
    "cpu": "pip install -r requirements.txt",
}
_DEVICE_NAMES = {"auto": None, "": None, "cpu": "cpu", "dml": "dml", "directml": "dml", "cuda": "cuda", "gpu": "gpu"}
_RUNS_ON = {**TARGET_NAMES, "winml": "Windows ML"}  # what runs; TARGET_NAMES is what a folder is built for


@dataclass(frozen=True)
class ProviderChoice:
    """The execution provider to run on (cpu | dml | winml | cuda), what was asked (None: auto), and why."""

    provider: str
    asked: str | None
    reason: str

    @property
    def fell_back(self) -> bool:
        return self.asked in {"dml", "cuda", "gpu"} and self.provider == "cpu"

    @property
    def notice(self) -> str:
        return f"ONNX Runtime GenAI runs on {_RUNS_ON[self.provider]}: {self.reason}"


def installed_packages() -> frozenset[str]:
    names = {*GENAI_PACKAGES.values(), "onnxruntime", "onnxruntime-directml", "onnxruntime-gpu", winml.CATALOG,
             winml.WINML_ORT}
    return frozenset(n for n in names if installed_version(n))


def package_conflicts(installed: Iterable[str]) -> list[str]:
    """Package mixes known to break provider loading, each with its fix (one line each)."""
    have = set(installed)
    out = winml.conflicts(have)
    genai = [p for p in GENAI_PACKAGES.values() if p in have and p != winml.WINML_GENAI]
    if len(genai) > 1:
        out.append(f"{' and '.join(genai)} are both installed and share one module; keep only one "
                   f"(pip uninstall {genai[-1]}).")
    if {"onnxruntime-directml", "onnxruntime"} <= have:
        out.append("plain onnxruntime is installed beside onnxruntime-directml (symptom: 'Specified provider is not "
                   "supported'); pip uninstall onnxruntime onnxruntime-directml, then pip install "
                   "onnxruntime-genai-directml==0.13.1.")
    return out


def normalize_device(device: str | None) -> str | None:
    """'DML', 'DirectML', 'gpu', 'auto', 'winml-npu'... -> dml, gpu, None, winml; unknown names are refused."""
    key = (device or "").strip().lower()
    if key.startswith(("winml", "windowsml")):
        winml.wanted(key)  # refuses an unknown Windows ML device
        return "winml"
    if key not in _DEVICE_NAMES:
        extra = " (for the NPU use the npu or openvino backend, or winml-npu)" if key.startswith("npu") else ""
        raise UnknownDevice(f"unknown device {device!r} for the onnx backend; use auto, cpu, dml (DirectML), winml "
                            f"(Windows ML) or cuda{extra}.")
    return _DEVICE_NAMES[key]


def choose_provider(device: str | None, installed: Iterable[str], fallback_to_cpu: bool = True,
                    system: tuple[str, int | None] | None = None) -> ProviderChoice:
    """The provider for the device asked, from the installed distributions and ``system`` (OS name and Windows
    build; default this machine's). Pure."""
    have, asked = set(installed), normalize_device(device)
    clash = winml.conflicts(have)
    if clash:  # two builds of one module: nothing loads reliably
        raise BackendUnavailable(clash[0])
    if not have & set(GENAI_PACKAGES.values()):
        raise BackendUnavailable(
            f"no ONNX Runtime GenAI package is installed; {INSTALL_HINTS['cpu']} (or {INSTALL_HINTS['dml']})."
        )
    blocked = winml.blocker(have, *(system or winml.this_system()))
    if asked == "winml" or (asked == "gpu" and winml.WINML_GENAI in have and not blocked):
        if blocked:  # refused, not a fallback: the fix is on the machine
            raise DeviceUnavailable(blocked)
        return ProviderChoice("winml", asked, f"Windows ML was asked for and {winml.WINML_GENAI} is installed.")
    if asked is None and winml.WINML_GENAI in have:
        if not blocked:
            return ProviderChoice("winml", None, f"{winml.WINML_GENAI} is installed.")
        return ProviderChoice("cpu", None, f"{winml.WINML_GENAI} is installed, but {blocked}")
    present = [p for p in ("dml", "cuda") if GENAI_PACKAGES[p] in have]
    if asked is None:
        if present:
            return ProviderChoice(present[0], None, f"{GENAI_PACKAGES[present[0]]} is installed.")
        return ProviderChoice("cpu", None, f"only the CPU package {GENAI_PACKAGES['cpu']} is installed (DirectML "
                                           f"needs {GENAI_PACKAGES['dml']}, on Windows).")
    if asked == "cpu":
        return ProviderChoice("cpu", "cpu", "the CPU was asked for.")
    wanted = [asked] if asked in {"dml", "cuda"} else ["dml", "cuda"]  # gpu: either
    hit = next((p for p in wanted if p in present), None)
    if hit:
        return ProviderChoice(hit, asked, f"{TARGET_NAMES[hit]} was asked for and {GENAI_PACKAGES[hit]} is installed.")
    label = TARGET_NAMES[asked] if asked != "gpu" else "a GPU"
    where = " (it exists for Windows only)" if "dml" in wanted and sys.platform != "win32" else ""
    missing = f"{label} was asked for, but {' or '.join(GENAI_PACKAGES[p] for p in wanted)} is not installed{where}"
    if not fallback_to_cpu:
        raise DeviceUnavailable(f"{missing}; {INSTALL_HINTS[wanted[0]]}, or use device='cpu'.")
    return ProviderChoice("cpu", asked, f"{missing}; falling back to the CPU.")


def _provider_row(og, provider: str, have: frozenset[str]) -> tuple[bool, str]:
    """Whether ``provider`` is available through the imported onnxruntime_genai ``og``, and why."""
    pkg = GENAI_PACKAGES[provider]
    if provider == "cpu":
        pkgs = ", ".join(f"{n} {installed_version(n)}" for n in GENAI_PACKAGES.values() if n in have)
        return True, f"{pkgs}; {os.cpu_count()} logical CPUs"
    if pkg not in have:
        where = " (Windows only)" if provider == "dml" and sys.platform != "win32" else ""
        return False, f"{pkg} is not installed{where}; {INSTALL_HINTS[provider]}"
    name = f"{pkg} {installed_version(pkg)}"
    try:
        built = bool(getattr(og, f"is_{provider}_available")())
    except Exception as exc:
        return False, f"{name} is installed but the provider did not load ({exc})"
    if not built:
        return False, f"{name} is installed but not built with {TARGET_NAMES[provider]}; reinstall it"
    what = {"dml": "DirectML (needs a DirectX 12 GPU driver)", "cuda": "CUDA (needs an NVIDIA driver and CUDA 12)"}
    return True, f"{name}: built with {what[provider]}"


def device_report() -> list[dict]:
    """One row per provider (dml, cuda, cpu), then Windows ML's rows and package conflicts."""
    have = installed_packages()
    try:
        import onnxruntime_genai as og
    except Exception as exc:  # a broken install is reported, not a crash
        found = {p: (False, f"onnxruntime_genai does not import ({type(exc).__name__}: {exc})") for p in GENAI_PACKAGES}
    else:
        found = {p: _provider_row(og, p, have) for p in ("dml", "cuda", "cpu")}
    rows = [{"backend": "onnx", "device": p.upper(), "available": found[p][0], "detail": found[p][1]}
            for p in ("dml", "cuda", "cpu")]
    rows += winml.report(have, *winml.this_system())
    return rows + [{"backend": "onnx", "device": "-", "available": False, "detail": "conflict: " + c}
                   for c in package_conflicts(have)]
