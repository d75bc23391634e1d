"""phi3_helpers: load Phi-3 on any runtime of the course and stream answers the same way.

>>> from phi3_helpers import load
>>> llm = load("openvino", precision="int4", device="CPU")
>>> for piece in llm.generate("What is the capital of France?"):
...     print(piece, end="")
"""

from __future__ import annotations

import sys

from .errors import InvalidOption, Phi3Error, one_line
from .models import KNOWN_MODELS, ModelSource, resolve_model
from .options import GenerationOptions
from .response import Metrics, Response
from .session import ChatSession

__version__ = "0.1.0"
DEFAULT_BACKEND = "openvino"


def load(
    backend: str = DEFAULT_BACKEND, model=None, device: str | None = None, precision: str | None = None, **options
):
    """Load a model (a name, a folder, or None: $PHI3_MODEL, else Phi-3, else the offline model) on a backend.

    Choices first (``plan_load``; or pass its Plan as ``backend``), then the folder is prepared (downloaded or
    exported once), then the runtime loads. A second real Phi-3 in memory is said in a notice;
    ``close_previous=True`` closes the first.
    """
    from .backends import backend_class
    from .backends.base import Plan
    from .models import loaded

    close = bool(options.pop("close_previous", False))
    if isinstance(backend, Plan):  # planned already: its choices stand, its notices were shown
        if model is not None or device is not None or precision is not None or options:
            raise InvalidOption("load(plan) takes the plan's own choices; make another plan with plan_load(...) "
                                "to change them.")
        plan = backend
    else:
        plan = plan_load(backend, model, device, precision, **options)
    loaded.before_load(plan.model.name, close=close)
    cls = backend_class(plan.backend)
    llm = cls(cls.prepare(plan))
    loaded.register(llm)
    return llm


def plan_load(
    backend: str = DEFAULT_BACKEND, model=None, device: str | None = None, precision: str | None = None, **options
):
    """What ``load`` would do, as a frozen Plan, with its notices shown; nothing is exported or loaded."""
    from .backends import backend_class, resolve_name
    from .backends.speculative import refuse_elsewhere
    from .models import notice

    name = resolve_name(backend, device, options.pop("path", None))
    refuse_elsewhere(name, options)
    plan = backend_class(name).plan(model, device, precision, **options)
    for line in plan.notices:
        notice(line)
    return plan


def _install_notebook_errors() -> None:
    """In IPython, show a Phi3Error as one line (it already says how to fix it), not a traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return

    def show(_shell, _etype, value, _tb, tb_offset=None) -> None:
        print(one_line(value), file=sys.stderr)

    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((Phi3Error,), show)


_install_notebook_errors()

__all__ = [
    "load", "plan_load", "resolve_model", "ChatSession", "GenerationOptions", "Response", "Metrics", "ModelSource",
    "Phi3Error", "KNOWN_MODELS",
]
