"""STAND-IN for intel_npu_acceleration_library.compiler (tests only)."""

from __future__ import annotations


class CompilerConfig:
    def __init__(self, use_to: bool = False, dtype=None, training: bool = False) -> None:
        from . import CALLS

        CALLS.append(("CompilerConfig", (), dict(use_to=use_to, dtype=dtype, training=training)))
        self.use_to = use_to
        self.dtype = dtype
        self.training = training
