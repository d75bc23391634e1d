"""phi3_helpers: load Phi-3 on any runtime of the course and stream answers the same way.

>>> from phi3_helpers import load
>>> llm = load("openvino", precision="int4", device="CPU")
>>> for piece in llm.generate("What is the capital of France?"):
...     print(piece, end="")
"""

from __future__ import annotations

import sys

from .errors import Phi3Error
from .models import KNOWN_MODELS, ModelSource, resolve_model
from .options import GenerationOptions
from .response import Metrics, Response
from .session import ChatSession

__version__ = "0.1.0"
#: The backend ``load()`` uses when none is named.
DEFAULT_BACKEND = "openvino"


def load(
    backend: str = DEFAULT_BACKEND, model=None, device: str | None = None, precision: str | None = None, **options
):
    """Load a model on a backend (transformers, openvino, openvino-optimum, npu, npu-classic, onnx).

    ``model`` is a name (phi3-mini, smollm2-135m-phi3), a folder, or None for the default
    ($PHI3_MODEL, else the real Phi-3 when the hub is reachable, else the offline model).
    ``options`` are the backend's own (e.g. npu: max_prompt_tokens; onnx: threads). Every choice is
    made first (``plan``), then the folder is prepared (export/build, once), then the runtime loads.
    For phi3-mini the backend's prequantized folder is downloaded (``source="export"``: a local export
    from the checkpoint). Loading a real Phi-3 while another is open says that two copies are in
    memory (``close_previous=True`` closes the open one first).
    """
    from .backends import backend_class
    from .models import loaded

    close = bool(options.pop("close_previous", False))  # a second real Phi-3: said, or the first closed
    plan = plan_load(backend, model, device, precision, **options)
    loaded.before_load(plan.model.name, close=close)
    cls = backend_class(plan.backend)
    llm = cls(cls.prepare(plan))
    loaded.register(llm)
    return llm


def plan_load(
    backend: str = DEFAULT_BACKEND, model=None, device: str | None = None, precision: str | None = None, **options
):
    """What ``load`` would do, as a frozen Plan (backend, model, device, precision, folder, notices);
    nothing is exported or loaded. Its notices are shown once, here."""
    from .backends import backend_class, resolve_name
    from .models import notice

    from .backends.speculative import refuse_elsewhere

    name = resolve_name(backend, device, options.pop("path", None))
    refuse_elsewhere(name, options)
    cls = backend_class(name)
    plan = cls.plan(model, device, precision, **options)
    for line in plan.notices:
        notice(line)
    return plan


def _install_notebook_errors() -> None:
    """In IPython, show a Phi3Error as one line (it already says how to fix it), not a traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return

    def _show(shell, etype, value, tb, tb_offset=None):
        print(f"{etype.__name__}: {value}", file=sys.stderr)
        return None

    ip.set_custom_exc((Phi3Error,), _show)


_install_notebook_errors()

__all__ = [
    "load", "plan_load", "resolve_model", "ChatSession", "GenerationOptions", "Response", "Metrics", "ModelSource",
    "Phi3Error", "KNOWN_MODELS",
]
