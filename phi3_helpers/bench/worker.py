"""Measure configurations (backend x precision x device) in this process.

    python -m phi3_helpers.bench.worker SPECS.json OUT.jsonl

The bench starts one process per configuration (--quick: one per backend, with the peak-memory
counter reset between its configurations), so runtimes' thread pools and memory never mix.

Order: load through phi3_helpers (load time), warm-up, timed runs at the short and the long prompt
(each read as a user reads it; the runtime's own timings of the same run beside it, where it reports
them), peak memory, then the helper's own cost per token on a replay of real token ids.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..models.cache import folder_size

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


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss where /proc is missing), in MiB."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def current_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024.0 if kb is not None else peak_rss_mb()


def reset_peak_rss() -> None:
    """Start a new peak (Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS).

    Used when one process measures several configurations of the same backend (--quick).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


@dataclass
class Run:
    """One timed answer, read through the helper; ``runtime_*`` are the runtime's own timings of it."""

    ttft_ms: float
    ms_per_token: float | None  # None when fewer than 2 tokens came out
    tokens: int
    total_s: float
    cpu_ms_per_token: float  # process CPU time of the whole call / tokens (threads included)
    token_ids: list[int] = field(default_factory=list, repr=False)
    median_interval_ms: float | None = None  # robust to a run being preempted now and then
    runtime_ttft_ms: float | None = None
    runtime_ms_per_token: float | None = None


def median_interval(stamps: Sequence[tuple[float, int]]) -> float | None:
    """Median ms per token between successive (time, tokens so far) stamps."""
    gaps = [(t1 - t0) * 1000.0 / (n1 - n0) for (t0, n0), (t1, n1) in zip(stamps, stamps[1:]) if n1 > n0]
    return statistics.median(gaps) if gaps else None


class Prompts:
    """The short prompt (~32 tokens) and a long one of about ``long_target`` tokens (or the limit).

    Every run gets its own prompt (``Run 7.`` at the start of the system message): OpenVINO
    GenAI caches prompt prefixes, and a repeated prompt would measure the cache, not the prefill.
    """

    def __init__(self, llm, long_target: int, max_new_tokens: int):
        self.llm = llm
        self.count = 0
        limit = min(long_target, llm.max_prompt_tokens, llm.context_length - max_new_tokens) - 8  # room for the tag
        words = STORY.split(" ")
        text: list[str] = []
        step = 64
        while True:
            more = text + [words[(len(text) + i) % len(words)] for i in range(step)]
            if llm.count_tokens(self._messages(" ".join(more) + "\n\n" + LONG_ASK, 999)) > limit:
                if step == 1:
                    break
                step = max(1, step // 4)
                continue
            text = more
        self.questions = {"short": SHORT_QUESTION, "long": " ".join(text) + "\n\n" + LONG_ASK}

    @staticmethod
    def _messages(question: str, tag: int) -> list[dict]:
        return [{"role": "system", "content": f"Run {tag}. {SYSTEM}"}, {"role": "user", "content": question}]

    def next(self, length: str) -> tuple[list[dict], list[int]]:
        """A fresh prompt of this length: (messages, token ids as the helper will feed them)."""
        self.count += 1
        msgs = self._messages(self.questions[length], self.count)
        return msgs, self.llm.encode(msgs)


def runtime_timings(llm) -> tuple[float | None, float | None]:
    """(TTFT ms, ms per output token) of the last answer as the runtime itself measured them, if it does."""
    perf = getattr(llm, "perf_metrics", None)  # OpenVINO GenAI backends keep the last answer's perf_metrics
    if perf is None:
        return None, None
    return float(perf.get_ttft().mean), float(perf.get_tpot().mean)


def helper_run(llm, messages, max_new_tokens: int) -> Run:
    """One answer through phi3_helpers, read as a user reads it (text pieces); timings from its metrics."""
    resp = llm.generate(messages, max_new_tokens=max_new_tokens)  # tokenizes; generation starts when read
    cpu0 = time.process_time()
    stamps = []
    for _ in resp:  # a piece per token, except bytes of a character held back until it is whole
        stamps.append((time.perf_counter(), len(resp.token_ids)))
    cpu = time.process_time() - cpu0
    m = resp.metrics
    if resp.error is not None or not m.tokens or m.ttft_s is None:
        raise RuntimeError(f"the helper produced no tokens ({m.finish_reason})")
    return Run(
        m.ttft_s * 1000.0, m.ms_per_token, m.tokens, m.total_s, cpu * 1000.0 / m.tokens, list(resp.token_ids),
        median_interval(stamps), *runtime_timings(llm),
    )


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
        "runtime": {
            "ttft_ms": spread([r.runtime_ttft_ms for r in runs]),
            "ms_per_token": spread([r.runtime_ms_per_token for r in runs]),
        },
        "runs": len(runs),
    }


def measure(spec: dict) -> dict:
    from .. import load

    out: dict = {k: spec[k] for k in ("backend", "precision", "device")}
    n_new = int(spec["max_new_tokens"])
    gc.collect()
    reset_peak_rss()
    rss_before = current_rss_mb()
    t0 = time.perf_counter()
    llm = load(spec["backend"], model=spec.get("model"), device=spec.get("device"), precision=spec["precision"])
    out["load_s"] = time.perf_counter() - t0
    out.update(
        device=llm.device, fallback=bool(getattr(llm, "fallback", False)), runtime=llm.runtime, model=llm.model.name,
        folder=str(llm.prepared_folder), size_on_disk_mb=folder_size(llm.prepared_folder) / 2**20,
    )
    prompts = Prompts(llm, int(spec["long_tokens"]), n_new)
    out["prompts"] = {}
    last: Run | None = None
    for length in ("short", "long"):
        for _ in range(int(spec["warmup"] if length == "short" else spec["long_warmup"])):
            helper_run(llm, prompts.next(length)[0], n_new)
        runs, sizes = [], []
        for _ in range(int(spec["runs"] if length == "short" else spec["long_runs"])):
            msgs, ids = prompts.next(length)
            sizes.append(len(ids))
            runs.append(last := helper_run(llm, msgs, n_new))
        out["prompts"][length] = summarize(runs, statistics.median(sizes))
    out["peak_rss_mb"] = peak_rss_mb()
    out["model_rss_mb"] = out["peak_rss_mb"] - rss_before
    out["helper_cost_us_per_token"] = helper_cost_us(llm, last.token_ids)
    llm.close()
    del llm
    gc.collect()
    return out


def import_runtimes(backends: set[str]) -> float:
    """Import the Python packages the backends need, so load_s measures the model, not imports.

    Returns the seconds it took (paid once per process; reported as import_s).
    """
    import importlib

    from ..backends import BACKENDS, backend_class

    t0 = time.perf_counter()
    for name in sorted(backends):
        for pkg in (*backend_class(name, check=False).requires, BACKENDS[name].split(":")[0]):
            try:
                importlib.import_module(pkg)
            except Exception:  # the load that follows reports the problem properly
                pass
    from transformers import AutoTokenizer  # noqa: F401  (every backend loads the tokenizer)

    return time.perf_counter() - t0


def helper_cost_us(llm, token_ids: list[int], repeat: int = 5) -> float:
    """CPU microseconds the helper itself spends per token (queue bridge + Response + detokenizer),
    measured on a replay of real token ids with no runtime behind it: best of ``repeat``."""
    import threading

    from ..response import Response
    from ..streaming import bridge

    ids = [i for i in token_ids if i not in llm.eos_token_ids] * 8
    best = float("inf")
    for _ in range(repeat):
        stop = threading.Event()
        replay = bridge(lambda emit: [emit([i]) for i in ids], stop)
        resp = Response(replay, llm.tokenizer, stop, 0, len(ids) + 1, None, None, llm.eos_token_ids)
        c0 = time.process_time()
        for _ in resp:
            pass
        best = min(best, (time.process_time() - c0) * 1e6 / len(ids))
    return best


def main(argv: list[str] | None = None) -> int:
    """Measure each spec in SPECS.json in turn; append one JSON line per result to OUT."""
    argv = sys.argv[1:] if argv is None else argv
    specs, out_path = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    import_s = import_runtimes({s["backend"] for s in specs})
    for spec in specs:
        try:
            result = measure(spec)
            result["status"] = "ok"
            result["import_s"] = import_s
        except BaseException as exc:  # reported in the JSON; the bench goes on with the next config
            from ..errors import Phi3Error

            traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = str(exc) if isinstance(exc, Phi3Error) else f"{type(exc).__name__}: {first}"
            result = {k: spec.get(k) for k in ("backend", "precision", "device")}
            result.update(status="error", reason=reason[:400])
            if isinstance(exc, KeyboardInterrupt):
                raise
        with out_path.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
