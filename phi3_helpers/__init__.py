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


def load(backend: str = "openvino", model=None, device: str | None = None, precision: str | None = None, **kw):
    """Load a model on a backend (transformers, openvino, openvino-optimum, onnx, npu).

    ``model`` is a name (phi3-mini, smollm2-135m-phi3), a folder, or None for the default
    ($PHI3_MODEL, else the real Phi-3 when the hub is reachable, else the offline model).
    """
    from .backends import backend_class

    if str(backend).strip().lower() == "openvino" and str(device or "").strip().upper().startswith("NPU"):
        # The NPU needs its own export (int4 symmetric, ratio 1.0) and static-shape settings.
        from .models import notice

        notice("on the NPU the openvino backend runs as the npu backend (NPU-ready export and settings).")
        backend = "npu"
    cls = backend_class(backend)
    from .backends.speculative import refuse_elsewhere

    refuse_elsewhere(str(backend).strip().lower(), kw)
    return cls(model=model, device=device, precision=precision, **kw)


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

__all__ = ["load", "resolve_model", "ChatSession", "GenerationOptions", "Response", "Metrics", "ModelSource", "Phi3Error", "KNOWN_MODELS"]
