"""Measure configurations in this process: ``python -m phi3_helpers.bench.worker SPECS.json OUT.jsonl``.

Order: load through phi3_helpers (load time), warm-up, timed runs at the short and the long prompt (read as a
user reads them; the runtime's own timings beside them), peak memory, then the helper's own cost per token.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..models.cache import folder_size

SYSTEM = "You are a helpful assistant."
SHORT_QUESTION = "Tell me a long story about a robot who learns to paint."
LONG_ASK = "Continue this story with many more details."
STORY = (  # filler for the long prompt, repeated until it reaches its token target
    "The workshop smelled of oil and cedar. Every morning the robot rolled to the window, "
    "measured the light, and wrote the numbers in a notebook with a careful, blocky hand. "
    "The old painter who owned the workshop watched it for weeks before she said a word. "
    "One day she handed it a brush and a jar of blue paint and walked away without explaining. "
)


def rss_mb(field_name: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident memory, MiB; ru_maxrss where /proc is missing."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field_name))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


@dataclass
class Run:
    """One timed answer, read through the helper; ``runtime_*`` are the runtime's own timings of it."""

    ttft_ms: float
    ms_per_token: float | None  # None when fewer than 2 tokens came out
    tokens: int
    cpu_ms_per_token: float  # process CPU time of the whole call / tokens (threads included)
    token_ids: list[int] = field(default_factory=list, repr=False)
    runtime_ttft_ms: float | None = None
    runtime_ms_per_token: float | None = None


class Prompts:
    """The short prompt (about 40 tokens) and a long one of about ``long_target`` tokens (or the limit).

    Every run gets its own prompt (``Run 7.`` in the system message): OpenVINO GenAI caches prompt
    prefixes, and a repeated prompt would measure the cache, not the prefill.
    """

    def __init__(self, llm, long_target: int, max_new_tokens: int):
        self.llm, self.count = llm, 0
        limit = min(long_target, llm.max_prompt_tokens, llm.context_length - max_new_tokens) - 8  # room for the tag
        words, text, step = STORY.split(" "), [], 64
        while step:
            more = text + [words[(len(text) + i) % len(words)] for i in range(step)]
            if llm.count_tokens(self._messages(" ".join(more) + "\n\n" + LONG_ASK, 999)) > limit:
                step //= 4
            else:
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


def helper_run(llm, messages, max_new_tokens: int) -> Run:
    """One answer through phi3_helpers, read as a user reads it (text pieces); timings from its metrics."""
    resp = llm.generate(messages, max_new_tokens=max_new_tokens)  # generation starts when read
    cpu0 = time.process_time()
    for _ in resp:
        pass
    cpu = time.process_time() - cpu0
    m = resp.metrics
    if resp.error is not None or not m.tokens or m.ttft_s is None:
        raise RuntimeError(f"the helper produced no tokens ({m.finish_reason})")
    perf = getattr(llm, "perf_metrics", None)  # OpenVINO GenAI backends keep the last answer's perf_metrics
    own = (float(perf.get_ttft().mean), float(perf.get_tpot().mean)) if perf is not None else (None, None)
    return Run(m.ttft_s * 1000.0, m.ms_per_token, m.tokens, cpu * 1000.0 / m.tokens, list(resp.token_ids), *own)


def spread(values) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(runs: list[Run], prompt_tokens: float) -> dict:
    ms = spread(r.ms_per_token for r in runs)
    return {"prompt_tokens": prompt_tokens, "new_tokens": statistics.median(r.tokens for r in runs),
            "ttft_ms": spread(r.ttft_ms for r in runs), "ms_per_token": ms,
            "tokens_per_s": 1000.0 / ms["median"] if ms["median"] else None,
            "cpu_ms_per_token": spread(r.cpu_ms_per_token for r in runs),
            "runtime": {"ttft_ms": spread(r.runtime_ttft_ms for r in runs),
                        "ms_per_token": spread(r.runtime_ms_per_token for r in runs)},
            "runs": len(runs)}


def measure(spec: dict) -> dict:
    from .. import load

    n_new = int(spec["max_new_tokens"])
    gc.collect()
    try:  # a new peak for this configuration (Linux: 5 resets VmHWM); --quick measures several per process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    rss_before, t0 = rss_mb("VmRSS"), time.perf_counter()
    llm = load(spec["backend"], model=spec.get("model"), device=spec.get("device"), precision=spec["precision"])
    out = {k: spec[k] for k in ("backend", "precision", "device")}
    out.update(load_s=time.perf_counter() - t0, device=llm.device, fallback=bool(getattr(llm, "fallback", False)),
               runtime=llm.runtime, model=llm.model.name, folder=str(llm.prepared_folder),
               size_on_disk_mb=folder_size(llm.prepared_folder) / 2**20, prompts={})
    prompts = Prompts(llm, int(spec["long_tokens"]), n_new)
    for length, warm, count in (("short", "warmup", "runs"), ("long", "long_warmup", "long_runs")):
        for _ in range(int(spec[warm])):
            helper_run(llm, prompts.next(length)[0], n_new)
        runs, sizes = [], []
        for _ in range(int(spec[count])):
            msgs, ids = prompts.next(length)
            sizes.append(len(ids))
            runs.append(helper_run(llm, msgs, n_new))
        out["prompts"][length] = summarize(runs, statistics.median(sizes))
    out["peak_rss_mb"] = rss_mb()
    out["model_rss_mb"] = out["peak_rss_mb"] - rss_before
    out["helper_cost_us_per_token"] = helper_cost_us(llm, runs[-1].token_ids)
    llm.close()
    return out


def import_runtimes(backends: set[str]) -> float:
    """Import the backends' Python packages (so load_s measures the model); returns the seconds (import_s)."""
    import importlib

    from ..backends import BACKENDS, backend_class

    t0 = time.perf_counter()
    for name in sorted(backends):
        for pkg in (*backend_class(name, check=False).requires, BACKENDS[name].split(":")[0]):
            try:
                importlib.import_module(pkg)
            except Exception:  # the load that follows reports the problem properly
                pass
    return time.perf_counter() - t0


def helper_cost_us(llm, token_ids: list[int], repeat: int = 5) -> float:
    """CPU microseconds the helper itself spends per token (queue bridge + Response + detokenizer), on a
    replay of real token ids with no runtime behind it: best of ``repeat``."""
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
    from ..errors import Phi3Error

    argv = sys.argv[1:] if argv is None else argv
    specs, out_path = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    import_s = import_runtimes({s["backend"] for s in specs})
    for spec in specs:
        try:
            result = {**measure(spec), "status": "ok", "import_s": import_s}
        except BaseException as exc:  # reported in the JSON; the bench goes on with the next config
            traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0]
            reason = str(exc) if isinstance(exc, Phi3Error) else f"{type(exc).__name__}: {first}"
            result = {**{k: spec.get(k) for k in ("backend", "precision", "device")}, "status": "error",
                      "reason": reason[:400]}
            if isinstance(exc, KeyboardInterrupt):
                raise
        with out_path.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
