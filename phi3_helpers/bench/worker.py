"""``python -m phi3_helpers.bench.worker SPECS.json OUT.jsonl``: load each configuration through phi3_helpers, warm
up, time the short and the long prompt as a user reads them, then peak memory and the helper's own cost per token."""

import contextlib
import gc
import importlib
import json
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..models.cache import folder_size

SYSTEM = "You are a helpful assistant."
SHORT_QUESTION = "Tell me a long story about a robot who learns to paint."
LONG_ASK = "Continue this story with many more details."
STORY = (  # repeated until the long prompt reaches its token target
    "The workshop smelled of oil and cedar. Every morning the robot rolled to the window, "
    "measured the light, and wrote the numbers in a notebook with a careful, blocky hand. "
    "The old painter who owned the workshop watched it for weeks before she said a word. "
    "One day she handed it a brush and a jar of blue paint and walked away without explaining. "
)


def rss_mb(field_name: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident memory, MiB; where /proc is missing, the peak from
    ru_maxrss (macOS) or psutil's peak_wset (Windows, which has no ``resource`` module)."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field_name))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        if field_name == "VmHWM" and sys.platform != "win32":
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return rss / 2**20 if sys.platform == "darwin" else rss / 1024
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset" if field_name == "VmHWM" else "rss", info.rss) / 2**20


@dataclass
class Run:
    """One timed answer read through the helper; ``runtime_*``: the runtime's own timings of it."""

    ttft_ms: float
    ms_per_token: float | None  # None below 2 tokens
    tokens: int
    cpu_ms_per_token: float  # the process's CPU time (all threads)
    token_ids: list[int] = field(default_factory=list, repr=False)
    runtime_ttft_ms: float | None = None
    runtime_ms_per_token: float | None = None


class Prompts:
    """A short prompt (about 40 tokens) and a long one of ``long_target`` tokens (or the limit), new every time
    (``Run 7.`` in the system message): a repeated one would measure OpenVINO GenAI's prefix cache, not prefill."""

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
        """(messages, their token ids) of a fresh prompt."""
        self.count += 1
        msgs = self._messages(self.questions[length], self.count)
        return msgs, self.llm.encode(msgs)


def helper_run(llm, messages, max_new_tokens: int) -> Run:
    """One answer through phi3_helpers, read piece by piece as a user reads it."""
    resp = llm.generate(messages, max_new_tokens=max_new_tokens)  # generation starts when read
    cpu0 = time.process_time()
    for _ in resp:
        pass
    cpu = time.process_time() - cpu0
    m = resp.metrics
    if resp.error is not None or not m.tokens or m.ttft_s is None:
        raise RuntimeError(f"the helper produced no tokens ({m.finish_reason})")
    perf = getattr(llm, "perf_metrics", None)  # OpenVINO GenAI backends keep the last answer's
    own = (float(perf.get_ttft().mean), float(perf.get_tpot().mean)) if perf is not None else (None, None)
    return Run(m.ttft_s * 1000, m.ms_per_token, m.tokens, cpu * 1000 / m.tokens, list(resp.token_ids), *own)


def spread(values) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(runs: list[Run], prompt_tokens: float) -> dict:
    ms = spread(r.ms_per_token for r in runs)
    return {"prompt_tokens": prompt_tokens, "new_tokens": statistics.median(r.tokens for r in runs),
            "ttft_ms": spread(r.ttft_ms for r in runs), "ms_per_token": ms,
            "tokens_per_s": 1000 / ms["median"] if ms["median"] else None,
            "cpu_ms_per_token": spread(r.cpu_ms_per_token for r in runs),
            "runtime": {"ttft_ms": spread(r.runtime_ttft_ms for r in runs),
                        "ms_per_token": spread(r.runtime_ms_per_token for r in runs)},
            "runs": len(runs)}


def measure(spec: dict) -> dict:
    from .. import load

    n_new = spec["max_new_tokens"]
    gc.collect()
    with contextlib.suppress(OSError):  # a new peak for this configuration (Linux: 5 resets VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    rss_before, t0 = rss_mb("VmRSS"), time.perf_counter()
    llm = load(spec["backend"], model=spec["model"], device=spec["device"], precision=spec["precision"])
    out = {k: spec[k] for k in ("backend", "precision")}
    out.update(load_s=time.perf_counter() - t0, device=llm.device, fallback=bool(getattr(llm, "fallback", False)),
               runtime=llm.runtime, model=llm.model.name, folder=str(llm.prepared_folder),
               size_on_disk_mb=folder_size(llm.prepared_folder) / 2**20, prompts={})
    prompts = Prompts(llm, spec["long_tokens"], n_new)
    for length, warmup, count in (("short", "warmup", "runs"), ("long", "long_warmup", "long_runs")):
        for _ in range(spec[warmup]):
            helper_run(llm, prompts.next(length)[0], n_new)
        runs, sizes = [], []
        for _ in range(spec[count]):
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
    """Import the backends' Python packages (so load_s measures the model); returns the seconds."""
    from ..backends import backend_class

    t0 = time.perf_counter()
    for name in sorted(backends):
        for module in backend_class(name, check=False).requires:  # backend_class imports the backend's module
            with contextlib.suppress(Exception):  # the load that follows reports the problem properly
                importlib.import_module(module)
    return time.perf_counter() - t0


def helper_cost_us(llm, token_ids: list[int], repeat: int = 5) -> float:
    """CPU microseconds per token the helper spends replaying real token ids, no runtime behind: best of ``repeat``."""
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
    from ..errors import Phi3Error

    spec_path, out_path = map(Path, sys.argv[1:] if argv is None else argv)
    specs = json.loads(spec_path.read_text())
    import_s = import_runtimes({s["backend"] for s in specs})
    for spec in specs:
        try:
            result = {**measure(spec), "status": "ok", "import_s": import_s}
        except BaseException as exc:  # reported in the JSON; the bench goes on with the next config
            traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0]
            reason = str(exc) if isinstance(exc, Phi3Error) else f"{type(exc).__name__}: {first}"
            result = {**{k: spec[k] for k in ("backend", "precision", "device")}, "status": "error",
                      "reason": reason[:400]}
            if isinstance(exc, KeyboardInterrupt):
                raise
        with out_path.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
