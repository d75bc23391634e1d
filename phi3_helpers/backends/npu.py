"""Backend ``npu``: Phi-3 on an Intel NPU with OpenVINO GenAI's LLMPipeline (the maintained path).

It runs the export the NPU needs (``npu_export.py``) with the NPU pipeline's settings: a maximum
prompt length and a minimum response length (the NPU runs static shapes) and a compiled-model
cache, so the second load skips the NPU compiler. When the machine has no NPU, the same pipeline
runs on the CPU and a one-line notice says so. The archived intel-npu-acceleration-library is its
own backend, ``npu-classic`` (``npu_classic.py``).

>>> llm = load("npu")                               # NPU if present, else CPU (with a notice)
>>> llm = load("npu", device="NPU")                 # NPU or a clear error
>>> llm = load("npu", max_prompt_tokens=2048)       # longer prompts (NPU: MAX_PROMPT_LEN)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import DeviceUnavailable, InvalidOption, UnknownDevice, UnknownPrecision
from ..models.cache import cache_root
from .base import Plan, positive_int
from .npu_export import DEFAULT_GROUP_SIZE, export_for_npu, npu_export_folder, npu_export_problem  # noqa: F401
from .openvino import OpenVINOGenAIBackend, check_export_folder

#: OpenVINO GenAI's NPU defaults (MAX_PROMPT_LEN, MIN_RESPONSE_LEN); their sum is the context.
DEFAULT_MAX_PROMPT_LEN = 1024
DEFAULT_MIN_RESPONSE_LEN = 128
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
        True, device=dev, name=prop("FULL_DEVICE_NAME"), driver_version=prop("NPU_DRIVER_VERSION"),
        architecture=prop("DEVICE_ARCHITECTURE"), memory_bytes=int(mem) if mem.isdigit() else None, found=found,
    )


def detect_npu() -> NPUInfo:
    """Ask OpenVINO whether this machine has an NPU (and which)."""
    try:
        from .openvino import core

        c = core()
        return read_npu_info(c.available_devices, c.get_property)
    except Exception as exc:
        return NPUInfo(False, problem=f"{type(exc).__name__}: {exc}")


def npu_report_row(npu: NPUInfo) -> dict:
    """The ``devices`` row of the NPU as OpenVINO sees it."""
    if npu.present:
        detail = f"{npu.describe()} (OpenVINO GenAI LLMPipeline, int4 symmetric export)"
    else:
        detail = f"{npu.absent_reason()}; --backend npu runs on CPU instead"
    return {"backend": "npu", "device": "NPU", "available": npu.present, "detail": detail}


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
    return {
        "MAX_PROMPT_LEN": int(max_prompt_len), "MIN_RESPONSE_LEN": int(min_response_len), "CACHE_DIR": str(cache_dir),
    }


def _next_size(n: int) -> int:
    """A round limit above ``n`` to suggest (powers of two, as static shapes like)."""
    size = 256
    while size < n:
        size *= 2
    return size


# -- the backend -------------------------------------------------------------------------------
class NPUBackend(OpenVINOGenAIBackend):
    """OpenVINO GenAI on the NPU (CPU when there is none). Options: ``max_prompt_tokens`` (MAX_PROMPT_LEN,
    default 1024), ``min_response_tokens`` (MIN_RESPONSE_LEN, 128), ``group_size`` (of the export, 128 or -1),
    ``config`` (LLMPipeline properties), ``prefix_caching`` (NPUW_LLM_ENABLE_PREFIX_CACHING: keep the KV cache
    of a chat's common prefix between turns; off by default, as upstream, and not measured on an NPU here)."""

    name = "npu"
    precisions = ("int4",)
    options = {
        "max_prompt_tokens": None, "min_response_tokens": None, "group_size": DEFAULT_GROUP_SIZE, "config": None,
        "prefix_caching": False,
    }

    @classmethod
    def devices_here(cls) -> list[str | None]:
        # No NPU: let the backend fall back to the CPU itself, so its result says "fallback".
        return ["NPU" if detect_npu().present else None]

    @classmethod
    def device_report(cls) -> list[dict]:
        return [npu_report_row(detect_npu())]

    @classmethod
    def check_precision(cls, precision: str | None) -> str:
        p = (precision or "int4").lower()
        if p != "int4":
            extra = (
                " (int8 and fp16 exist on the classic path only: --backend npu-classic)"
                if p in {"int8", "fp16"}
                else ""
            )
            raise UnknownPrecision(f"precision {precision!r} is not available for the npu backend; use int4{extra}.")
        return p

    @classmethod
    def check_options(cls, options) -> dict:
        s = super().check_options(options)
        s["max_prompt_tokens"] = positive_int("max_prompt_tokens", s["max_prompt_tokens"], DEFAULT_MAX_PROMPT_LEN)
        s["min_response_tokens"] = positive_int(
            "min_response_tokens", s["min_response_tokens"], DEFAULT_MIN_RESPONSE_LEN
        )
        if not isinstance(s["prefix_caching"], bool):
            raise InvalidOption(
                f"prefix_caching must be True or False (got {s['prefix_caching']!r}); "
                "e.g. load('npu', prefix_caching=True)."
            )
        return s

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        want = (device or "AUTO").strip().upper()
        base = want.split(".", 1)[0]
        if base not in {"AUTO", "NPU", "CPU"}:
            raise UnknownDevice(
                f"the npu backend runs on NPU (or on CPU when there is none); got {device!r}. For the GPU use "
                "--backend openvino."
            )
        settings["fallback"] = False
        if base == "CPU":
            return "CPU"
        npu = detect_npu()
        if npu.present:
            return npu.device if base == "NPU" and "." in want else "NPU"
        if base == "NPU":
            raise DeviceUnavailable(
                f"device NPU was asked for, but {npu.absent_reason()}; {DRIVER_HELP}, or leave the device unset to "
                "run on the CPU."
            )
        settings["fallback"] = True
        notices.append(
            f"No NPU on this machine: {npu.absent_reason()}. The npu backend runs the same OpenVINO GenAI pipeline "
            "on CPU."
        )
        return "CPU"

    @classmethod
    def prepared_path(cls, plan: Plan) -> Path:
        return npu_export_folder(plan.model, plan.settings["group_size"])

    @classmethod
    def prepare(cls, plan: Plan) -> Plan:
        folder = export_for_npu(plan.model, plan.settings["group_size"])
        check_export_folder(folder)
        return plan.replace(folder=folder)

    def runtime_settings(self) -> dict:
        if not self.device.startswith("NPU"):
            return super().runtime_settings()
        s = self.plan.settings
        cfg = npu_pipeline_config(
            s["max_prompt_tokens"], s["min_response_tokens"], blob_cache_dir(self.prepared_folder)
        )
        if s["prefix_caching"] and self.reuse_cache:
            # without it the NPU pipeline re-reads the whole history every turn
            cfg["NPUW_LLM_ENABLE_PREFIX_CACHING"] = "YES"
        return {**cfg, **(s["config"] or {})}

    @property
    def fallback(self) -> bool:
        """True when the machine has no NPU and the pipeline runs on the CPU instead."""
        return bool(self.plan.settings.get("fallback"))

    @property
    def max_prompt_tokens(self) -> int:
        """The NPU pipeline's MAX_PROMPT_LEN (kept on the CPU fallback too, so behaviour matches)."""
        return min(self.plan.settings["max_prompt_tokens"], self.model.context_length)

    @property
    def context_length(self) -> int:
        """On the NPU the context is MAX_PROMPT_LEN + MIN_RESPONSE_LEN (static shapes)."""
        s = self.plan.settings
        return min(s["max_prompt_tokens"] + s["min_response_tokens"], self.model.context_length)

    def _prompt_too_long(self, n: int, limit: int) -> str:
        return (
            f"the prompt has {n} tokens, but the NPU pipeline takes at most {limit} (MAX_PROMPT_LEN); shorten it, "
            f"or load with a higher limit: load('npu', max_prompt_tokens={_next_size(n)})."
        )

    def _load(self) -> None:
        try:
            super()._load()
        except Exception as exc:
            if not self.device.startswith("NPU"):
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DeviceUnavailable(
                f"the NPU could not compile {self.model.name} ({type(exc).__name__}: {first[:200]}); update the NPU "
                "driver "
                "(32.0.100.3104 or newer), try DISABLE_OPENVINO_GENAI_NPU_L0=1 on out-of-memory errors, "
                "or run on the CPU: load('npu', device='CPU')."
            ) from exc

    def describe(self) -> str:
        where = self.device + (" (no NPU: fallback)" if self.fallback else "")
        return f"{self.name} | {where} | {self.precision} | {self.model.name} | {self.runtime}"
