"""Shared test set-up: offline, nothing written outside the repo and temp folders.

- HOME points at a temp folder (ORT and OpenVINO write telemetry under ~, Jupyter and
  matplotlib their settings), HF_HUB_OFFLINE=1, and the runtimes' caches point inside the repo.
- Built models are cached in <repo>/.cache/models (PHI3_CACHE_DIR), so a warm run is fast.
- Loaded backends are shared across tests through ``load_backend`` (one per backend/precision).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="phi3-test-home-"))

os.environ["HOME"] = str(_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PHI3_CACHE_DIR", str(REPO / ".cache" / "models"))
os.environ["HF_HOME"] = str(_HOME / "hf")
os.environ["MPLCONFIGDIR"] = str(_HOME / "mpl")
os.environ["JUPYTER_CONFIG_DIR"] = str(_HOME / "jupyter")
os.environ["JUPYTER_DATA_DIR"] = str(_HOME / "jupyter-data")
os.environ["JUPYTER_RUNTIME_DIR"] = str(_HOME / "jupyter-runtime")
os.environ["IPYTHONDIR"] = str(_HOME / "ipython")
os.environ["OPENVINO_TELEMETRY_OPT_OUT"] = "1"  # documented opt-out; HOME covers the rest
os.environ.pop("PHI3_MODEL", None)

_loaded: dict = {}


@pytest.fixture(scope="session")
def offline_model():
    """The offline Phi-3-architecture model (built once into the cache)."""
    from phi3_helpers.models import OFFLINE_MODEL, resolve_model

    return resolve_model(OFFLINE_MODEL)


@pytest.fixture(scope="session")
def load_backend(offline_model):
    """load_backend(name, precision=None, device=None) -> a loaded backend, shared by all tests."""
    from phi3_helpers import load

    def _load(name: str, precision: str | None = None, device: str | None = None):
        key = (name, precision, device)
        if key not in _loaded:
            _loaded[key] = load(name, model=offline_model, precision=precision, device=device)
        return _loaded[key]

    return _load


FRANCE = "What is the capital of France?"
