"""STAND-INS for Windows-only libraries (see README.md here); ``forget(name)`` drops one from sys.modules."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent


def forget(library: str) -> None:
    """Drop a library (real or stand-in) from sys.modules, so the next import finds it afresh."""
    for name in [m for m in sys.modules if m.split(".")[0] == library]:
        del sys.modules[name]
