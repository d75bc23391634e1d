"""Measure ONE backend x precision x device in this process (the bench starts one process per
configuration, so peak memory and runtime threads never mix between configurations).

    python -m phi3_helpers.bench.worker SPEC.json OUT.json

Order: load through phi3_helpers (load time), warm-up, timed runs at the short and the long prompt,
peak memory; then the same runtime loaded with its own API and the overhead pairs (helper run and
raw run interleaved, the order alternating, so a noisy neighbour hits both sides alike).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

from .raw import Run, raw_loop_for, runtime_folder

SYSTEM = "You are a helpful assistant."
SHORT_QUESTION = "Tell me a long story about a robot who learns to paint."
LONG_ASK = "Continue this story with many more details."
# Filler for the long prompt: plain prose, repeated until the prompt reaches its token target.
STORY = (
    "The workshop smelled of oil and cedar. Every morning the robot rolled to the window, "
    "measured the light, and wrote the numbers in a notebook with a careful, blocky hand. "
    "The old painter who owned the workshop watched it for weeks before she said a word. "
    "One day she handed it a brush and a jar of blue paint and walked away without explaining. "
)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (VmHWM; ru_maxrss elsewhere), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**20


def prompts(llm, long_target: int, max_new_tokens: int) -> dict[str, list[dict]]:
    """The short prompt (~32 tokens) and a long one of about ``long_target`` tokens (or the limit)."""
    short = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": SHORT_QUESTION}]
    limit = min(long_target, llm.max_prompt_tokens, llm.context_length - max_new_tokens - 8)
    words = STORY.split(" ")
    text: list[str] = []
    step = 64
    while True:
        more = text + [words[(len(text) + i) % len(words)] for i in range(step)]
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": " ".join(more) + "\n\n" + LONG_ASK}]
        if llm.count_tokens(msgs) > limit:
            if step == 1:
                break
            step = max(1, step // 4)
            continue
        text = more
    long = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": " ".join(text) + "\n\n" + LONG_ASK}]
    return {"short": short, "long": long}


def helper_run(llm, messages, max_new_tokens: int) -> Run:
    cpu0 = time.process_time()
    resp = llm.generate(messages, max_new_tokens=max_new_tokens)
    for _ in resp:
        pass
    cpu = time.process_time() - cpu0
    m = resp.metrics
    if resp.error is not None or not m.tokens or m.ttft_s is None:
        raise RuntimeError(f"the helper produced no tokens ({m.finish_reason})")
    return Run(m.ttft_s * 1000.0, m.ms_per_token, m.tokens, m.total_s, cpu * 1000.0 / m.tokens, list(resp.token_ids))


def spread(values: list[float]) -> dict:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(runs: list[Run], prompt_tokens: int) -> dict:
    ms = spread([r.ms_per_token for r in runs])
    return {
        "prompt_tokens": prompt_tokens,
        "new_tokens": statistics.median(r.tokens for r in runs),
        "ttft_ms": spread([r.ttft_ms for r in runs]),
        "ms_per_token": ms,
        "tokens_per_s": 1000.0 / ms["median"] if ms["median"] else None,
        "cpu_ms_per_token": spread([r.cpu_ms_per_token for r in runs]),
        "runs": len(runs),
    }


def measure(spec: dict) -> dict:
    from .. import load

    out: dict = {k: spec[k] for k in ("backend", "precision", "device")}
    n_new = int(spec["max_new_tokens"])
    t0 = time.perf_counter()
    llm = load(spec["backend"], model=spec.get("model"), device=spec.get("device"), precision=spec["precision"])
    out["load_s"] = time.perf_counter() - t0
    out.update(
        device=llm.device,
        fallback=bool(getattr(llm, "fallback", False)),
        runtime=llm.runtime,
        model=llm.model.name,
        folder=str(runtime_folder(llm)),
        size_on_disk_mb=folder_mb(runtime_folder(llm)),
    )
    msgs = prompts(llm, int(spec["long_tokens"]), n_new)
    ids = {k: llm.encode(v) for k, v in msgs.items()}

    out["prompts"] = {}
    for length in ("short", "long"):
        for _ in range(int(spec["warmup"])):
            helper_run(llm, msgs[length], n_new)
        runs = [helper_run(llm, msgs[length], n_new) for _ in range(int(spec["runs"]))]
        out["prompts"][length] = summarize(runs, len(ids[length]))
    out["peak_rss_mb"] = peak_rss_mb()  # before the raw loop loads a second copy

    out["overhead"] = overhead(llm, msgs["short"], ids["short"], n_new, int(spec["overhead_pairs"]))
    llm.close()
    return out


def overhead(llm, messages, input_ids, max_new_tokens: int, pairs: int) -> dict:
    """Helper vs raw API on the same prompt ids and token count, interleaved (ABBA...)."""
    raw = raw_loop_for(llm)
    if raw is None:
        return {"status": "skipped", "reason": f"no raw loop for {llm.name} ({llm.runtime})"}
    try:
        raw.run(input_ids, max_new_tokens)  # warm-up of the second copy
        helper_runs: list[Run] = []
        raw_runs: list[Run] = []
        for i in range(pairs):
            order = ("helper", "raw") if i % 2 == 0 else ("raw", "helper")
            for side in order:
                if side == "helper":
                    helper_runs.append(helper_run(llm, messages, max_new_tokens))
                else:
                    raw_runs.append(raw.run(input_ids, max_new_tokens))
    finally:
        raw.close()
    h = spread([r.ms_per_token for r in helper_runs])
    r = spread([r.ms_per_token for r in raw_runs])
    pair_ratios = [a.ms_per_token / b.ms_per_token for a, b in zip(helper_runs, raw_runs) if a.ms_per_token and b.ms_per_token]
    hc = statistics.median(x.cpu_ms_per_token for x in helper_runs)
    rc = statistics.median(x.cpu_ms_per_token for x in raw_runs)
    return {
        "status": "ok",
        "raw_api": type(raw).api,
        "pairs": pairs,
        "new_tokens": statistics.median(x.tokens for x in helper_runs),
        "helper_ms_per_token": h,
        "raw_ms_per_token": r,
        "ratio": h["median"] / r["median"],
        "pair_ratio": spread(pair_ratios),
        "helper_ttft_ms": statistics.median(x.ttft_ms for x in helper_runs),
        "raw_ttft_ms": statistics.median(x.ttft_ms for x in raw_runs),
        "cpu_ratio": hc / rc,
        "same_tokens": all(a.token_ids == b.token_ids for a, b in zip(helper_runs, raw_runs)),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        result = measure(spec)
        result["status"] = "ok"
    except BaseException as exc:  # reported in the JSON, the bench goes on with the next config
        from ..errors import Phi3Error

        traceback.print_exc()
        reason = str(exc) if isinstance(exc, Phi3Error) else f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        result = {k: spec.get(k) for k in ("backend", "precision", "device")}
        result.update(status="error", reason=reason[:400])
    out_path.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
