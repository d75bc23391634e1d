"""Backends by name. Each lives in its own module and imports its runtime lazily, so the package
imports on machines that lack a runtime (DirectML and the NPU library exist on Windows only)."""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import BackendUnavailable, UnknownBackend

# name -> (module, class, python packages it needs, how to install them)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "transformers": ("phi3_helpers.backends.pytorch", "TransformersBackend", ("torch", "transformers"), "pip install -r requirements.txt"),
    "openvino": ("phi3_helpers.backends.openvino", "OpenVINOGenAIBackend", ("openvino_genai", "optimum.intel"), "pip install -r requirements.txt"),
    "openvino-optimum": ("phi3_helpers.backends.openvino", "OptimumOpenVINOBackend", ("optimum.intel",), "pip install -r requirements.txt"),
    # npu: OpenVINO GenAI on the NPU (CPU when there is none); path="classic" uses the archived
    # intel-npu-acceleration-library (Windows only), imported only when asked for.
    "npu": ("phi3_helpers.backends.npu", "NPUBackend", ("openvino_genai", "optimum.intel"), "pip install -r requirements.txt"),
    # onnx: ONNX Runtime GenAI (DirectML on Windows with onnxruntime-genai-directml, else CPU/CUDA)
    "onnx": ("phi3_helpers.backends.onnx", "OnnxGenAIBackend", ("onnxruntime_genai",), "pip install -r requirements.txt"),
}


def backend_class(name: str):
    """The class of a backend, importing its runtime; clear errors for unknown or missing ones."""
    key = (name or "").strip().lower()
    if key not in BACKENDS:
        raise UnknownBackend(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}.")
    module, cls, needs, how = BACKENDS[key]
    for pkg in needs:
        try:
            found = importlib.util.find_spec(pkg) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise BackendUnavailable(f"backend {key!r} needs the Python package {pkg!r}, which is not installed; run: {how}")
    return getattr(importlib.import_module(module), cls)


def available_backends() -> dict[str, str]:
    """Each backend name -> '' when usable here, else the reason it is not."""
    out = {}
    for name in BACKENDS:
        try:
            backend_class(name)
            out[name] = ""
        except Exception as exc:  # report, don't fail: this is for listings
            out[name] = str(exc)
    return out
