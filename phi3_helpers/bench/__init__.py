"""Benchmark every backend available here through the backends themselves: ``python -m phi3_helpers bench``.

Each configuration runs in a fresh process (``worker.py``; --quick: one per backend); ``--llama-cpp`` adds
llama.cpp on the same GGUF (``llama_cpp.py``). Writes ``bench.json`` and ``bench.png`` into ``output``.
"""

import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import (
    BackendUnavailable, ExportFailed, InvalidOption, Phi3Error, UnknownBackend, UnknownDevice, UnknownPrecision,
)
from .llama_cpp import built_or_reason, llama_row
from .report import markdown_table, plot, summary_line

DEFAULT_OUTPUT = "artifacts/bench"
VERSIONS = ("torch", "transformers", "openvino", "openvino-genai", "optimum-intel", "onnxruntime",
            "onnxruntime-genai", "onnxruntime-genai-directml")
NOTES = {  # what the fields of a result mean
    "ttft_ms": "start of generation to the first token, tokenization excluded; llama.cpp: its prompt test (pp)",
    "ms_per_token": "decode time per token after the first",
    "tokens_per_s": "1000 / median ms_per_token; llama.cpp: its generation test (tg)",
    "peak_rss_mb": "peak resident memory (VmHWM) after the runs, MiB",
    "model_rss_mb": "peak_rss_mb minus the resident memory just before load()",
    "size_on_disk_mb": "the folder the runtime loads (weights, configs, tokenizer), MiB",
    "load_s": "phi3_helpers.load() with the runtime imported and the exports built",
    "import_s": "importing the runtime's Python packages, once per process",
    "runtime": "the runtime's own TTFT and time per output token (OpenVINO GenAI perf_metrics)",
    "helper_cost_us_per_token": "CPU microseconds the helper adds per token, on a replay with no runtime behind",
}


@dataclass(frozen=True)
class Settings:
    runs: int  # timed, after ``warmup`` untimed ones (short prompt)
    long_runs: int
    warmup: int
    long_warmup: int
    max_new_tokens: int
    long_tokens: int  # the long prompt's length
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
    """The configurations to measure, and the skipped ones with their reasons, asked of the backend classes."""
    from .. import DEFAULT_BACKEND
    from ..backends import BACKENDS, available_backends, backend_class

    status = available_backends()
    for b in backends or []:
        if b not in BACKENDS:
            raise UnknownBackend(f"unknown backend {b!r}; use one or more of {', '.join(BACKENDS)} (comma-separated).")
        if status[b]:
            raise BackendUnavailable(f"backend {b!r} is not usable here: {status[b]}")
    wanted = {d.upper() for d in devices or []}
    for d in sorted(wanted - {"CPU", "GPU", "NPU", "DML", "CUDA"}):
        raise UnknownDevice(f"unknown device {d!r}; use CPU, GPU, NPU (or DML/CUDA for onnx), comma-separated.")
    known = {p for b in BACKENDS for p in backend_class(b, check=False).precisions}
    for p in set(precisions or []) - known:
        raise UnknownPrecision(f"unknown precision {p!r}; use one or more of {', '.join(sorted(known))}.")
    names = list(dict.fromkeys(backends)) if backends else [b for b in BACKENDS if not status[b]]
    skipped, configs = [], []

    def skip(reason: str, **where) -> None:
        skipped.append({**where, "status": "skipped", "reason": reason})

    for b in (b for b, why in status.items() if why and b not in names):
        skip(status[b], backend=b)

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


def physical_cores() -> int:
    """The threads ONNX Runtime and OpenVINO use by default: one per physical core (llama.cpp gets the same)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def export_ready(cfg: Config, model) -> bool:
    """Whether the folder this config loads is there: the model's own, or an export (folders appear complete)."""
    from ..backends import backend_class

    plan = backend_class(cfg.backend).plan(model, cfg.device, cfg.precision)
    return plan.folder == plan.model.folder or (plan.folder is not None and plan.folder.is_dir())


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1].strip()[:300]


def prepare(cfg: Config, model_arg: str | None, timeout: float) -> float:
    """Build the export in its own process (outside every timing); returns the seconds it took."""
    cmd = [sys.executable, "-m", "phi3_helpers", "prepare", "--backend", cfg.backend, "--precision", cfg.precision]
    cmd += ["--device", cfg.device] if cfg.device else []
    cmd += ["--model", model_arg] if model_arg else []
    fix = f"run `python {' '.join(cmd[1:])}` to see the whole error, or leave {cfg.backend} out with --backends"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportFailed(f"export failed for {cfg.label}: timed out after {timeout:.0f} s; {fix}.") from None
    if proc.returncode != 0:
        raise ExportFailed(f"export failed for {cfg.label}: {_last_line(proc.stderr)}; {fix}.")
    return time.perf_counter() - t0


def run_group(cfgs: list[Config], model_arg: str | None, settings: Settings, workdir: Path, progress) -> list[dict]:
    """Measure configurations in one fresh Python process; a crash costs only the config it hit."""
    results, todo = [], list(cfgs)
    while todo:
        spec, out, log = (workdir / f"{todo[0].label.replace(' ', '_')}{x}" for x in (".json", ".jsonl", ".log"))
        spec.write_text(json.dumps([{**asdict(c), **asdict(settings), "model": model_arg} for c in todo]))
        out.unlink(missing_ok=True)
        progress(f"measuring {', '.join(c.label for c in todo)} ...")
        timeout, problem = settings.timeout_s * len(todo), "the worker died"
        try:
            with log.open("w") as fh:
                cmd = [sys.executable, "-m", "phi3_helpers.bench.worker", str(spec), str(out)]
                subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            problem = f"timed out after {timeout:.0f} s"
        done = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
        if len(done) < len(todo):  # the process died (or hung) on the next config: report it, go on with the rest
            tail = _last_line(log.read_text(errors="replace"))
            done.append({**asdict(todo[len(done)]), "status": "error", "reason": f"{problem}: {tail}"})
        for res in done:
            progress(summary_line(res))
        results += done
        todo = todo[len(done):]
    return results


def machine() -> dict:
    from ..backends import installed_version

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "versions": {name: version for name in VERSIONS if (version := installed_version(name))}}


def load_avg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run(backends=None, precisions=None, devices=None, quick: bool = False, runs: int | None = None,
        tokens: int | None = None, long_tokens: int | None = None, output: str | os.PathLike = DEFAULT_OUTPUT,
        model: str | None = None, progress=None, llama_cpp: bool = False) -> dict:
    """Run the benchmark (``llama_cpp``: and llama-bench on the same GGUF, prompt length, tokens and threads);
    writes bench.json and bench.png into ``output`` and returns the results."""
    from ..models import model_name

    progress = progress or (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    base = QUICK if quick else FULL
    settings = Settings(runs or base.runs, runs or base.long_runs, base.warmup, base.long_warmup,
                        tokens or base.max_new_tokens, long_tokens or base.long_tokens, base.timeout_s)
    configs, skipped = plan(backends, precisions, devices, quick)
    model_arg = model_name(model)  # a name: each backend plans its own folder (Phi-3: prequantized downloads)
    out_dir = Path(output)
    try:  # before anything slow: a folder we cannot write is bad input
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as exc:
        raise InvalidOption(f"cannot write to --output {str(out_dir)!r} ({exc.strerror or exc}); choose a folder you "
                            f"can write to, e.g. --output {DEFAULT_OUTPUT}") from None
    started = datetime.datetime.now(datetime.timezone.utc)
    exports = []
    for cfg in list(configs):  # downloads and exports (and llama.cpp's build) first, outside every timing
        try:
            ready = export_ready(cfg, model_arg)
        except Phi3Error as exc:  # e.g. phi3-mini offline with this backend's folder not downloaded
            configs.remove(cfg)
            skipped.append({**asdict(cfg), "status": "skipped", "reason": str(exc)})
            progress(f"{cfg.label}: skipped ({exc})")
            continue
        if not ready:
            progress(f"preparing {cfg.label} first (a download or an export, once; not part of the timing) ...")
            exports.append({"config": cfg.label, "seconds": prepare(cfg, model_arg, 3600)})
    if not configs:
        raise InvalidOption(f"nothing to measure with {model_arg}: {skipped[-1]['reason']}")
    built = built_or_reason(progress) if llama_cpp else None
    load_before, t0 = load_avg(), time.perf_counter()
    # full: a process per configuration; quick: one per backend (imports paid once)
    groups = [list(g) for _, g in itertools.groupby(configs, lambda c: c.backend)] if quick else [[c] for c in configs]
    results = []
    with tempfile.TemporaryDirectory(prefix="phi3-bench-") as tmp:
        for group in groups:
            results += run_group(group, model_arg, settings, Path(tmp), progress)
    peers = []
    if llama_cpp:  # a row beside the helpers' (doc["peers"]), or a skipped one saying why
        short = [r["prompts"]["short"]["prompt_tokens"] for r in results if r["status"] == "ok"]
        row = llama_row(built, round(sum(short) / len(short)) if short else 49, settings.max_new_tokens,
                        physical_cores(), settings.runs)
        (peers if row["status"] == "ok" else skipped).append(row)
        progress(summary_line(row))
    doc = {"started": started.isoformat(timespec="seconds"), "duration_s": time.perf_counter() - t0, "quick": quick,
           "model": Path(model_arg).name, "settings": asdict(settings),
           "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": load_avg()},
           "exports_built_first": exports, "results": results, "peers": peers, "skipped": skipped, "notes": NOTES}
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=2))
    plot(doc, out_dir / "bench.png")
    return doc


__all__ = ["run", "plan", "Config", "Settings", "markdown_table", "plot", "DEFAULT_OUTPUT", "QUICK", "FULL"]
