"""Which backends and devices this machine has, and why the others are missing."""

from __future__ import annotations

import importlib
import platform

from .backends import BACKENDS, available_backends


def report() -> list[dict]:
    """Rows of {backend, device, available, detail}, one per backend/device pair."""
    rows: list[dict] = []
    status = available_backends()
    for name in BACKENDS:
        if status[name]:
            rows.append({"backend": name, "device": "-", "available": False, "detail": status[name]})
            continue
        if name == "transformers":
            rows.append({"backend": name, "device": "CPU", "available": True, "detail": f"PyTorch on {platform.processor() or platform.machine()}"})
            continue
        module = importlib.import_module(BACKENDS[name][0])
        fn = getattr(module, "device_report", None)
        if fn is None:
            continue
        try:
            got = fn()
        except Exception as exc:  # a listing must not crash on one broken runtime
            got = [{"backend": name, "device": "-", "available": False, "detail": f"could not query: {exc}"}]
        for row in got:
            if row not in rows:
                rows.append(row)
    return rows


def format_report(rows: list[dict]) -> str:
    w_b = max([len("backend")] + [len(r["backend"]) for r in rows])
    w_d = max([len("device")] + [len(r["device"]) for r in rows])
    lines = [f"{'backend':<{w_b}}  {'device':<{w_d}}  ok   detail"]
    for r in rows:
        lines.append(f"{r['backend']:<{w_b}}  {r['device']:<{w_d}}  {'yes' if r['available'] else 'no ':<3}  {r['detail']}")
    return "\n".join(lines)
