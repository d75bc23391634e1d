"""Backends by name: each is one class in its own module (``base.py`` is the contract) that imports its runtime
lazily, so the package imports on machines that lack one (DirectML and the NPU library are Windows-only)."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os

from ..errors import BackendUnavailable, InvalidOption, UnknownBackend

#: name -> "module:Class"
BACKENDS: dict[str, str] = {
    "transformers": "phi3_helpers.backends.hf:TransformersBackend",
    "openvino": "phi3_helpers.backends.openvino:OpenVINOGenAIBackend",
    "openvino-optimum": "phi3_helpers.backends.openvino:OptimumOpenVINOBackend",
    "npu": "phi3_helpers.backends.npu:NPUBackend",
    "npu-classic": "phi3_helpers.backends.npu_classic:ClassicNPUBackend",
    "onnx": "phi3_helpers.backends.onnx:OnnxGenAIBackend",
}
#: PHI3_NPU_PATH=classic makes "npu" mean "npu-classic" (the archived library, Windows only).
NPU_PATH_ENV = "PHI3_NPU_PATH"
NPU_PATHS = {"maintained": "npu", "classic": "npu-classic"}


def installed_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def resolve_name(name: str, device: str | None = None, path: str | None = None) -> str:
    """The backend a load asks for, after the aliases: npu with path= or $PHI3_NPU_PATH; openvino on the NPU."""
    key = (name or "").strip().lower()
    if key == "openvino" and str(device or "").strip().upper().startswith("NPU"):
        from ..console import notice

        notice("on the NPU the openvino backend runs as the npu backend (NPU-ready export and settings).")
        key = "npu"
    if key != "npu":
        if path is not None:
            raise InvalidOption(f"path= is an option of the npu backend only, not of {name!r}.")
        return key
    chosen = (path or os.environ.get(NPU_PATH_ENV) or "maintained").strip().lower()
    if chosen not in NPU_PATHS:
        raise InvalidOption(
            f"path must be 'maintained' (OpenVINO GenAI) or 'classic' (intel-npu-acceleration-library); "
            f"got {chosen!r} (from path= or ${NPU_PATH_ENV}); or use --backend npu-classic."
        )
    return NPU_PATHS[chosen]


def backend_class(name: str, check: bool = True):
    """The class of a backend; with ``check``, a one-line error when its runtime is missing."""
    key = (name or "").strip().lower()
    if key not in BACKENDS:
        raise UnknownBackend(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}.")
    module, cls_name = BACKENDS[key].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    why = cls.missing() if check else ""
    if why:
        raise BackendUnavailable(why)
    return cls


def available_backends() -> dict[str, str]:
    """Each backend name -> '' when usable here, else the reason it is not."""
    return {name: backend_class(name, check=False).missing() for name in BACKENDS}
