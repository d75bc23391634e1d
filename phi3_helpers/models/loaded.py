"""One large model in memory, or a notice that two are (a 16 GB laptop holds one Phi-3-mini); load() registers
each backend here, weakly. ``close_previous=True`` closes the others: not the default, as chapters go back to
their first model after trying a second one."""

from __future__ import annotations

import weakref

_open: weakref.WeakSet = weakref.WeakSet()
register = _open.add
forget = _open.discard


def is_large(backend) -> bool:
    """The real Phi-3, or a prepared folder of 2 GiB or more."""
    from . import PHI3_MINI
    from .cache import folder_size

    if getattr(getattr(backend, "model", None), "name", None) == PHI3_MINI:
        return True
    folder = getattr(backend, "prepared_folder", None)
    try:
        return folder is not None and folder_size(folder) >= 2 * 2**30
    except OSError:
        return False


def before_load(model_name: str | None, close: bool = False, say=None) -> list:
    """Say (or, with ``close``, close) the large models still open before phi3-mini (or the default) loads."""
    from . import PHI3_MINI, notice

    say = say or notice
    big = [b for b in list(_open) if is_large(b)] if model_name in (None, PHI3_MINI) else []
    if not big:
        return []
    names = ", ".join(b.describe() for b in big)
    if not close:
        say(f"{names} is still loaded: two copies of the real model will be in memory; call .close() on one "
            "to free it, or load(..., close_previous=True).")
        return []
    for b in big:
        b.close()
        _open.discard(b)
    say(f"closed {names} to free memory for the next model.")
    return big
