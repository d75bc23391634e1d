"""The benchmark's results as a table (Markdown) and a chart (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

HEADER = ["backend", "precision", "device", "load s", "TTFT short ms", "TTFT long ms", "ms/token short",
          "ms/token long", "tokens/s", "runtime's own ms/token", "helper us/token", "peak RSS MiB", "disk MiB"]


def label(r: dict) -> str:
    return f"{r['backend']} {r.get('precision', '')} {r.get('device') or 'auto'}{' (no NPU)' * bool(r.get('fallback'))}"


def _f(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _spread(s: dict | None, fmt: str = "{:.0f}") -> str:
    return "-" if not s or s.get("median") is None else f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-" \
        f"{fmt.format(s['max'])})"


def summary_line(r: dict) -> str:
    """One line per configuration (for progress output)."""
    if r.get("status") != "ok":
        return f"{label(r)}: {r.get('status')} - {r.get('reason')}"
    s, lg = r["prompts"]["short"], r["prompts"].get("long", {})
    return (f"{label(r)}: TTFT {_spread(s['ttft_ms'])}/{_spread(lg.get('ttft_ms'))} ms, "
            f"{_spread(s['ms_per_token'], '{:.1f}')}/{_spread(lg.get('ms_per_token'), '{:.1f}')} ms/token (short/long)")


def markdown_table(doc: dict) -> str:
    """Measured configurations (medians, min-max in brackets), llama.cpp's row when asked for, what was skipped."""
    ok = [r for r in doc["results"] if r.get("status") == "ok"]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in ok + doc.get("peers", []):
        s, lg = r["prompts"]["short"], r["prompts"].get("long", {})
        cells = [r["backend"], r["precision"], (r["device"] or "auto") + " (fallback)" * bool(r.get("fallback")),
                 _f(r.get("load_s")), _spread(s["ttft_ms"]), _spread(lg.get("ttft_ms")),
                 _spread(s["ms_per_token"], "{:.1f}"), _spread(lg.get("ms_per_token"), "{:.1f}"),
                 _f(s["tokens_per_s"]), _f(s.get("runtime", {}).get("ms_per_token", {}).get("median")),
                 _f(r.get("helper_cost_us_per_token"), "{:.0f}"), _f(r.get("peak_rss_mb"), "{:.0f}"),
                 _f(r.get("size_on_disk_mb"), "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    m, st = doc["machine"], doc["settings"]
    short = next((r["prompts"]["short"]["prompt_tokens"] for r in ok), None)
    long = next((r["prompts"]["long"]["prompt_tokens"] for r in ok), None)
    lines += ["", f"Model {doc['model']}; prompts of {short} and {long} tokens; {st['max_new_tokens']} new tokens; "
              f"median of {st['runs']} short-prompt runs ({st['long_runs']} long) after {st['warmup']} warm-up "
              f"(min-max in brackets); load average {m.get('load_avg_before')} -> {m.get('load_avg_after')} on "
              f"{m['cores']} cores."]
    busy = max((m.get("load_avg_before") or [0])[:1] + (m.get("load_avg_after") or [0])[:1])
    if busy > 0.75 * (m.get("cores") or 1):
        lines.append(f"The machine was busy (load average up to {busy:.1f} on {m['cores']} cores): single runs vary "
                     "by tens of percent (see min-max); compare medians, and the runtime's own ms/token with the "
                     "helper's.")
    for p in doc.get("peers", []):
        lines.append(f"- {p['backend']}: `{p['command']}` (build {p['build']})")
    for r in [r for r in doc["results"] if r.get("status") != "ok"] + doc.get("skipped", []):
        lines.append(f"- {label(r) if 'precision' in r else r['backend']}: {r['status']} ({r.get('reason')})")
    return "\n".join(lines)


def plot(doc: dict, path: str | Path | None = None):
    """TTFT and ms/token (short and long prompt; llama.cpp's row too), size on disk and the helper's own cost.

    A bare Figure on the Agg canvas: no pyplot, so a notebook keeps its backend and displays the returned figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    res = [r for r in doc["results"] if r.get("status") == "ok"]
    rows = res + doc.get("peers", [])
    fig = Figure(figsize=(13, 3 + 0.9 * len(rows)))
    FigureCanvasAgg(fig)
    (ax_ttft, ax_tok), (ax_disk, ax_over) = fig.subplots(2, 2)
    for ax, key, title, unit in ((ax_ttft, "ttft_ms", "Time to first token (lower is better)", "ms"),
                                 (ax_tok, "ms_per_token", "Decode: ms per output token (lower is better)", "ms/token")):
        for shift, length in ((-0.2, "short"), (0.2, "long")):
            values = [(r["prompts"].get(length) or {}).get(key, {}).get("median") or 0 for r in rows]
            tokens = next((r["prompts"][length]["prompt_tokens"] for r in res), "?")
            ax.barh([y + shift for y in range(len(rows))], values, height=0.4, label=f"{length} prompt ({tokens} tok)")
        ax.legend(fontsize=7, loc="best")
        _axis(ax, rows, title, unit)
    ax_disk.barh(range(len(res)), [r["size_on_disk_mb"] for r in res], color="tab:green")
    _axis(ax_disk, res, "Size on disk", "MiB")
    share = [r["helper_cost_us_per_token"] / 10 / r["prompts"]["short"]["ms_per_token"]["median"] for r in res]
    ax_over.barh(range(len(res)), share, color="tab:purple")
    _axis(ax_over, res, "The helper's own cost: % of the time per token (replay, no runtime)", "%")
    fig.suptitle(f"{doc['model']} on {doc['machine']['cpu']} ({doc['machine']['cores']} cores)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _axis(ax, rows: list[dict], title: str, unit: str) -> None:
    ax.set_yticks(range(len(rows)), [label(r) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit)
    ax.grid(axis="x", alpha=0.3)
