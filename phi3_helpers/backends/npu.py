"""Backend ``npu``: Phi-3 on an Intel NPU, two ways behind one interface.

maintained (default)
    OpenVINO GenAI's LLMPipeline on device "NPU", with the export the NPU needs (4-bit
    *symmetric* weights for every layer: ``--weight-format int4 --sym --ratio 1.0`` and group size
    128, or -1 for channel-wise) and the NPU pipeline's settings: a maximum prompt length and a
    minimum response length (the NPU runs static shapes) and a compiled-model cache, so the second
    load skips the NPU compiler. When the machine has no NPU, the same pipeline runs on the CPU
    and a one-line notice says so.
classic
    intel-npu-acceleration-library's NPUModelForCausalLM (archived, Windows only), see
    ``npu_classic.py``. Choose it with ``load("npu", path="classic")`` or PHI3_NPU_PATH=classic.

``device_report()`` says whether an NPU is present, its name and driver version as OpenVINO
reports them, and what the classic library sees.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import DeviceUnavailable, InvalidOption, UnknownDevice
from ..models import ModelSource, notice
from ..models.cache import cache_root
from ..options import GenerationOptions
from . import npu_classic
from .openvino import (
    ExportRecipe,
    OpenVINOGenAIBackend,
    check_export_folder,
    export_command,
    export_folder,
    export_openvino,
    is_complete_export,
    odd_widths,
)

MAINTAINED = "maintained"
CLASSIC = "classic"
PATHS = (MAINTAINED, CLASSIC)
PATH_ENV = "PHI3_NPU_PATH"

#: OpenVINO GenAI's NPU defaults (MAX_PROMPT_LEN, MIN_RESPONSE_LEN); their sum is the context.
DEFAULT_MAX_PROMPT_LEN = 1024
DEFAULT_MIN_RESPONSE_LEN = 128
#: Group size for the NPU export: 128 (group-wise) for models up to about 4-5B parameters,
#: -1 (channel-wise) for larger ones, as Intel's "OpenVINO GenAI on NPU" guide recommends.
DEFAULT_GROUP_SIZE = 128
DRIVER_HELP = (
    "install or update the Intel NPU driver (Windows: Device Manager > Neural processors > Intel(R) AI Boost; "
    "Linux: github.com/intel/linux-npu-driver)"
)


# -- detection ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NPUInfo:
    """What OpenVINO reports about the NPU of this machine."""

    present: bool
    device: str = ""
    name: str = ""
    driver_version: str = ""
    architecture: str = ""
    memory_bytes: int | None = None
    found: tuple[str, ...] = ()
    problem: str = ""  # why OpenVINO could not be asked at all

    def found_text(self) -> str:
        return ", ".join(self.found) or "no devices"

    def absent_reason(self) -> str:
        if self.problem:
            return f"OpenVINO could not list devices ({self.problem})"
        return f"OpenVINO found no NPU (found: {self.found_text()})"

    def describe(self) -> str:
        if not self.present:
            return self.absent_reason()
        parts = [self.name or self.device]
        if self.driver_version:
            parts.append(f"driver {self.driver_version}")
        if self.architecture:
            parts.append(f"architecture {self.architecture}")
        if self.memory_bytes:
            parts.append(f"{self.memory_bytes / 2**30:.1f} GiB addressable")
        return ", ".join(parts)


def read_npu_info(found: Sequence[str], get_property: Callable[[str, str], Any]) -> NPUInfo:
    """Turn OpenVINO's answers (``Core().available_devices`` and ``Core().get_property``) into NPUInfo.

    A pure function of what the runtime reports, so tests can feed it present and absent cases.
    Properties a driver does not expose are left empty.
    """
    found = tuple(str(d) for d in found)
    npus = [d for d in found if d.split(".", 1)[0].upper() == "NPU"]
    if not npus:
        return NPUInfo(False, found=found)
    dev = npus[0]

    def prop(key: str) -> str:
        try:
            value = get_property(dev, key)
        except Exception:  # property not exposed by this plugin/driver version
            return ""
        return "" if value is None else str(value).strip()

    mem = prop("NPU_DEVICE_TOTAL_MEM_SIZE")
    return NPUInfo(
        True,
        device=dev,
        name=prop("FULL_DEVICE_NAME"),
        driver_version=prop("NPU_DRIVER_VERSION"),
        architecture=prop("DEVICE_ARCHITECTURE"),
        memory_bytes=int(mem) if mem.isdigit() else None,
        found=found,
    )


def detect_npu() -> NPUInfo:
    """Ask OpenVINO whether this machine has an NPU (and which)."""
    try:
        from .openvino import core

        c = core()
        return read_npu_info(c.available_devices, c.get_property)
    except Exception as exc:
        return NPUInfo(False, problem=f"{type(exc).__name__}: {exc}")


def device_report(npu: NPUInfo | None = None, classic: npu_classic.ClassicStatus | None = None) -> list[dict]:
    """Rows for ``python -m phi3_helpers devices``: the NPU as OpenVINO sees it, and the classic library."""
    npu = detect_npu() if npu is None else npu
    classic = npu_classic.classic_status() if classic is None else classic
    if npu.present:
        detail = f"{npu.describe()} (OpenVINO GenAI LLMPipeline, int4 symmetric export)"
    else:
        detail = f"{npu.absent_reason()}; --backend npu runs on CPU instead"
    return [
        {"backend": "npu", "device": "NPU", "available": npu.present, "detail": detail},
        {
            "backend": "npu (classic)",
            "device": "NPU",
            "available": bool(classic.installed and classic.npu_available),
            "detail": classic.describe(),
        },
    ]


# -- export ------------------------------------------------------------------------------------
def npu_export_recipe(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE) -> ExportRecipe:
    """int4, symmetric, ratio 1.0 (every layer 4-bit), group-wise (128) or channel-wise (-1).

    Layers whose width is not a multiple of the group (576 in the offline model) get an adjusted
    group size (``--group-size-fallback adjust``); the export says so when it runs.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not (group_size == -1 or group_size > 0):
        raise InvalidOption(f"group_size must be a positive whole number or -1 for channel-wise (got {group_size!r}); try 128.")
    fallback = "adjust" if odd_widths(model, group_size) else None
    variant = "npu" if group_size == DEFAULT_GROUP_SIZE else ("npu-cw" if group_size == -1 else f"npu-g{group_size}")
    return ExportRecipe("int4", "int4", bits=4, sym=True, group_size=group_size, ratio=1.0, group_size_fallback=fallback, variant=variant)


def _recorded_quantization(folder: Path) -> dict | None:
    """The weight quantization an export folder was made with, from the files export writes."""
    import json

    folder = Path(folder)
    ours = folder / "phi3_helpers_export.json"
    if ours.is_file():
        rec = json.loads(ours.read_text())
        return rec.get("quantization") or {"bits": None, "weight_format": rec.get("precision")}
    theirs = folder / "openvino_config.json"  # written by optimum-intel
    if theirs.is_file():
        q = json.loads(theirs.read_text()).get("quantization_config")
        return q or {"bits": None, "weight_format": json.loads(theirs.read_text()).get("dtype")}
    return None


def _weight_types(folder: Path) -> set[str]:
    """Element types of the constants in an OpenVINO IR (``i4`` = symmetric 4-bit, ``u4`` = asymmetric)."""
    import re

    xml = Path(folder) / "openvino_model.xml"
    if not xml.is_file():
        return set()
    return set(re.findall(r'element_type="([a-z0-9]+)"', xml.read_text(errors="replace")))


def npu_export_problem(folder: Path) -> str | None:
    """Why an OpenVINO export folder is not an NPU export (None when it is, or when it cannot tell).

    The NPU wants every weight layer in symmetric 4-bit. An export made for the CPU (fp16, int8,
    asymmetric int4, or int4 with ratio below 1.0 so that some layers stay 8-bit) fails to compile
    for the NPU or runs slowly there. Checked twice: in the recorded recipe and in the IR itself.
    """
    name = Path(folder).name
    fix = "re-export with --weight-format int4 --sym --ratio 1.0 --group-size 128 (load('npu') does this for you)"
    q = _recorded_quantization(folder)
    if q is not None:
        bits = q.get("bits")
        if bits != 4:
            what = q.get("weight_format") or (f"int{bits}" if bits else "float")
            return f"{name} holds {what} weights, but the NPU wants symmetric int4; {fix}."
        if not q.get("sym", False):
            return f"{name} holds asymmetric int4 weights, but the NPU wants symmetric ones; {fix}."
        ratio = q.get("ratio", 1.0)
        if ratio is not None and float(ratio) < 1.0:
            return (
                f"{name} keeps {100 - float(ratio) * 100:.0f}% of its layers in 8-bit (ratio {ratio}), "
                f"an export made for the CPU; {fix}."
            )
    types = _weight_types(folder)
    if types:
        if "u4" in types:
            return f"{name} holds asymmetric 4-bit weights (u4), but the NPU wants symmetric ones; {fix}."
        if not types & {"i4", "nf4"}:
            return (
                f"{name} holds no 4-bit weights at all (its export did not compress them); delete {folder} "
                "and export again with --weight-format int4 --sym --ratio 1.0."
            )
    return None


def _same_recipe(folder: Path, recipe: ExportRecipe) -> bool:
    q = _recorded_quantization(folder) or {}
    want = recipe.quantization_config() or {}
    return all(q.get(k) == v for k, v in want.items())


def export_for_npu(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE, progress=notice) -> Path:
    """The NPU export of ``model``, cached per model and group size.

    A cached folder made with other settings is rebuilt; a folder whose IR is not NPU-ready
    gets a one-line notice (an NPU would refuse or run it slowly; a CPU still runs it).
    """
    recipe = npu_export_recipe(model, group_size)
    folder = export_folder(model, recipe.precision, recipe.variant)
    complete = is_complete_export(folder)
    if complete and not _same_recipe(folder, recipe):
        progress(f"{folder.name} was exported with other settings; re-exporting for the NPU.")
    if not complete or not _same_recipe(folder, recipe):
        folder = export_openvino(model, recipe.precision, recipe=recipe, force=complete, progress=progress)
    problem = npu_export_problem(folder)
    if problem:
        progress(problem)
    return folder


def npu_export_command(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE) -> str:
    """The optimum-cli command for the NPU export (for the chapter and the README)."""
    recipe = npu_export_recipe(model, group_size)
    return export_command(model, recipe, export_folder(model, recipe.precision, recipe.variant))


# -- pipeline settings -------------------------------------------------------------------------
def blob_cache_dir(ov_folder: Path) -> Path:
    """Where the NPU's compiled model (blob) is cached, one folder per export."""
    return cache_root() / "npu_compiled" / Path(ov_folder).name


def npu_pipeline_config(max_prompt_len: int, min_response_len: int, cache_dir: Path | str) -> dict:
    """LLMPipeline properties for device NPU (names from OpenVINO's "GenAI on NPU" guide).

    The NPU pipeline has static shapes: prompts up to MAX_PROMPT_LEN tokens, room for at least
    MIN_RESPONSE_LEN answer tokens; CACHE_DIR keeps the compiled blob for the next load.
    """
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return {"MAX_PROMPT_LEN": int(max_prompt_len), "MIN_RESPONSE_LEN": int(min_response_len), "CACHE_DIR": str(cache_dir)}


def _positive(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidOption(f"{name} must be a whole number above 0 (got {value!r}); the default is {default}.")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# -- the backend -------------------------------------------------------------------------------
class NPUBackend(OpenVINOGenAIBackend):
    """Phi-3 on the NPU: OpenVINO GenAI (maintained) or intel-npu-acceleration-library (classic).

    >>> llm = load("npu")                               # NPU if present, else CPU (with a notice)
    >>> llm = load("npu", device="NPU")                 # NPU or a clear error
    >>> llm = load("npu", max_prompt_tokens=2048)       # longer prompts (NPU: MAX_PROMPT_LEN)
    >>> llm = load("npu", path="classic", precision="int8")   # the archived library (Windows)
    >>> llm = load("npu", prefix_caching=True)          # NPU: reuse the chat's KV cache between turns
    """

    name = "npu"
    runtime = "OpenVINO GenAI"
    precisions = ("int4",)  # maintained path; the classic path also takes int8 and fp16

    def __init__(
        self,
        model=None,
        device: str | None = None,
        precision: str | None = None,
        *,
        path: str | None = None,
        max_prompt_tokens: int | None = None,
        min_response_tokens: int | None = None,
        group_size: int = DEFAULT_GROUP_SIZE,
        config: dict | None = None,
        reuse_cache: bool = True,
        prefix_caching: bool = False,
    ):
        chosen = (path or os.environ.get(PATH_ENV) or MAINTAINED).strip().lower()
        if chosen not in PATHS:
            raise InvalidOption(f"path must be 'maintained' (OpenVINO GenAI) or 'classic' (intel-npu-acceleration-library); got {chosen!r} (from path= or ${PATH_ENV}).")
        self.path = chosen
        if not isinstance(prefix_caching, bool):
            raise InvalidOption(f"prefix_caching must be True or False (got {prefix_caching!r}); e.g. load('npu', prefix_caching=True).")
        #: NPUW_LLM_ENABLE_PREFIX_CACHING on the NPU (off by default, as upstream: not measured on an NPU here)
        self.prefix_caching = prefix_caching
        self.max_prompt_len = _positive("max_prompt_tokens", max_prompt_tokens, DEFAULT_MAX_PROMPT_LEN)
        self.min_response_len = _positive("min_response_tokens", min_response_tokens, DEFAULT_MIN_RESPONSE_LEN)
        self.group_size = group_size
        self.npu: NPUInfo | None = None
        self.fallback = False  # True when the machine has no NPU and we run elsewhere
        self.load_seconds: float | None = None
        self.classic: npu_classic.ClassicNPUModel | None = None
        if chosen == CLASSIC:
            self.runtime = "intel-npu-acceleration-library"
        super().__init__(model, device, precision, config=config, reuse_cache=reuse_cache)

    # -- choices -----------------------------------------------------------------------------
    def _check_precision(self, precision: str | None) -> str:
        allowed = npu_classic.PRECISIONS if self.path == CLASSIC else self.precisions
        p = (precision or allowed[0]).lower()
        if p not in allowed:
            extra = " (int8 and fp16 exist on the classic path only: path='classic')" if self.path == MAINTAINED and p in npu_classic.PRECISIONS else ""
            from ..errors import UnknownPrecision

            raise UnknownPrecision(f"precision {precision!r} is not available for the npu backend's {self.path} path; use {', '.join(allowed)}{extra}.")
        return p

    def _pick_device(self, device: str | None) -> str:
        want = (device or "AUTO").strip().upper()
        if self.path == CLASSIC:
            return self._pick_classic_device(want)
        base = want.split(".", 1)[0]
        if base not in {"AUTO", "NPU", "CPU"}:
            raise UnknownDevice(
                f"the npu backend runs on NPU (or on CPU when there is none); got {device!r}. For the GPU use --backend openvino."
            )
        if base == "CPU":
            return "CPU"
        self.npu = detect_npu()
        if self.npu.present:
            return self.npu.device if base == "NPU" and "." in want else "NPU"
        if base == "NPU":
            raise DeviceUnavailable(
                f"device NPU was asked for, but {self.npu.absent_reason()}; {DRIVER_HELP}, "
                "or leave the device unset to run on the CPU."
            )
        self.fallback = True
        notice(f"No NPU on this machine: {self.npu.absent_reason()}. The npu backend runs the same OpenVINO GenAI pipeline on CPU.")
        return "CPU"

    def _pick_classic_device(self, want: str) -> str:
        npu_classic.import_library()  # a clear install message when it is missing
        if want not in {"AUTO", "NPU"}:
            raise UnknownDevice(
                f"the classic library chooses its device itself (the NPU, else its own CPU fallback); got {want!r}: leave the device unset."
            )
        status = npu_classic.classic_status()
        if status.npu_available:
            return "NPU"
        if want == "NPU":
            raise DeviceUnavailable(f"device NPU was asked for, but {status.describe()}; {DRIVER_HELP}.")
        self.fallback = True
        notice(f"No NPU here ({npu_classic.PACKAGE}: npu_available() is False): the library falls back to CPU.")
        return "CPU"

    # -- limits -------------------------------------------------------------------------------
    @property
    def max_prompt_tokens(self) -> int:
        """The NPU pipeline's MAX_PROMPT_LEN (kept on the CPU fallback too, so behaviour matches)."""
        if self.path == CLASSIC:
            return super().max_prompt_tokens
        return min(self.max_prompt_len, self.model.context_length)

    @property
    def context_length(self) -> int:
        """On the NPU the context is MAX_PROMPT_LEN + MIN_RESPONSE_LEN (static shapes)."""
        if self.path == CLASSIC:
            return super().context_length
        return min(self.max_prompt_len + self.min_response_len, self.model.context_length)

    def _prompt_too_long(self, n: int, limit: int) -> str:
        if self.path != MAINTAINED:
            return super()._prompt_too_long(n, limit)
        return (
            f"the prompt has {n} tokens, but the NPU pipeline takes at most {limit} "
            f"(MAX_PROMPT_LEN); shorten it, or load with a higher limit: load('npu', max_prompt_tokens={_next_size(n)})."
        )

    # -- loading ------------------------------------------------------------------------------
    def _export(self) -> Path:
        self.ov_folder = export_for_npu(self.model, self.group_size)
        check_export_folder(self.ov_folder)
        self.prepared_folder = self.ov_folder  # what `python -m phi3_helpers prepare` prints
        return self.ov_folder

    def _config(self) -> dict:
        if self.device.startswith("NPU"):
            cfg = npu_pipeline_config(self.max_prompt_len, self.min_response_len, blob_cache_dir(self.ov_folder))
            if self.prefix_caching and self.reuse_cache:
                # without it the NPU pipeline re-reads the whole history every turn
                cfg["NPUW_LLM_ENABLE_PREFIX_CACHING"] = "YES"
            cfg.update(self.extra_config)
            return cfg
        return super()._config()

    def _load(self) -> None:
        t0 = time.perf_counter()
        if self.path == CLASSIC:
            self.classic = npu_classic.ClassicNPUModel(self.model.folder, self.precision)
            self.prepared_folder = self.model.folder  # the library quantizes in memory, nothing exported
        else:
            try:
                super()._load()
            except Exception as exc:
                if not self.device.startswith("NPU"):
                    raise
                raise DeviceUnavailable(
                    f"the NPU could not compile {self.model.name} ({_first_line(exc)}); update the NPU driver "
                    "(32.0.100.3104 or newer), try DISABLE_OPENVINO_GENAI_NPU_L0=1 on out-of-memory errors, "
                    "or run on the CPU: load('npu', device='CPU')."
                ) from exc
        self.load_seconds = time.perf_counter() - t0

    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event) -> Iterator[list[int]]:
        if self.path == CLASSIC:
            yield from self.classic.stream(input_ids, options, stop, self.eos_token_ids, self.tokenizer.pad_token_id)
        else:
            yield from super().stream_tokens(input_ids, options, stop)

    def describe(self) -> str:
        where = self.device + (" (no NPU: fallback)" if self.fallback else "")
        return f"{self.name} | {where} | {self.precision} | {self.model.name} | {self.path} ({self.runtime})"

    def close(self) -> None:
        if self.classic is not None:
            self.classic.close()
            self.classic = None
        self.pipeline = None


def _next_size(n: int) -> int:
    """A round limit above ``n`` to suggest (powers of two, as static shapes like)."""
    size = 256
    while size < n:
        size *= 2
    return size
