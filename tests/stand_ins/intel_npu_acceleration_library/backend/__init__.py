"""STAND-IN for intel_npu_acceleration_library.backend (tests only)."""

from __future__ import annotations

import sys


def npu_available() -> bool:
    lib = sys.modules["intel_npu_acceleration_library"]
    lib.CALLS.append(("backend.npu_available", (), {}))
    return lib.NPU_AVAILABLE


def get_driver_version() -> str:
    # Like the real one: raises when there is no NPU; the version string is the stand-in's own.
    if not npu_available():
        raise RuntimeError("NPU is not available on this system")
    return "0.0.0.0-stand-in"
