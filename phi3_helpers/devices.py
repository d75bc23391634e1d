"""Which backends and devices this machine has, and why the others are missing."""

from __future__ import annotations

from .backends import BACKENDS, backend_class


def report() -> list[dict]:
    """Rows of {backend, device, available, detail}: each backend's own report, or why it is unusable."""
    rows: list[dict] = []
    for name in BACKENDS:
        cls = backend_class(name, check=False)
        why = cls.missing()
        try:
            got = [] if why else cls.device_report()
        except Exception as exc:  # a listing must not crash on one broken runtime
            why = f"could not query: {exc}"
        if why:
            got = [{"backend": name, "device": "-", "available": False, "detail": why}]
        rows += [row for row in got if row not in rows]
    return rows


def format_report(rows: list[dict]) -> str:
    """The rows as an aligned table: backend, device, ok, detail."""
    width_b = max(len(r["backend"]) for r in [{"backend": "backend"}, *rows])
    width_d = max(len(r["device"]) for r in [{"device": "device"}, *rows])
    lines = [f"{'backend':<{width_b}}  {'device':<{width_d}}  ok   detail"]
    for r in rows:
        ok = "yes" if r["available"] else "no"
        lines.append(f"{r['backend']:<{width_b}}  {r['device']:<{width_d}}  {ok:<3}  {r['detail']}")
    return "\n".join(lines)
