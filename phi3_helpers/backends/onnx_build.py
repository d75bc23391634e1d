"""Model folders for ONNX Runtime GenAI, built once per model, precision and target into
``<cache>/onnx/<model>-<precision>-<target>``, atomically, by the model builder in a child process: its memory goes
back to the system when it ends, its log is shown only on failure, and Ctrl-C ends it cleanly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import BuildInterrupted, ModelFolderError, Phi3Error, UnknownPrecision
from ..models import KNOWN_MODELS, ModelSource, cache, notice
from ..models.cache import atomic_folder, cache_root, folder_size

#: what the builder can make per target provider
PRECISIONS_BY_TARGET = {"cpu": ("int4", "fp32"), "dml": ("int4", "fp16"), "cuda": ("int4", "fp16", "fp32")}
TARGET_NAMES = {"cpu": "CPU", "dml": "DirectML", "cuda": "CUDA"}
BUILD_RECORD = "phi3_helpers_build.json"
#: last-token logits in a prefill; one MatMul for gate and up (docs/tuning.md), for the course's models only: the
#: builder refuses that fusion for pre-quantized weights
BUILDER_OPTIONS = ("prune_lm_head=true", "fuse_mlp_gate_up=true")
PREBUILT_REPO = "microsoft/Phi-3-mini-4k-instruct-onnx"  # fetched instead of a build (models/catalog.py)


def check_combination(precision: str, target: str) -> None:
    """Refuse a precision the builder cannot make for that provider, naming the ones it can."""
    ok = PRECISIONS_BY_TARGET.get(target, ())
    if precision not in ok:
        alt = ", ".join(TARGET_NAMES[t] for t, ps in PRECISIONS_BY_TARGET.items() if precision in ps)
        name = TARGET_NAMES.get(target, target)
        raise UnknownPrecision(f"ONNX Runtime GenAI builds {precision} models for {alt or 'no provider'}, not for "
                               f"{name}; on {name} use precision {' or '.join(ok)}, or pick another device.")


def onnx_folder(model: ModelSource, precision: str, target: str) -> Path:
    name = model.name
    if name not in KNOWN_MODELS:  # a user's folder: two folders with the same name stay apart
        name += "-" + hashlib.sha1(str(model.folder).encode()).hexdigest()[:8]
    return cache_root() / "onnx" / f"{name}-{precision}-{target}"


def builder_options(model: ModelSource) -> list[str]:
    """The BUILDER_OPTIONS for ``model`` that the installed builder knows (DirectML's 0.13.1 ignores the fusion)."""
    wanted = BUILDER_OPTIONS if model.name in KNOWN_MODELS else BUILDER_OPTIONS[:1]
    try:
        spec = importlib.util.find_spec("onnxruntime_genai")  # found, not imported
        known = Path(spec.submodule_search_locations[0], "models", "builder.py").read_text(errors="replace")
    except (ImportError, ValueError, AttributeError, TypeError, OSError):
        return list(wanted)  # cannot tell: an option a builder does not know is ignored
    return [o for o in wanted if o.split("=")[0] in known]


def builder_command(source, out, precision: str, target: str, opts: list[str], scratch="cache") -> list[str]:
    return [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
            "-p", precision, "-e", target, "-c", str(scratch)] + (["--extra_options", *opts] if opts else [])


def build_onnx_model(model: ModelSource, precision: str = "int4", target: str = "cpu", rebuild: bool = False,
                     progress=notice) -> Path:
    check_combination(precision, target)
    out = onnx_folder(model, precision, target)
    damaged = damaged_files(out) if out.is_dir() else []
    opts = builder_options(model)
    missing = [o for o in opts if o not in build_record(out).get("options", [])] if out.is_dir() else []
    if out.is_dir() and not (rebuild or damaged or missing):
        check_onnx_folder(out)
        return out
    if damaged or missing:
        why = f"{damaged[0]} is missing or truncated" if damaged else "built without " + " ".join(missing)
        progress(f"The cached ONNX folder {out} is out of date ({why}); building it again.")
    show = shlex.join(["python"] + builder_command(model.folder, out, precision, target, opts)[1:])
    progress(f"Building {model.name} for ONNX Runtime GenAI, {precision} for {TARGET_NAMES[target]} (once; cached "
             f"in {out}) ...")
    progress(f"Same as: {show}")
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp, tempfile.TemporaryDirectory(prefix=".builder-cache-", dir=out.parent) as scratch:
        log = Path(scratch) / "builder.log"
        _run_builder(builder_command(model.folder, tmp, precision, target, opts, Path(scratch) / "cache"), log)
        if not (tmp / "genai_config.json").is_file():
            raise Phi3Error(f"the ONNX model builder wrote no genai_config.json; see its log: {_tail(log)}")
        record = {"model": model.name, "source": str(model.folder), "precision": precision, "target": target,
                  "command": show, "options": opts, "sizes": cache.file_sizes(tmp)}
        (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2))
    progress(f"Built in {time.perf_counter() - t0:.0f} s: {folder_size(out) / 2**20:.0f} MiB in {out}")
    return out


def damaged_files(folder: Path) -> list[str]:
    """Files whose size differs from the build record (missing ones included); [] for an older record."""
    return cache.damaged_files(folder, build_record(folder).get("sizes"))


def _run_builder(cmd: list[str], log: Path) -> None:
    with log.open("w") as fh:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            rc = proc.wait()
        except BaseException:  # Ctrl-C or a kernel interrupt: end the child too
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise BuildInterrupted("the ONNX model build was interrupted; nothing was kept - run it again to "
                                   "rebuild.") from None
    if rc != 0:
        raise Phi3Error(f"the ONNX model builder failed (exit code {rc}): {_tail(log)}")


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# -- reading a GenAI folder --
def is_onnx_folder(path: Path | str) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "genai_config.json").is_file() or any(p.glob("*.onnx")))


def check_onnx_folder(folder: Path | str) -> dict:
    """Read genai_config.json; refuse a folder that lacks it or the model file it names."""
    folder = Path(folder)
    fix = ("delete the folder and build it again (python -m phi3_helpers prepare --backend onnx)"
           if cache_root() in folder.resolve().parents
           else "point at a complete ONNX Runtime GenAI folder, or at a Hugging Face folder to build one")
    if not (folder / "genai_config.json").is_file():
        raise ModelFolderError(f"{folder} has no genai_config.json, so ONNX Runtime GenAI cannot load it; {fix}.")
    try:
        cfg = json.loads((folder / "genai_config.json").read_text())
        fname = cfg["model"]["decoder"].get("filename", "model.onnx")
    except (ValueError, KeyError, TypeError):
        raise ModelFolderError(f"genai_config.json in {folder} is not a valid GenAI config; {fix}.") from None
    if not (folder / fname).is_file():
        raise ModelFolderError(f"{folder} has no {fname} (named in its genai_config.json); {fix}.")
    return cfg


def built_for(cfg: dict) -> str:
    """The execution provider a GenAI folder was built for ('cpu' when it names none)."""
    opts = cfg.get("model", {}).get("decoder", {}).get("session_options", {}).get("provider_options")
    return next((str(key).lower() for entry in opts or [] for key in entry), "cpu")


def build_record(folder: Path | str) -> dict:
    try:
        return json.loads((Path(folder) / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return {}
