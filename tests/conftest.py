"""Shared test fixtures (the environment is set in the repo's root conftest.py).

- Loaded backends are shared across tests through ``load_backend`` (one per backend/precision).
- ``stand_in_library``: the labelled STAND-IN for intel_npu_acceleration_library (Windows only), for one test.
"""

from __future__ import annotations

import pytest

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


@pytest.fixture
def stand_in_library(monkeypatch):
    """The labelled stand-in for intel_npu_acceleration_library, importable for one test (never the real one)."""
    from stand_ins import HERE, forget

    forget("intel_npu_acceleration_library")
    monkeypatch.syspath_prepend(str(HERE))
    import intel_npu_acceleration_library as lib

    assert lib.STAND_IN  # never the real library
    lib.reset()
    yield lib
    forget("intel_npu_acceleration_library")
