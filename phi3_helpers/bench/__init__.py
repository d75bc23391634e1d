"""Benchmark every backend available here: ``python -m phi3_helpers bench [--quick]``.

For each backend x precision x device: load time, time to first token (TTFT) and ms per output
token at a short (~32 tokens) and a long (~1,000 tokens, or the model's limit) prompt, tokens/s,
peak memory and size on disk; a warm-up run, then the median (and min/max) of several runs.
In the same run, each backend is compared with its runtime driven through its own API (the raw
loops in ``raw.py``): the ratio helper / raw of ms per token is the helper's overhead.

Each configuration runs in a fresh process (``worker.py``), so peak memory and runtime thread
pools never mix. Writes ``bench.json`` and ``bench.png`` into ``--output``.

Greedy decoding with the model's end-of-text token honoured, on both sides: prompts ask for long
answers, so runs normally produce exactly ``--tokens`` tokens; when one stops earlier, the tokens
actually produced are reported and ms per token is computed over them.
"""

from __future__ import annotations

import argparse
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
from typing import Sequence

from .report import markdown_table, plot, summary_lines

EXIT_BAD_INPUT = 2
DEFAULT_OUTPUT = "artifacts/bench"


@dataclass(frozen=True)
class Settings:
    runs: int  # timed runs at the short prompt
    long_runs: int  # timed runs at the long prompt
    warmup: int  # untimed runs before the short ones
    long_warmup: int  # untimed runs before the long ones
    max_new_tokens: int
    long_tokens: int  # target length of the long prompt
    overhead_pairs: int  # helper/raw pairs
    timeout_s: float  # per configuration


QUICK = Settings(runs=3, long_runs=1, warmup=1, long_warmup=0, max_new_tokens=24, long_tokens=512, overhead_pairs=2, timeout_s=300)
FULL = Settings(runs=5, long_runs=3, warmup=1, long_warmup=1, max_new_tokens=128, long_tokens=1000, overhead_pairs=8, timeout_s=1800)


@dataclass(frozen=True)
class Config:
    backend: str
    precision: str
    device: str | None  # None: the backend chooses (npu without an NPU: the CPU, flagged as a fallback)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.device or 'auto'}"


class BadInput(Exception):
    """Refused command-line input; the message names the fix."""


class ExportFailed(BadInput):
    """Building an export (before any timing) failed; the message names the fix."""


# -- what to measure ----------------------------------------------------------------------------
def backend_devices(name: str) -> list[str | None]:
    """Devices worth measuring for a backend on this machine."""
    if name == "transformers":
        return ["CPU"]
    if name in {"openvino", "openvino-optimum"}:
        from ..backends.openvino import available_devices

        found = available_devices()
        # The NPU wants its own export and settings: the npu backend measures it.
        return [d for d in ("CPU", "GPU") if any(f.split(".", 1)[0] == d for f in found)] or ["CPU"]
    if name == "npu":
        from ..backends.npu import detect_npu

        # No NPU: let the backend fall back to the CPU itself, so its result says "fallback".
        return ["NPU" if detect_npu().present else None]
    if name == "onnx":
        from ..backends.onnx import choose_provider, installed_packages

        return [choose_provider(None, installed_packages()).provider.upper()]
    return [None]


def device_precisions(name: str, device: str | None) -> tuple[str, ...] | None:
    """Precisions a backend can run on a device, when that is narrower than its list (else None)."""
    if name == "onnx" and device:
        from ..backends.onnx_build import PRECISIONS_BY_TARGET

        return tuple(PRECISIONS_BY_TARGET.get(device.lower(), ())) or None
    return None


def plan(
    backends: Sequence[str] | None,
    precisions: Sequence[str] | None,
    devices: Sequence[str] | None,
    quick: bool,
) -> tuple[list[Config], list[dict]]:
    """The configurations to measure, and the skipped ones with their reasons."""
    from ..backends import BACKENDS, available_backends, backend_class

    status = available_backends()
    if backends:
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise BadInput(f"unknown backend {unknown[0]!r}; use one or more of {', '.join(BACKENDS)} (comma-separated).")
        missing = [b for b in backends if status[b]]
        if missing:
            raise BadInput(f"backend {missing[0]!r} is not usable here: {status[missing[0]]}")
        names = list(dict.fromkeys(backends))
    else:
        names = [b for b in BACKENDS if not status[b]]
    skipped = [{"backend": b, "status": "skipped", "reason": status[b]} for b in BACKENDS if b not in names and status[b]]

    wanted_devices = {d.upper() for d in devices} if devices else None
    if wanted_devices:
        bad = sorted(d for d in wanted_devices if d not in {"CPU", "GPU", "NPU", "DML", "CUDA"})
        if bad:
            raise BadInput(f"unknown device {bad[0]!r}; use CPU, GPU, NPU (or DML/CUDA for onnx), comma-separated.")
    all_precisions = set()
    configs: list[Config] = []
    for name in names:
        cls = backend_class(name)
        all_precisions.update(cls.precisions)
        if precisions:
            chosen = [p for p in cls.precisions if p in precisions]
        elif quick and name != "openvino":
            chosen = [cls.precisions[0]]  # quick: every precision of openvino, the default of the others
        else:
            chosen = list(cls.precisions)
        if not chosen:
            skipped.append({"backend": name, "status": "skipped", "reason": f"none of the precisions asked for; it has {', '.join(cls.precisions)}"})
            continue
        for device in backend_devices(name):
            if wanted_devices and (device or "CPU") not in wanted_devices:  # None: the backend's own choice, the CPU here
                skipped.append({"backend": name, "device": device, "status": "skipped", "reason": "device not asked for"})
                continue
            usable = device_precisions(name, device)
            for p in chosen:
                if usable is None or p in usable:
                    configs.append(Config(name, p, device))
                else:
                    skipped.append({"backend": name, "precision": p, "device": device, "status": "skipped", "reason": f"{name} has no {p} on {device}"})
    if precisions:
        bad = [p for p in precisions if p not in all_precisions]
        if bad:
            raise BadInput(f"unknown precision {bad[0]!r}; use one or more of {', '.join(sorted(all_precisions))}.")
    if not configs:
        raise BadInput("nothing to measure with these choices; run `python -m phi3_helpers devices` to see what is available.")
    return configs, skipped


# -- exports are built before timing ------------------------------------------------------------
def export_ready(cfg: Config, model) -> bool | None:
    """True/False when the export this config loads is (not) cached; None when it needs none."""
    if cfg.backend in {"openvino", "openvino-optimum"}:
        from ..backends.openvino import export_folder, is_complete_export

        return is_complete_export(export_folder(model, cfg.precision))
    if cfg.backend == "npu":
        from ..backends.npu import DEFAULT_GROUP_SIZE, npu_export_recipe
        from ..backends.openvino import export_folder, is_complete_export

        recipe = npu_export_recipe(model, DEFAULT_GROUP_SIZE)
        return is_complete_export(export_folder(model, recipe.precision, recipe.variant))
    if cfg.backend == "onnx":
        from ..backends.onnx_build import onnx_folder

        target = (cfg.device or "CPU").lower()
        return (onnx_folder(model, cfg.precision, target) / "genai_config.json").is_file()
    return None


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
        spec_file, out_file, log_file = base.with_suffix(".specs.json"), base.with_suffix(".jsonl"), base.with_suffix(".log")
        spec_file.write_text(json.dumps([{**asdict(c), **asdict(settings), "model": model_arg} for c in todo]))
        out_file.unlink(missing_ok=True)
        progress(f"measuring {', '.join(c.label for c in todo)} ...")
        try:
            with log_file.open("w") as log:
                subprocess.run(
                    [sys.executable, "-m", "phi3_helpers.bench.worker", str(spec_file), str(out_file)],
                    stdout=log, stderr=subprocess.STDOUT, timeout=settings.timeout_s * len(todo), check=False,
                )
            problem = None
        except subprocess.TimeoutExpired:
            problem = f"timed out after {settings.timeout_s * len(todo):.0f} s"
        done = [json.loads(line) for line in out_file.read_text().splitlines()] if out_file.is_file() else []
        for res in done:
            progress(summary_lines([res])[0])
        results += done
        todo = todo[len(done):]
        if todo:  # the process died (or hung) on todo[0]: report it, go on with the rest
            tail = (log_file.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            results.append({**asdict(todo[0]), "status": "error", "reason": f"{problem or 'the worker died'}: {tail[:300]}"})
            progress(summary_lines(results[-1:])[0])
            todo = todo[1:]
    return results


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
    for dist in ("torch", "transformers", "openvino", "openvino-genai", "optimum-intel", "onnxruntime", "onnxruntime-genai", "onnxruntime-genai-directml"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(), "versions": versions}


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(
    backends=None, precisions=None, devices=None, quick: bool = False, runs: int | None = None, tokens: int | None = None,
    long_tokens: int | None = None, pairs: int | None = None, output: str | os.PathLike = DEFAULT_OUTPUT, model: str | None = None,
    progress=None,
) -> dict:
    """Run the benchmark and write bench.json + bench.png into ``output``; returns the results."""
    progress = progress or (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    base = QUICK if quick else FULL
    settings = Settings(
        runs=runs or base.runs, long_runs=runs or base.long_runs, warmup=base.warmup, long_warmup=base.long_warmup,
        max_new_tokens=tokens or base.max_new_tokens, long_tokens=long_tokens or base.long_tokens,
        overhead_pairs=pairs or base.overhead_pairs, timeout_s=base.timeout_s,
    )
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
        raise BadInput(f"cannot write to --output {str(out_dir)!r} ({exc.strerror or exc}); choose a folder you can write to, e.g. --output {DEFAULT_OUTPUT}") from None
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
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - t0,
        "quick": quick,
        "model": source.name,
        "settings": asdict(settings),
        "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": _load_avg()},
        "exports_built_first": exports,
        "results": results,
        "skipped": skipped,
        "notes": NOTES,
    }
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=2))
    plot(doc, out_dir / "bench.png")
    return doc


NOTES = {
    "ttft_ms": "time from the start of generation to the first token (prefill of the prompt + one decode step); tokenization excluded",
    "ms_per_token": "decode time per token after the first: (time of last token - time of first) / (tokens - 1)",
    "tokens_per_s": "1000 / median ms_per_token (decode speed)",
    "peak_rss_mb": "peak resident memory (VmHWM) of the process after the helper's runs, before the raw loop loads; MiB (--quick: configurations of one backend share a process; the peak is reset before each load)",
    "model_rss_mb": "peak_rss_mb minus the resident memory just before load(): what loading and running the model added",
    "size_on_disk_mb": "size of the folder the runtime loads (weights + configs + tokenizer files); MiB",
    "load_s": "phi3_helpers.load() with the runtime's Python packages already imported: tokenizer, model load and compile (OpenVINO's compiled-model cache is warm after the first run); exports are built beforehand and not included",
    "import_s": "importing the runtime's Python packages, once per process (configurations of one backend share it with --quick)",
    "overhead.ratio": "median helper ms/token / median raw-API ms/token, runs interleaved; 1.00 = no overhead",
    "overhead.cpu_ratio": "same with process CPU time per token (less sensitive to other jobs on the machine)",
}


# -- command line -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see: python -m phi3_helpers bench --help)\n")


def _csv(text: str) -> list[str]:
    return [t.strip().lower() for t in text.split(",") if t.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="phi3_helpers bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer configurations, runs and tokens: about 1 min 45 s with the offline model on a quiet 2-core machine, more when it is busy (exports are built first, outside the timing)")
    p.add_argument("--backends", type=_csv, default=None, help="comma-separated, e.g. openvino,transformers (default: every available one)")
    p.add_argument("--precisions", type=_csv, default=None, help="comma-separated, e.g. int4,fp16 (default: all; --quick: all for openvino, the default for others)")
    p.add_argument("--devices", type=_csv, default=None, help="comma-separated, e.g. CPU,GPU (default: every device found)")
    p.add_argument("--runs", type=_positive_int, default=None, help=f"timed runs per prompt length (default {FULL.runs} short, {FULL.long_runs} long; --quick {QUICK.runs} and {QUICK.long_runs})")
    p.add_argument("--tokens", type=_positive_int, default=None, help=f"new tokens per run (default {FULL.max_new_tokens}; --quick {QUICK.max_new_tokens})")
    p.add_argument("--long-tokens", type=_positive_int, default=None, help=f"target length of the long prompt (default {FULL.long_tokens}; --quick {QUICK.long_tokens}; capped by the model)")
    p.add_argument("--pairs", type=_positive_int, default=None, help=f"helper/raw run pairs for the overhead (default {FULL.overhead_pairs}; --quick {QUICK.overhead_pairs})")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"folder for bench.json and bench.png (default ./{DEFAULT_OUTPUT})")
    p.add_argument("--model", default=None, help="phi3-mini, smollm2-135m-phi3 or a folder (default: $PHI3_MODEL, else as load() chooses)")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..errors import Phi3Error

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        doc = run(
            backends=args.backends, precisions=args.precisions, devices=args.devices, quick=args.quick, runs=args.runs,
            tokens=args.tokens, long_tokens=args.long_tokens, pairs=args.pairs, output=args.output, model=args.model,
        )
    except (BadInput, Phi3Error) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the disk filled up while writing the results
        print(f"error: {exc.strerror or exc} ({getattr(exc, 'filename', None) or args.output}); free some space or choose another folder with --output.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: no results were written; run the command again to measure.", file=sys.stderr)
        return 130
    print(markdown_table(doc))
    out = Path(args.output)
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'} in {doc['duration_s']:.0f} s", file=sys.stderr)
    return 0 if all(r.get("status") == "ok" for r in doc["results"]) else 1


__all__ = ["main", "run", "plan", "Config", "Settings", "markdown_table", "plot"]
