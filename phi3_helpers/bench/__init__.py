"""Benchmark every backend available here: ``python -m phi3_helpers bench [--quick]``.

For each backend x precision x device: load time, time to first token (TTFT) and ms per output
token at a short (~32 tokens) and a long (~1,000 tokens, or the model's limit) prompt, tokens/s,
peak memory and size on disk; a warm-up run, then the median (and min/max) of several runs.
Everything is measured through the backends themselves (``load`` and ``generate``), next to the
runtime's own timings where it reports them (OpenVINO GenAI's perf_metrics) and the helper's own
cost per token (a replay of real token ids through the bridge and Response, no runtime behind it).

Each configuration runs in a fresh process (``worker.py``), so peak memory and runtime thread
pools never mix. Writes ``bench.json`` and ``bench.png`` into ``output``. Which devices and
precisions each backend has here comes from the backend classes (``devices_here``, ``precisions_on``).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import BackendUnavailable, ExportFailed, InvalidOption, UnknownBackend, UnknownDevice, UnknownPrecision
from .report import markdown_table, plot, summary_lines

DEFAULT_OUTPUT = "artifacts/bench"


@dataclass(frozen=True)
class Settings:
    runs: int  # timed runs at the short prompt
    long_runs: int  # timed runs at the long prompt
    warmup: int  # untimed runs before the short ones
    long_warmup: int  # untimed runs before the long ones
    max_new_tokens: int
    long_tokens: int  # target length of the long prompt
    timeout_s: float  # per configuration


QUICK = Settings(runs=3, long_runs=1, warmup=1, long_warmup=0, max_new_tokens=24, long_tokens=512, timeout_s=900)
FULL = Settings(runs=5, long_runs=3, warmup=1, long_warmup=1, max_new_tokens=128, long_tokens=1000, timeout_s=1800)


@dataclass(frozen=True)
class Config:
    backend: str
    precision: str
    device: str | None  # None: the backend chooses (npu without an NPU: the CPU, flagged as a fallback)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.device or 'auto'}"


def plan(backends, precisions, devices, quick: bool) -> tuple[list[Config], list[dict]]:
    """The configurations to measure, and the skipped ones with their reasons (read from the backend classes)."""
    from .. import DEFAULT_BACKEND
    from ..backends import BACKENDS, available_backends, backend_class

    status = available_backends()
    for b in backends or []:
        if b not in BACKENDS:
            raise UnknownBackend(f"unknown backend {b!r}; use one or more of {', '.join(BACKENDS)} (comma-separated).")
        if status[b]:
            raise BackendUnavailable(f"backend {b!r} is not usable here: {status[b]}")
    names = list(dict.fromkeys(backends)) if backends else [b for b in BACKENDS if not status[b]]
    skipped = [{"backend": b, "status": "skipped", "reason": why} for b, why in status.items()
               if b not in names and why]

    def skip(reason: str, **where) -> None:
        skipped.append({**where, "status": "skipped", "reason": reason})

    wanted = {d.upper() for d in devices or []}
    for d in sorted(wanted - {"CPU", "GPU", "NPU", "DML", "CUDA"}):
        raise UnknownDevice(f"unknown device {d!r}; use CPU, GPU, NPU (or DML/CUDA for onnx), comma-separated.")
    known = {p for b in BACKENDS for p in backend_class(b, check=False).precisions}
    for p in precisions or []:
        if p not in known:
            raise UnknownPrecision(f"unknown precision {p!r}; use one or more of {', '.join(sorted(known))}.")
    configs: list[Config] = []
    for name in names:
        cls = backend_class(name)
        if precisions:
            chosen = [p for p in cls.precisions if p in precisions]
        else:  # quick: every precision of the default backend, the default of the others
            chosen = list(cls.precisions) if not quick or name == DEFAULT_BACKEND else [cls.precisions[0]]
        if not chosen:
            skip(f"none of the precisions asked for; it has {', '.join(cls.precisions)}", backend=name)
        for device in cls.devices_here() if chosen else []:
            if wanted and (device or "CPU") not in wanted:  # None: the backend's own choice, the CPU here
                skip("device not asked for", backend=name, device=device)
                continue
            for p in chosen:
                if p in cls.precisions_on(device):
                    configs.append(Config(name, p, device))
                else:
                    skip(f"{name} has no {p} on {device}", backend=name, precision=p, device=device)
    if not configs:
        raise InvalidOption("nothing to measure with these choices; run `python -m phi3_helpers devices` to see what "
                            "is available.")
    return configs, skipped


# -- exports are built before timing ------------------------------------------------------------
def export_ready(cfg: Config, model) -> bool | None:
    """True/False when the folder this config loads is (not) prepared yet; None when it needs none.

    A prepared folder exists only when complete: exports and builds are renamed into place at the end.
    """
    from ..backends import backend_class

    plan = backend_class(cfg.backend).plan(model, cfg.device, cfg.precision)
    if plan.folder == plan.model.folder:
        return None
    return plan.folder is not None and plan.folder.is_dir()


def prepare(cfg: Config, model_arg: str | None, timeout: float) -> float:
    """Build the export in its own process (not part of any timing); returns the seconds it took."""
    cmd = [sys.executable, "-m", "phi3_helpers", "prepare", "--backend", cfg.backend, "--precision", cfg.precision]
    if cfg.device:
        cmd += ["--device", cfg.device]
    if model_arg:
        cmd += ["--model", model_arg]
    again = " ".join(cmd[1:])
    fix = f"run `python {again}` to see the whole error, or leave {cfg.backend} out with --backends"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportFailed(f"export failed for {cfg.label}: timed out after {timeout:.0f} s; {fix}.") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1].strip()
        raise ExportFailed(f"export failed for {cfg.label}: {tail[:300]}; {fix}.")
    return time.perf_counter() - t0


# -- running ------------------------------------------------------------------------------------
def run_group(cfgs: list[Config], model_arg: str | None, settings: Settings, workdir: Path, progress) -> list[dict]:
    """Measure configurations in one fresh Python process; a crash costs only the config it hit."""
    results: list[dict] = []
    todo = list(cfgs)
    while todo:
        base = workdir / todo[0].label.replace(" ", "_")
        spec_file, out_file, log_file = (base.with_suffix(x) for x in (".specs.json", ".jsonl", ".log"))
        spec_file.write_text(json.dumps([{**asdict(c), **asdict(settings), "model": model_arg} for c in todo]))
        out_file.unlink(missing_ok=True)
        progress(f"measuring {', '.join(c.label for c in todo)} ...")
        try:
            with log_file.open("w") as log:
                cmd = [sys.executable, "-m", "phi3_helpers.bench.worker", str(spec_file), str(out_file)]
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=settings.timeout_s * len(todo))
            problem = None
        except subprocess.TimeoutExpired:
            problem = f"timed out after {settings.timeout_s * len(todo):.0f} s"
        done = [json.loads(line) for line in out_file.read_text().splitlines()] if out_file.is_file() else []
        for res in done:
            progress(summary_lines([res])[0])
        results += done
        todo = todo[len(done) :]
        if todo:  # the process died (or hung) on todo[0]: report it, go on with the rest
            tail = (log_file.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            results.append(
                {**asdict(todo[0]), "status": "error", "reason": f"{problem or 'the worker died'}: {tail[:300]}"}
            )
            progress(summary_lines(results[-1:])[0])
            todo = todo[1:]
    return results


RUNTIME_DISTS = ("torch", "transformers", "openvino", "openvino-genai", "optimum-intel", "onnxruntime",
                 "onnxruntime-genai", "onnxruntime-genai-directml")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in RUNTIME_DISTS:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "versions": versions}


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(backends=None, precisions=None, devices=None, quick: bool = False, runs: int | None = None,
        tokens: int | None = None, long_tokens: int | None = None, output: str | os.PathLike = DEFAULT_OUTPUT,
        model: str | None = None, progress=None) -> dict:
    """Run the benchmark and write bench.json + bench.png into ``output``; returns the results."""
    progress = progress or (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    base = QUICK if quick else FULL
    settings = Settings(runs or base.runs, runs or base.long_runs, base.warmup, base.long_warmup,
                        tokens or base.max_new_tokens, long_tokens or base.long_tokens, base.timeout_s)
    configs, skipped = plan(backends, precisions, devices, quick)
    from ..models import resolve_model

    source = resolve_model(model)
    model_arg = model if model is not None else source.name
    out_dir = Path(output)
    try:  # before anything slow: a folder we cannot write is bad input
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".phi3-bench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InvalidOption(
            f"cannot write to --output {str(out_dir)!r} ({exc.strerror or exc}); choose a folder you can write to, "
            f"e.g. --output {DEFAULT_OUTPUT}"
        ) from None
    started = _dt.datetime.now(_dt.timezone.utc)
    exports = []
    for cfg in configs:  # exports first, outside every timing
        if export_ready(cfg, source) is False:
            progress(f"building the export for {cfg.label} first (once; not part of the timing) ...")
            exports.append({"config": cfg.label, "seconds": prepare(cfg, model_arg, 3600)})
    results = []
    load_before = _load_avg()
    t0 = time.perf_counter()
    # Full: a fresh process per configuration. Quick: one per backend (imports paid once).
    groups: list[list[Config]] = []
    for cfg in configs:
        if quick and groups and groups[-1][0].backend == cfg.backend:
            groups[-1].append(cfg)
        else:
            groups.append([cfg])
    with tempfile.TemporaryDirectory(prefix="phi3-bench-") as tmp:
        for group in groups:
            results += run_group(group, model_arg, settings, Path(tmp), progress)
    doc = {"started": started.isoformat(timespec="seconds"), "duration_s": time.perf_counter() - t0, "quick": quick,
           "model": source.name, "settings": asdict(settings),
           "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": _load_avg()},
           "exports_built_first": exports, "results": results, "skipped": skipped, "notes": NOTES}
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=2))
    plot(doc, out_dir / "bench.png")
    return doc


NOTES = {
    "ttft_ms": "start of generation to the first token (prefill + one decode step); tokenization excluded",
    "ms_per_token": "decode time per token after the first: (time of last token - time of first) / (tokens - 1)",
    "tokens_per_s": "1000 / median ms_per_token (decode speed)",
    "peak_rss_mb": "peak resident memory (VmHWM) of the process after the runs, MiB (--quick: one process per "
                   "backend, the peak reset before each load)",
    "model_rss_mb": "peak_rss_mb minus the resident memory just before load(): what the model added",
    "size_on_disk_mb": "size of the folder the runtime loads (weights + configs + tokenizer files); MiB",
    "load_s": "phi3_helpers.load() with the runtime's packages imported: tokenizer, model load and compile "
              "(OpenVINO's compiled-model cache warm after the first run); exports are built beforehand",
    "import_s": "importing the runtime's Python packages, once per process",
    "runtime": "the runtime's own TTFT and time per output token for the same runs (OpenVINO GenAI perf_metrics)",
    "helper_cost_us_per_token": "CPU microseconds the helper adds per token (queue bridge + Response + detokenizer), "
                                "on a replay of the run's real token ids with no runtime behind it",
}


__all__ = ["run", "plan", "Config", "Settings", "markdown_table", "plot", "DEFAULT_OUTPUT", "QUICK", "FULL"]
