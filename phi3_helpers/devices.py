"""Which backends and devices this machine has, and why the others are missing."""

from __future__ import annotations

from .backends import BACKENDS, backend_class


def report() -> list[dict]:
    """Rows of {backend, device, available, detail}: each backend's own report, or why it is unusable."""
    rows: list[dict] = []
    for name in BACKENDS:
        cls = backend_class(name, check=False)
        why = cls.missing()
        if why:
            rows.append({"backend": name, "device": "-", "available": False, "detail": why})
            continue
        try:
            got = cls.device_report()
        except Exception as exc:  # a listing must not crash on one broken runtime
            got = [{"backend": name, "device": "-", "available": False, "detail": f"could not query: {exc}"}]
        rows += [row for row in got if row not in rows]
    return rows


def format_report(rows: list[dict]) -> str:
    w_b = max([len("backend")] + [len(r["backend"]) for r in rows])
    w_d = max([len("device")] + [len(r["device"]) for r in rows])
    lines = [f"{'backend':<{w_b}}  {'device':<{w_d}}  ok   detail"]
    for r in rows:
        lines.append(
            f"{r['backend']:<{w_b}}  {r['device']:<{w_d}}  {'yes' if r['available'] else 'no ':<3}  {r['detail']}"
        )
    return "\n".join(lines)
