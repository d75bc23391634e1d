"""STAND-IN for intel_npu_acceleration_library.backend (tests only)."""

from __future__ import annotations

import sys


def npu_available() -> bool:
    lib = sys.modules["intel_npu_acceleration_library"]
    lib.CALLS.append(("backend.npu_available", (), {}))
    return lib.NPU_AVAILABLE


#: What get_driver_version() answers (an int, like the real 1.4.0; tests switch it).
DRIVER_VERSION = 4321


def get_driver_version() -> int:
    # Like the real one: raises when there is no NPU.
    if not npu_available():
        raise RuntimeError("NPU is not available on this system")
    return DRIVER_VERSION
