"""The benchmark's results as a Markdown table and a chart."""

from pathlib import Path

#: header: (where in a result, "short."/"long." meaning its prompt; format)
COLUMNS = {
    "load s": ("load_s", "{:.1f}"), "TTFT short ms": ("short.ttft_ms", "{:.0f}"),
    "TTFT long ms": ("long.ttft_ms", "{:.0f}"), "ms/token short": ("short.ms_per_token", "{:.1f}"),
    "ms/token long": ("long.ms_per_token", "{:.1f}"), "tokens/s": ("short.tokens_per_s", "{:.1f}"),
    "runtime's own ms/token": ("short.runtime.ms_per_token.median", "{:.1f}"),
    "helper us/token": ("helper_cost_us_per_token", "{:.0f}"), "peak RSS MiB": ("peak_rss_mb", "{:.0f}"),
    "disk MiB": ("size_on_disk_mb", "{:.0f}"),
}


def label(r: dict) -> str:
    return f"{r['backend']} {r.get('precision', '')} {r.get('device') or 'auto'}{' (no NPU)' * bool(r.get('fallback'))}"


def _cell(r: dict, where: str, fmt: str) -> str:
    """The value at ``where`` formatted; a spread as median (min-max); "-" when missing."""
    value = r["prompts"] if where.startswith(("short.", "long.")) else r
    for key in where.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "-" if value.get("median") is None else f"{fmt.format(value['median'])} ({fmt.format(value['min'])}-" \
            f"{fmt.format(value['max'])})"
    return fmt.format(value)


def summary_line(r: dict) -> str:
    """One line per configuration (for progress output)."""
    if r.get("status") != "ok":
        return f"{label(r)}: {r.get('status')} - {r.get('reason')}"
    ttft = "/".join(_cell(r, f"{p}.ttft_ms", "{:.0f}") for p in ("short", "long"))
    ms = "/".join(_cell(r, f"{p}.ms_per_token", "{:.1f}") for p in ("short", "long"))
    return f"{label(r)}: TTFT {ttft} ms, {ms} ms/token (short/long)"


def markdown_table(doc: dict) -> str:
    """Measured configurations (medians, min-max in brackets), llama.cpp's row when asked for, what was skipped."""
    ok = [r for r in doc["results"] if r["status"] == "ok"]
    header = ["backend", "precision", "device", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in ok + doc.get("peers", []):
        cells = [r["backend"], r["precision"], (r["device"] or "auto") + " (fallback)" * bool(r.get("fallback"))]
        lines.append("| " + " | ".join(cells + [_cell(r, *where) for where in COLUMNS.values()]) + " |")
    m, st = doc["machine"], doc["settings"]
    short, long = (next((r["prompts"][p]["prompt_tokens"] for r in ok), None) for p in ("short", "long"))
    lines += ["", f"Model {doc['model']}; prompts of {short} and {long} tokens; {st['max_new_tokens']} new tokens; "
              f"median of {st['runs']} short-prompt runs ({st['long_runs']} long) after {st['warmup']} warm-up "
              f"(min-max in brackets); load average {m.get('load_avg_before')} -> {m.get('load_avg_after')} on "
              f"{m['cores']} cores."]
    busy = max((m.get("load_avg_before") or [0])[:1] + (m.get("load_avg_after") or [0])[:1])
    if busy > 0.75 * (m.get("cores") or 1):
        lines.append(f"The machine was busy (load average up to {busy:.1f} on {m['cores']} cores): single runs vary "
                     "by tens of percent (see min-max); compare medians, and the runtime's own ms/token with the "
                     "helper's.")
    lines += [f"- {p['backend']}: `{p['command']}` (build {p['build']})" for p in doc.get("peers", [])]
    for r in [r for r in doc["results"] if r["status"] != "ok"] + doc.get("skipped", []):
        lines.append(f"- {label(r) if 'precision' in r else r['backend']}: {r['status']} ({r.get('reason')})")
    return "\n".join(lines)


def plot(doc: dict, path: str | Path | None = None):
    """TTFT and ms/token (both prompts; llama.cpp's row too), size on disk and the helper's own cost: a bare
    Figure on the Agg canvas (no pyplot), so a notebook keeps its backend and displays the returned figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    res = [r for r in doc["results"] if r["status"] == "ok"]
    rows = res + doc.get("peers", [])
    fig = Figure(figsize=(13, 3 + 0.9 * len(rows)))
    FigureCanvasAgg(fig)
    (ax_ttft, ax_tok), (ax_disk, ax_over) = fig.subplots(2, 2)
    for ax, key, title in ((ax_ttft, "ttft_ms", "Time to first token (lower is better)"),
                           (ax_tok, "ms_per_token", "Decode: ms per output token (lower is better)")):
        for shift, length in ((-0.2, "short"), (0.2, "long")):
            values = [(r["prompts"].get(length) or {}).get(key, {}).get("median") or 0 for r in rows]
            tokens = next((r["prompts"][length]["prompt_tokens"] for r in res), "?")
            ax.barh([y + shift for y in range(len(rows))], values, height=0.4, label=f"{length} prompt ({tokens} tok)")
        ax.legend(fontsize=7, loc="best")
        _axis(ax, rows, title, "ms" if key == "ttft_ms" else "ms/token")
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
