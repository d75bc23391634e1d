"""The benchmark's results as a table (Markdown) and a chart (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path


def ok_results(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if r.get("status") == "ok"]


def label(r: dict) -> str:
    dev = r.get("device") or "auto"
    if r.get("fallback"):
        dev += " (no NPU)"
    return f"{r['backend']} {r['precision']} {dev}"


def _f(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def summary_lines(results: list[dict]) -> list[str]:
    """One line per configuration (for progress output)."""
    lines = []
    for r in results:
        if r.get("status") != "ok":
            lines.append(f"{label(r) if 'precision' in r else r.get('backend')}: {r.get('status')} - {r.get('reason')}")
            continue
        s, lg = r["prompts"]["short"], r["prompts"]["long"]
        lines.append(
            f"{label(r)}: load {r['load_s']:.1f} s, TTFT {s['ttft_ms']['median']:.0f}/{lg['ttft_ms']['median']:.0f} "
            "ms, "
            f"{s['ms_per_token']['median']:.1f}/{lg['ms_per_token']['median']:.1f} ms/token (short/long), "
            f"helper {r['helper_cost_us_per_token']:.0f} us/token"
        )
    return lines


def table_rows(doc: dict) -> list[list[str]]:
    """Header + one row per measured configuration."""
    rows = [
        [
            "backend", "precision", "device", "load s", "TTFT short ms", "TTFT long ms", "ms/token short",
            "ms/token long", "tokens/s", "runtime's own ms/token", "helper us/token", "peak RSS MiB", "disk MiB",
        ]
    ]
    for r in ok_results(doc):
        s, lg = r["prompts"]["short"], r["prompts"]["long"]
        rows.append(
            [
                r["backend"], r["precision"], (r["device"] or "auto") + (" (fallback)" if r.get("fallback") else ""),
                _f(r["load_s"]), f"{s['ttft_ms']['median']:.0f} ({s['ttft_ms']['min']:.0f}-{s['ttft_ms']['max']:.0f})",
                f"{lg['ttft_ms']['median']:.0f} ({lg['ttft_ms']['min']:.0f}-{lg['ttft_ms']['max']:.0f})",
                f"{s['ms_per_token']['median']:.1f} ({s['ms_per_token']['min']:.1f}-{s['ms_per_token']['max']:.1f})",
                f"{lg['ms_per_token']['median']:.1f} ({lg['ms_per_token']['min']:.1f}-{lg['ms_per_token']['max']:.1f})",
                _f(s["tokens_per_s"]), _f(s["runtime"]["ms_per_token"]["median"]),
                _f(r["helper_cost_us_per_token"], "{:.0f}"), _f(r["peak_rss_mb"], "{:.0f}"),
                _f(r["size_on_disk_mb"], "{:.0f}"),
            ]
        )
    return rows


def markdown_table(doc: dict) -> str:
    """The results as a Markdown table (medians, with min-max in brackets), plus what was skipped."""
    rows = table_rows(doc)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    short = next((r["prompts"]["short"]["prompt_tokens"] for r in ok_results(doc)), None)
    long = next((r["prompts"]["long"]["prompt_tokens"] for r in ok_results(doc)), None)
    s = doc["settings"]
    lines.append("")
    lines.append(
        f"Model {doc['model']}; prompts of {short} and {long} tokens; {s['max_new_tokens']} new tokens; "
        f"median of {s['runs']} short-prompt runs ({s['long_runs']} long) after {s['warmup']} warm-up (min-max in "
        "brackets); load average "
        f"{doc['machine'].get('load_avg_before')} -> {doc['machine'].get('load_avg_after')} on "
        f"{doc['machine']['cores']} cores."
    )
    busy = max((doc["machine"].get("load_avg_before") or [0])[:1] + (doc["machine"].get("load_avg_after") or [0])[:1])
    if busy > 0.75 * (doc["machine"].get("cores") or 1):
        lines.append(
            f"The machine was busy (load average up to {busy:.1f} on {doc['machine']['cores']} cores): other "
            "programs shared "
            "the CPU, so single runs vary by tens of percent (see min-max); compare medians, and the runtime's own "
            "ms/token (measured inside the runtime, for the same runs) with the helper's."
        )
    for r in doc["results"]:
        if r.get("status") != "ok":
            lines.append(f"- {label(r)}: {r.get('status')} ({r.get('reason')})")
    for r in doc.get("skipped", []):
        lines.append(f"- {r['backend']}{' ' + str(r['device']) if r.get('device') else ''}: skipped ({r['reason']})")
    return "\n".join(lines)


def plot(doc: dict, path: str | Path | None = None, reference: list[dict] | None = None):
    """TTFT and ms/token (short and long prompt), size on disk and the helper's own cost, per config.

    ``reference`` rows ({"label", "ttft_ms", "ms_per_token"}) are drawn beside the measured ones,
    hatched, e.g. published figures for other hardware. Returns the matplotlib figure.
    """
    # A bare Figure with the Agg canvas: no pyplot, so no global backend is switched (a notebook
    # keeps its inline backend, and displays the returned figure).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    res = ok_results(doc)
    labels = [label(r) for r in res]
    refs = reference or []
    fig = Figure(figsize=(13, 3 + 0.45 * (len(res) + len(refs)) * 2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    (ax_ttft, ax_tok), (ax_disk, ax_over) = axes

    def bars(ax, key: str, title: str, unit: str, ref_key: str | None = None):
        n = len(res)
        ys = list(range(n))
        short = [r["prompts"]["short"][key]["median"] for r in res]
        long = [r["prompts"]["long"][key]["median"] for r in res]
        ax.barh(
            [y - 0.2 for y in ys], short, height=0.4,
            label=f"short prompt ({res[0]['prompts']['short']['prompt_tokens']} tok)" if res else "short",
        )
        ax.barh(
            [y + 0.2 for y in ys], long, height=0.4,
            label=f"long prompt ({res[0]['prompts']['long']['prompt_tokens']} tok)" if res else "long",
        )
        names = list(labels)
        if ref_key:
            for j, ref in enumerate(refs):
                ax.barh(
                    [n + j], [ref[ref_key]], height=0.4, color="lightgray", hatch="//", edgecolor="gray",
                    label="published (other hardware)" if j == 0 else None,
                )
                names.append(ref["label"])
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(unit)
        ax.legend(fontsize=7, loc="best")
        ax.grid(axis="x", alpha=0.3)

    bars(ax_ttft, "ttft_ms", "Time to first token (lower is better)", "ms", "ttft_ms")
    bars(ax_tok, "ms_per_token", "Decode: ms per output token (lower is better)", "ms/token", "ms_per_token")
    ax_disk.barh(range(len(res)), [r["size_on_disk_mb"] for r in res], color="tab:green")
    ax_disk.set_yticks(range(len(res)), labels, fontsize=8)
    ax_disk.invert_yaxis()
    ax_disk.set_title("Size on disk")
    ax_disk.set_xlabel("MiB")
    ax_disk.grid(axis="x", alpha=0.3)
    share = [r["helper_cost_us_per_token"] / 10 / r["prompts"]["short"]["ms_per_token"]["median"] for r in res]
    ax_over.barh(range(len(res)), share, color="tab:purple")
    ax_over.set_yticks(range(len(res)), labels, fontsize=8)
    ax_over.invert_yaxis()
    ax_over.set_title("The helper's own cost: % of the time per token (replay, no runtime)")
    ax_over.title.set_fontsize(9)
    ax_over.set_xlabel("%")
    ax_over.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{doc['model']} on {doc['machine']['cpu']} ({doc['machine']['cores']} cores)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
