"""``bench --chat``: time to first token per turn of a 10-turn chat through ChatSession, KV-cache reuse on and off,
and the speedup of speculative decoding; greedy, fixed questions, written to ``chat.json`` and ``chat.png``."""

import datetime
import json
import platform
import statistics
from pathlib import Path
from typing import Sequence

SYSTEM = "You are a helpful assistant. Answer in a short paragraph."
QUESTIONS = [
    "What is the capital of France?", "Tell me about its most famous tower.", "How tall is it, roughly?",
    "Who designed it?", "What other landmarks are in that city?", "Which river runs through it?",
    "Name three famous museums there.", "What food is the city known for?", "What is the best season to visit?",
    "Summarize our conversation in two sentences.",
]
#: backend, precision, device, extra load options, label
CHAT_CONFIGS = [
    ("openvino", "int4", "CPU", {}, "openvino int4"),
    ("npu", "int4", None, {}, "npu int4"),
    ("onnx", "int4", None, {}, "onnx int4"),
    ("transformers", "fp32", None, {}, "transformers fp32"),
]
#: for prompt lookup, a task whose answer is mostly copied from the prompt
PARAGRAPH = (
    "Correct the spelling in this paragraph and repeat it: The quick brown fox jumpd over the lazy dog. "
    "The dog was not amused and barkd loudly at the fox, who ran away into the forrest. Later that day the "
    "fox came bak and apologised to the dog, and they becam good frends."
)


def _on(reuse: bool) -> str:
    return "on" if reuse else "off"


def _chat_row(config: tuple, reuse: bool, turns: int, tokens: int, model, repeats: int = 1) -> dict:
    """One backend's chat, ``repeats`` times (cleared in between): per turn, prompt size, the median TTFT (each
    chat's in ``ttft_runs_ms``), tokens/s and tokens reused (of the first chat)."""
    from .. import load

    backend, precision, device, options, label = config
    llm = load(backend, model=model, precision=precision, device=device, reuse_cache=reuse, **options)
    chats = []
    for k in range(repeats):  # another system prompt each time: nothing cached by a runtime (OpenVINO's prefix cache)
        chat = llm.chat(system=SYSTEM + f" This is chat {k + 1}." * (k > 0), max_new_tokens=tokens)
        chat.print_notices = False
        rows = []
        for i in range(turns):
            resp = chat.ask(QUESTIONS[i % len(QUESTIONS)])
            resp.text()
            m = resp.metrics
            rows.append({"turn": i + 1, "prompt_tokens": m.prompt_tokens, "tokens": m.tokens,
                         "ttft_ms": round(m.ttft_s * 1000, 1) if m.ttft_s is not None else None,
                         "tokens_per_s": round(m.tokens_per_s, 1) if m.tokens_per_s else None,
                         "reused_tokens": llm.kv.last_reused if llm.kv.runtime is not None else None})
        chat.clear()
        chats.append(rows)
    for i, turn in enumerate(chats[0]):
        turn["ttft_runs_ms"] = [c[i]["ttft_ms"] for c in chats]
        if None not in turn["ttft_runs_ms"]:
            turn["ttft_ms"] = statistics.median(turn["ttft_runs_ms"])
    row = {"label": label, "backend": backend, "reuse": reuse, "describe": llm.describe(), "turns": chats[0]}
    llm.close()
    return row


def _speculative_rows(model, tokens: int, runs: int) -> list[dict]:
    """Plain, prompt lookup and a draft model on openvino int4, same prompt: the speedup, and the same tokens?"""
    from .. import load
    from ..backends.openvino import export_folder
    from ..backends.speculative import DRAFT_MODELS
    from ..models import PHI3_MINI, model_name, resolve_model

    src = model_name(model) if model is None or isinstance(model, str) else model
    if getattr(src, "name", src) == PHI3_MINI:  # by name: openvino's prequantized int4 folder, not the checkpoint
        draft = ("phi3-mini-draft", f"draft {DRAFT_MODELS['phi3-mini-draft']}")
    else:  # offline, the model's own int4 export stands in (same tokenizer): the mechanics, not a real speedup
        src = resolve_model(src)
        draft = (str(export_folder(src, "int4")), "draft: own int4 (stand-in)")
    out, base = [], None
    variants = (("plain", {}), ("prompt lookup", {"prompt_lookup": True}), (draft[1], {"draft_model": draft[0]}))
    for name, opts in variants:
        try:
            llm = load("openvino", model=src, precision="int4", device="CPU", **opts)
        except Exception as exc:  # e.g. the draft model cannot be downloaded offline
            out.append({"variant": name, "skipped": f"{type(exc).__name__}: {exc}"})
            continue
        llm.generate(PARAGRAPH, max_new_tokens=8).text()  # warm-up
        times = []
        for _ in range(runs):
            resp = llm.generate(PARAGRAPH, max_new_tokens=tokens)
            resp.text()
            times.append(resp.metrics.total_s)
        llm.close()
        total, ids = sorted(times)[len(times) // 2], resp.token_ids
        base = base or (total, ids)
        out.append({"variant": name, "total_s": round(total, 3), "tokens": len(ids),
                    "tokens_per_s": round(len(ids) / total, 1), "speedup": round(base[0] / total, 2),
                    "same_tokens_as_plain": ids == base[1]})
    return out


def run_chat(turns: int = 10, max_new_tokens: int = 64, configs: Sequence[tuple] = tuple(CHAT_CONFIGS), model=None,
             speculative: bool = True, spec_runs: int = 3, progress=print, repeats: int = 1) -> dict:
    """TTFT per turn (the median of ``repeats`` chats) for each backend with reuse on and off, and the speculative
    speedup, as a dict."""
    from ..backends import available_backends

    usable = available_backends()
    rows, skipped = [], []
    for config in configs:
        label = config[4]
        if reason := usable.get(config[0], f"unknown backend {config[0]!r}"):
            skipped.append({"label": label, "reason": reason})
            continue
        for reuse in (True, False):
            progress(f"chat bench: {label}, reuse {_on(reuse)} ...")
            try:
                rows.append(_chat_row(tuple(config), reuse, turns, max_new_tokens, model, repeats))
            except Exception as exc:  # report the row, keep measuring the others
                skipped.append({"label": f"{label} reuse={reuse}", "reason": f"{type(exc).__name__}: {exc}"})
    doc = {"kind": "chat", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "python": platform.python_version()}, "turns": turns,
           "repeats": repeats, "max_new_tokens": max_new_tokens, "rows": rows, "skipped": skipped}
    if speculative and not usable.get("openvino"):
        progress("chat bench: speculative decoding (openvino int4) ...")
        doc["speculative"] = _speculative_rows(model, max_new_tokens, spec_runs)
    return doc


def turn_ratio(row: dict, late: int = 10, early: int = 2) -> float | None:
    """TTFT of turn ``late`` over turn ``early`` (the target is at most 1.5)."""
    by = {t["turn"]: t["ttft_ms"] for t in row["turns"]}
    return round(by[late] / by[early], 2) if by.get(late) and by.get(early) else None


def chat_table(doc: dict) -> str:
    """Markdown: TTFT at turn 2 and the last per backend, reuse on and off; then the speculative rows."""
    last = doc["turns"]
    lines = [f"| backend | reuse | turn 2 TTFT (prompt) | turn {last} TTFT (prompt) | ratio |", "|---|---|---|---|---|"]
    for r in doc["rows"]:
        t = {x["turn"]: x for x in r["turns"]}
        cells = [f"{t[n]['ttft_ms']:.0f} ms ({t[n]['prompt_tokens']})" if n in t else "-" for n in (2, last)]
        lines.append(f"| {r['label']} | {_on(r['reuse'])} | {' | '.join(cells)} | {turn_ratio(r, last) or '-'} |")
    if doc.get("speculative"):
        lines += ["", "| openvino int4 | tokens/s | speedup | same tokens as plain |", "|---|---|---|---|"]
        for s in doc["speculative"]:
            lines.append(f"| {s['variant']} | skipped: {s['skipped'][:80]} | | |" if "skipped" in s else
                         f"| {s['variant']} | {s['tokens_per_s']} | {s['speedup']}x | {s['same_tokens_as_plain']} |")
    return "\n".join(lines)


def plot_chat(doc: dict, ax=None):
    """Turn on x, time to first token on y: one line per backend, solid with reuse, dashed without."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    colors: dict[str, str] = {}
    for r in doc["rows"]:
        ax.plot([t["turn"] for t in r["turns"]], [t["ttft_ms"] for t in r["turns"]], marker="o",
                color=colors.setdefault(r["label"], f"C{len(colors)}"), linestyle="-" if r["reuse"] else "--",
                label=f"{r['label']} (reuse {_on(r['reuse'])})")
    ax.set(xlabel="chat turn", ylabel="time to first token (ms)", title="Time to first token per chat turn",
           xticks=range(1, doc["turns"] + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax.figure


def write(doc: dict, output: Path | str) -> Path:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "chat.json").write_text(json.dumps(doc, indent=2))
    plot_chat(doc).savefig(out / "chat.png", dpi=120, bbox_inches="tight")
    return out / "chat.json"
