"""Which ONNX Runtime GenAI execution provider runs, from what is installed (one package per machine):

  onnxruntime-genai-directml  -> dml   (Windows, any DirectX 12 GPU)
  onnxruntime-genai-cuda      -> cuda  (NVIDIA GPU with CUDA)
  onnxruntime-genai           -> cpu

Asking for ``dml`` (or ``cuda``) where its package is missing falls back to the CPU with a notice,
or raises a clear error with ``fallback_to_cpu=False``. :func:`choose_provider` is a pure function
of the installed packages, so every case can be tested on any machine.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
from dataclasses import dataclass
from typing import Iterable

from ..errors import BackendUnavailable, DeviceUnavailable, UnknownDevice
from .onnx_build import TARGET_NAMES

# -- which execution provider -------------------------------------------------------------------
#: provider -> the ONNX Runtime GenAI package that brings it
GENAI_PACKAGES = {"dml": "onnxruntime-genai-directml", "cuda": "onnxruntime-genai-cuda", "cpu": "onnxruntime-genai"}
INSTALL_HINTS = {
    "dml": "on Windows: pip install onnxruntime-genai-directml==0.13.1 (and no plain onnxruntime beside it)",
    "cuda": "with an NVIDIA GPU and CUDA 12: pip install onnxruntime-genai-cuda",
    "cpu": "pip install -r requirements.txt",
}
_DEVICE_NAMES = {"auto": None, "": None, "cpu": "cpu", "dml": "dml", "directml": "dml", "cuda": "cuda", "gpu": "gpu"}


@dataclass(frozen=True)
class ProviderChoice:
    """The execution provider to run on, what was asked, and why (one line)."""

    provider: str  # cpu | dml | cuda
    asked: str | None  # None (auto), cpu, dml, cuda or gpu
    reason: str

    @property
    def fell_back(self) -> bool:
        """A GPU provider was asked but is not installed, so the CPU runs instead."""
        return self.asked in {"dml", "cuda", "gpu"} and self.provider == "cpu"

    @property
    def notice(self) -> str:
        return f"ONNX Runtime GenAI runs on {TARGET_NAMES[self.provider]}: {self.reason}"


def installed_packages() -> frozenset[str]:
    """The ONNX Runtime (GenAI) distributions installed here, by their PyPI names."""
    names = set(GENAI_PACKAGES.values()) | {"onnxruntime", "onnxruntime-directml", "onnxruntime-gpu"}
    found = set()
    for name in names:
        try:
            md.version(name)
            found.add(name)
        except md.PackageNotFoundError:
            pass
    return frozenset(found)


def package_conflicts(installed: Iterable[str]) -> list[str]:
    """Package mixes known to break provider loading, each with its fix (one line each)."""
    have = set(installed)
    out = []
    genai = [p for p in GENAI_PACKAGES.values() if p in have]
    if len(genai) > 1:
        out.append(
            f"{' and '.join(genai)} are both installed and share one module; keep only one (pip uninstall {genai[-1]})."
        )
    if "onnxruntime-directml" in have and "onnxruntime" in have:
        out.append(
            "plain onnxruntime is installed beside onnxruntime-directml (symptom: 'Specified provider is not "
            "supported'); "
            "pip uninstall onnxruntime onnxruntime-directml, then pip install onnxruntime-genai-directml==0.13.1."
        )
    return out


def normalize_device(device: str | None) -> str | None:
    """'DML', 'DirectML', 'gpu', 'auto'... -> dml, gpu, None; unknown names are refused."""
    key = (device or "").strip().lower()
    if key not in _DEVICE_NAMES:
        extra = " (for the NPU use the npu or openvino backend)" if key.startswith("npu") else ""
        raise UnknownDevice(
            f"unknown device {device!r} for the onnx backend; use auto, cpu, dml (DirectML) or cuda{extra}."
        )
    return _DEVICE_NAMES[key]


def choose_provider(device: str | None, installed: Iterable[str], fallback_to_cpu: bool = True) -> ProviderChoice:
    """Pick the execution provider from the device asked and the packages installed.

    Pure: ``installed`` is a set of distribution names (see :func:`installed_packages`).
    """
    have = set(installed)
    asked = normalize_device(device)
    if not any(p in have for p in GENAI_PACKAGES.values()):
        raise BackendUnavailable(
            f"no ONNX Runtime GenAI package is installed; {INSTALL_HINTS['cpu']} (or {INSTALL_HINTS['dml']})."
        )
    present = [p for p in ("dml", "cuda") if GENAI_PACKAGES[p] in have]
    if asked is None:
        if present:
            p = present[0]
            return ProviderChoice(p, None, f"{GENAI_PACKAGES[p]} is installed.")
        return ProviderChoice(
            "cpu",
            None,
            f"only the CPU package {GENAI_PACKAGES['cpu']} is installed (DirectML needs {GENAI_PACKAGES['dml']}, on "
            "Windows).",
        )
    if asked == "cpu":
        return ProviderChoice("cpu", "cpu", "the CPU was asked for.")
    wanted = [asked] if asked in {"dml", "cuda"} else ["dml", "cuda"]  # gpu: whichever is installed
    for p in wanted:
        if p in present:
            return ProviderChoice(p, asked, f"{TARGET_NAMES[p]} was asked for and {GENAI_PACKAGES[p]} is installed.")
    label = TARGET_NAMES[wanted[0]] if asked != "gpu" else "a GPU"
    pkgs = " or ".join(GENAI_PACKAGES[p] for p in wanted)
    where = " (it exists for Windows only)" if "dml" in wanted and sys.platform != "win32" else ""
    if not fallback_to_cpu:
        raise DeviceUnavailable(
            f"{label} was asked for, but {pkgs} is not installed{where}; {INSTALL_HINTS[wanted[0]]}, or use "
            "device='cpu'."
        )
    return ProviderChoice(
        "cpu", asked, f"{label} was asked for, but {pkgs} is not installed{where}; falling back to the CPU."
    )


def device_report() -> list[dict]:
    """One row per ONNX Runtime GenAI provider (dml, cuda, cpu): available here, and why not."""
    have = installed_packages()
    rows = []
    try:
        import onnxruntime_genai as og
    except Exception as exc:  # a broken install must still be reported, not crash the listing
        og = None
        broken = f"onnxruntime_genai does not import ({type(exc).__name__}: {exc})"
    probes = {"dml": "is_dml_available", "cuda": "is_cuda_available"}
    for p in ("dml", "cuda", "cpu"):
        pkg = GENAI_PACKAGES[p]
        if og is None:
            ok, detail = False, broken
        elif p == "cpu":
            ok = True
            pkgs = ", ".join(f"{n} {md.version(n)}" for n in GENAI_PACKAGES.values() if n in have)
            detail = f"{pkgs}; {os.cpu_count()} logical CPUs"
        elif pkg not in have:
            ok = False
            where = " (Windows only)" if p == "dml" and sys.platform != "win32" else ""
            detail = f"{pkg} is not installed{where}; {INSTALL_HINTS[p]}"
        else:
            try:
                ok = bool(getattr(og, probes[p])())
            except Exception as exc:
                ok = False
                detail = f"{pkg} {md.version(pkg)} is installed but the provider did not load ({exc})"
            else:  # a build flag: the GPU and its driver are only tried when a model loads
                what = (
                    "DirectML (needs a DirectX 12 GPU driver)"
                    if p == "dml"
                    else "CUDA (needs an NVIDIA driver and CUDA 12)"
                )
                detail = (
                    f"{pkg} {md.version(pkg)}: built with {what}"
                    if ok
                    else f"{pkg} {md.version(pkg)} is installed but not built with {TARGET_NAMES[p]}; reinstall it"
                )
        rows.append({"backend": "onnx", "device": p.upper(), "available": ok, "detail": detail})
    for c in package_conflicts(have):
        rows.append({"backend": "onnx", "device": "-", "available": False, "detail": "conflict: " + c})
    return rows
