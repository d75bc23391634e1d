"""What the chat widget costs: display latency and decode overhead (measured, not asserted).

(a) latency: from the moment the runtime's text reaches Python (the Response yields a piece) to
    the moment the widget's answer output holds that text (the ``outputs`` value is set, which is
    also when the update is sent to the page);
(b) overhead: decode speed (ms per token after the first) of the same session with and without
    the widget, runs interleaved, same prompt and the same number of greedy tokens; and, much less
    sensitive to other load on the machine, the CPU time the widget's painting itself takes as a
    share of the answer's time.

    python benchmarks/widget_latency.py --backend openvino --runs 12 --max-new-tokens 128 --kernel

``--kernel`` runs it inside a Jupyter kernel, where each update is serialized and published as in
a notebook; without it, widget messages go nowhere (cheaper).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from phi3_helpers.widgets.chat import ChatWidget, Turn

QUESTION = "Write a long story about a dragon."


class _TimedResponse:
    """A Response that notes when each text piece came out of the runtime."""

    def __init__(self, response, log: list[tuple[float, int]]):
        self._response = response
        self._log = log

    def __iter__(self):
        n = 0
        for piece in self._response:
            n += len(piece)
            self._log.append((time.perf_counter(), n))
            yield piece

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


class _TimedWidget(ChatWidget):
    """The chat widget, noting when each answer's output value was set and how much text it held."""

    def __init__(self, *args, **kw):
        self.paints: list[tuple[float, int]] = []
        self.produced: list[tuple[float, int]] = []
        self.paint_cpu_s = 0.0  # CPU time spent building and sending the answer's updates
        super().__init__(*args, **kw)
        ask = self.session.ask
        self.session.ask = lambda q, **o: _TimedResponse(ask(q, **o), self.produced)

    def _new_turn(self, question: str) -> Turn:
        turn = super()._new_turn(question)
        paint = turn.paint

        def timed_paint(running: bool) -> None:
            shown = len(turn.text)  # what this paint puts on screen (at least)
            t0 = time.thread_time()
            try:
                paint(running)
            finally:
                self.paint_cpu_s += time.thread_time() - t0
                self.paints.append((time.perf_counter(), shown))  # the value is set and sent

        turn.paint = timed_paint
        return turn


def _latencies(produced: list[tuple[float, int]], paints: list[tuple[float, int]]) -> list[float]:
    """For each produced piece: seconds until a paint showed at least that much text."""
    out = []
    for t_made, n in produced:
        shown = [t for t, m in paints if m >= n and t >= t_made]
        if shown:
            out.append(shown[0] - t_made)
    return out


def _decode_ms_per_token(metrics) -> float:
    return 1000.0 / metrics.tokens_per_s if metrics.tokens_per_s else float("nan")


def bench_widget(
    llm, runs: int = 5, max_new_tokens: int = 64, question: str = QUESTION, paint_interval: float = 0.03
) -> dict:
    """Measure (a) piece -> widget latency and (b) decode overhead with the widget; returns a dict."""
    latencies: list[float] = []
    with_widget: list[float] = []
    without: list[float] = []
    tokens: list[int] = []
    paints = pieces = 0
    paint_cpu = decode_s = 0.0
    cpu_with: list[float] = []  # process CPU time (all threads) per generated token
    cpu_without: list[float] = []

    def plain() -> float:
        # without the widget: the same session kind, read in a worker thread like the widget does
        session = llm.chat()
        result = {}

        def read() -> None:
            r = session.ask(question, max_new_tokens=max_new_tokens)
            for _piece in r:
                pass
            result["m"] = r.metrics

        c0 = time.process_time()
        t = threading.Thread(target=read)
        t.start()
        t.join()
        cpu_without.append((time.process_time() - c0) * 1000 / max(1, result["m"].tokens))
        return _decode_ms_per_token(result["m"])

    for i in range(runs):
        if i % 2:  # alternate which goes first, so drifts in machine load cancel out
            without.append(plain())
        w = _TimedWidget(llm, max_new_tokens=max_new_tokens, paint_interval=paint_interval)
        w.input.value = question
        c0 = time.process_time()
        w.send_button.click()
        w.wait()
        m = w.turns[-1].response.metrics
        cpu_with.append((time.process_time() - c0) * 1000 / max(1, m.tokens))
        with_widget.append(_decode_ms_per_token(m))
        if not i % 2:
            without.append(plain())
        tokens.append(m.tokens)
        latencies += _latencies(w.produced, w.paints)
        paints += len(w.paints)
        pieces += len(w.produced)
        paint_cpu += w.paint_cpu_s
        decode_s += m.total_s
    lat_ms = sorted(x * 1000 for x in latencies)
    med_with, med_without = statistics.median(with_widget), statistics.median(without)
    return {
        "backend": llm.describe(),
        "runs": runs,
        "tokens_per_answer": statistics.median(tokens),
        "paint_interval_ms": paint_interval * 1000,
        "pieces": pieces,
        "paints": paints,
        "latency_ms_median": statistics.median(lat_ms),
        "latency_ms_p95": lat_ms[min(len(lat_ms) - 1, int(0.95 * len(lat_ms)))],
        "latency_ms_max": lat_ms[-1],
        "decode_ms_per_token_without_widget": med_without,
        "decode_ms_per_token_with_widget": med_with,
        "decode_overhead_percent": 100.0 * (med_with - med_without) / med_without,
        # each widget run against the plain run next to it: less sensitive to slow drifts in load
        "decode_overhead_percent_paired_median": 100.0
        * (statistics.median(a / b for a, b in zip(with_widget, without)) - 1.0),
        # the widget's own work (painting: building and sending updates) as a share of answer time:
        # what it can take from decoding at most, and far less noisy than the A/B difference above
        "widget_paint_cpu_percent_of_answer_time": 100.0 * paint_cpu / decode_s if decode_s else float("nan"),
        # all the process's CPU (runtime threads, painter, kernel I/O) per token, with and without
        "cpu_ms_per_token_without_widget": statistics.median(cpu_without),
        "cpu_ms_per_token_with_widget": statistics.median(cpu_with),
        "decode_ms_per_token_runs_without": without,
        "decode_ms_per_token_runs_with": with_widget,
    }


def _bench_in_kernel(args) -> dict:
    """The same benchmark in an ipykernel, where every widget update is serialized and published."""
    import json

    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    out: list[str] = []

    def hook(msg) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("ERROR " + msg["content"]["ename"] + ": " + msg["content"]["evalue"])

    code = (
        "import json, sys\nfrom phi3_helpers import load\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\nfrom widget_latency import bench_widget\n"
        f"llm = load({args.backend!r}, model={args.model!r}, device={args.device!r}, precision={args.precision!r})\n"
        f"r = bench_widget(llm, runs={args.runs}, max_new_tokens={args.max_new_tokens}, "
        f"paint_interval={args.paint_interval})\n"
        "print('RESULT ' + json.dumps(r))\n"
    )
    try:
        kc.execute_interactive(code, timeout=3600, output_hook=hook)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    if "RESULT " not in text:
        raise RuntimeError(f"the benchmark failed in the kernel: {text[-2000:]}")
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    result["where"] = "ipykernel (widget messages serialized and published)"
    return result


def main(argv: list[str] | None = None) -> None:
    from phi3_helpers import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="transformers")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--paint-interval", type=float, default=0.03, help="seconds between repaints of an answer")
    ap.add_argument("--kernel", action="store_true", help="run inside a Jupyter kernel (real widget messages)")
    args = ap.parse_args(argv)
    if args.kernel:
        result = _bench_in_kernel(args)
    else:
        llm = load(args.backend, model=args.model, device=args.device, precision=args.precision)
        result = bench_widget(
            llm, runs=args.runs, max_new_tokens=args.max_new_tokens, paint_interval=args.paint_interval
        )
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, list):
            value = ", ".join(f"{v:.2f}" for v in value)
        print(f"{key:36} {value}")


if __name__ == "__main__":
    main()
