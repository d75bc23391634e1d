"""STAND-IN for intel-npu-acceleration-library (tests only; see tests/stand_ins/README.md).

Offers the names of the library's documented API that phi3_helpers' classic adapter calls, and
records each call in ``CALLS``. ``from_pretrained`` loads the model with plain transformers on the
CPU: nothing is quantized or compiled, so only the adapter's wiring is tested with it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

__version__ = "stand-in"
STAND_IN = True

#: Every call the adapter made: (name, args, kwargs).
CALLS: list[tuple[str, tuple, dict]] = []
#: What npu_available() answers (tests switch it).
NPU_AVAILABLE = False
#: Simulate an old compiled copy in ./cache/models that torch>=2.6 cannot reload.
STALE_CACHE = False


@dataclass(frozen=True)
class NPUDtype:
    name: str
    bits: int


int4 = NPUDtype("int4", 4)
int8 = NPUDtype("int8", 8)


class _RecordingModel:
    """Wraps the transformers model; records how generate() is called."""

    def __init__(self, model):
        self._model = model

    def eval(self):
        CALLS.append(("eval", (), {}))
        self._model.eval()
        return self

    def generate(self, *args, **kwargs):
        CALLS.append(("generate", args, kwargs))
        return self._model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


class NPUModelForCausalLM:
    @staticmethod
    def from_pretrained(model_name_or_path, config, export=True, *args, **kwargs):
        kwargs_seen = dict(config=config, export=export, **kwargs)
        CALLS.append(("NPUModelForCausalLM.from_pretrained", (model_name_or_path,), kwargs_seen))
        if STALE_CACHE:
            raise pickle.UnpicklingError("Weights only load failed. (stand-in: simulated torch.load of ./cache/models)")
        from transformers import AutoModelForCausalLM

        return _RecordingModel(AutoModelForCausalLM.from_pretrained(model_name_or_path, *args, **kwargs))


def reset() -> None:
    """Forget recorded calls and switches (used by the test fixture)."""
    global NPU_AVAILABLE, STALE_CACHE
    CALLS.clear()
    NPU_AVAILABLE = False
    STALE_CACHE = False
