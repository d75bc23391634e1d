"""Backend ``npu``: Phi-3 on an Intel NPU with OpenVINO GenAI's LLMPipeline (the maintained path), on the NPU export
(``npu_export.py``) with the NPU's static shapes and a compiled-blob cache; without an NPU the same pipeline runs on
the CPU, with a notice. The archived intel-npu-acceleration-library is the ``npu-classic`` backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import DeviceUnavailable, InvalidOption, UnknownDevice, UnknownPrecision
from ..models.cache import cache_root
from .base import Plan, positive_int
from .npu_export import DEFAULT_GROUP_SIZE, export_for_npu, npu_export_folder
from .openvino import OpenVINOGenAIBackend, check_export_folder, runtime_config

#: OpenVINO GenAI's NPU defaults (MAX_PROMPT_LEN, MIN_RESPONSE_LEN); their sum is the context.
DEFAULT_MAX_PROMPT_LEN = 1024
DEFAULT_MIN_RESPONSE_LEN = 128
DRIVER_HELP = (
    "install or update the Intel NPU driver (Windows: Device Manager > Neural processors > Intel(R) AI Boost; "
    "Linux: github.com/intel/linux-npu-driver)"
)


@dataclass(frozen=True)
class NPUInfo:
    """What OpenVINO reports about this machine's NPU (``problem``: why it could not be asked)."""

    present: bool
    device: str = ""
    name: str = ""
    driver_version: str = ""
    architecture: str = ""
    memory_bytes: int | None = None
    found: tuple[str, ...] = ()
    problem: str = ""

    def describe(self) -> str:
        if self.problem:
            return f"OpenVINO could not list devices ({self.problem})"
        if not self.present:
            return f"OpenVINO found no NPU (found: {', '.join(self.found) or 'no devices'})"
        parts = [self.name or self.device, self.driver_version and f"driver {self.driver_version}",
                 self.architecture and f"architecture {self.architecture}",
                 self.memory_bytes and f"{self.memory_bytes / 2**30:.1f} GiB addressable"]
        return ", ".join(p for p in parts if p)


def read_npu_info(found: Sequence[str], get_property: Callable[[str, str], Any]) -> NPUInfo:
    """NPUInfo from ``Core().available_devices`` and ``Core().get_property`` (pure; unexposed properties stay '')."""
    found = tuple(str(d) for d in found)
    npus = [d for d in found if d.split(".", 1)[0].upper() == "NPU"]
    if not npus:
        return NPUInfo(False, found=found)

    def prop(key: str) -> str:
        try:
            value = get_property(npus[0], key)
        except Exception:  # not exposed by this plugin or driver version
            return ""
        return "" if value is None else str(value).strip()

    mem = prop("NPU_DEVICE_TOTAL_MEM_SIZE")
    return NPUInfo(True, npus[0], prop("FULL_DEVICE_NAME"), prop("NPU_DRIVER_VERSION"), prop("DEVICE_ARCHITECTURE"),
                   int(mem) if mem.isdigit() else None, found)


def detect_npu() -> NPUInfo:
    try:
        from .openvino import core

        return read_npu_info(core().available_devices, core().get_property)
    except Exception as exc:
        return NPUInfo(False, problem=f"{type(exc).__name__}: {exc}")


def pipeline_config(plan: Plan) -> dict:
    """The LLMPipeline properties of an npu plan (OpenVINO's "GenAI on NPU" guide; on the CPU: the openvino
    backend's), then its ``config`` option."""
    s = plan.settings
    if not plan.device.startswith("NPU"):
        return {**runtime_config(plan.device, plan.folder), **(s["config"] or {})}
    cfg = {"MAX_PROMPT_LEN": s["max_prompt_tokens"], "MIN_RESPONSE_LEN": s["min_response_tokens"],
           "CACHE_DIR": str(cache_root() / "npu_compiled" / Path(plan.folder).name)}  # one blob cache per export
    if s["prefix_caching"] and s["reuse_cache"]:
        cfg["NPUW_LLM_ENABLE_PREFIX_CACHING"] = "YES"
    return {**cfg, **(s["config"] or {})}


class NPUFallback:
    """What both NPU backends say about running on the CPU for want of an NPU."""

    @property
    def fallback(self) -> bool:
        return bool(self.plan.settings.get("fallback"))

    def describe(self) -> str:
        where = self.device + (" (no NPU: fallback)" if self.fallback else "")
        return f"{self.name} | {where} | {self.precision} | {self.model.name} | {self.runtime}"


class NPUBackend(NPUFallback, OpenVINOGenAIBackend):
    """OpenVINO GenAI on the NPU (CPU when there is none). Options: ``max_prompt_tokens`` (MAX_PROMPT_LEN),
    ``min_response_tokens`` (MIN_RESPONSE_LEN), ``group_size`` of the export (128 or -1), ``config`` (LLMPipeline
    properties), ``prefix_caching`` (keep a chat's KV cache between turns; off, as upstream)."""

    name = "npu"
    precisions = ("int4",)
    options = {"max_prompt_tokens": None, "min_response_tokens": None, "group_size": DEFAULT_GROUP_SIZE,
               "config": None, "prefix_caching": False}

    @classmethod
    def devices_here(cls) -> list[str | None]:
        return ["NPU" if detect_npu().present else None]  # None: the backend's own CPU fallback

    @classmethod
    def device_report(cls) -> list[dict]:
        npu = detect_npu()
        how = " (OpenVINO GenAI LLMPipeline, int4 symmetric export)" if npu.present else "; it runs on CPU instead"
        return [{"backend": "npu", "device": "NPU", "available": npu.present, "detail": npu.describe() + how}]

    @classmethod
    def check_precision(cls, precision: str | None) -> str:
        if (precision or "").lower() in {"int8", "fp16"}:
            raise UnknownPrecision(f"precision {precision!r} is not available for the npu backend; use int4 (int8 "
                                   "and fp16 exist on the classic path only: --backend npu-classic).")
        return super().check_precision(precision)

    @classmethod
    def check_options(cls, options) -> dict:
        s = super().check_options(options)
        s["max_prompt_tokens"] = positive_int("max_prompt_tokens", s["max_prompt_tokens"], DEFAULT_MAX_PROMPT_LEN)
        s["min_response_tokens"] = positive_int("min_response_tokens", s["min_response_tokens"],
                                                DEFAULT_MIN_RESPONSE_LEN)
        if not isinstance(s["prefix_caching"], bool):
            raise InvalidOption(f"prefix_caching must be True or False (got {s['prefix_caching']!r}); "
                                "e.g. load('npu', prefix_caching=True).")
        return s

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        want = (device or "AUTO").strip().upper()
        base = want.split(".", 1)[0]
        if base not in {"AUTO", "NPU", "CPU"}:
            raise UnknownDevice(f"the npu backend runs on NPU (or on CPU when there is none); got {device!r}. "
                                "For the GPU use --backend openvino.")
        settings["fallback"] = False
        if base == "CPU":
            return "CPU"
        npu = detect_npu()
        if npu.present:
            return npu.device if base == "NPU" and "." in want else "NPU"
        if base == "NPU":
            raise DeviceUnavailable(f"device NPU was asked for, but {npu.describe()}; {DRIVER_HELP}, "
                                    "or leave the device unset to run on the CPU.")
        settings["fallback"] = True
        notices.append(f"No NPU on this machine: {npu.describe()}. The npu backend runs the same OpenVINO "
                       "GenAI pipeline on CPU.")
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
        return pipeline_config(self.plan)

    @property
    def max_prompt_tokens(self) -> int:
        """The NPU pipeline's MAX_PROMPT_LEN (kept on the CPU fallback too, so behaviour matches)."""
        return min(self.plan.settings["max_prompt_tokens"], self.model.context_length)

    @property
    def context_length(self) -> int:
        s = self.plan.settings
        return min(s["max_prompt_tokens"] + s["min_response_tokens"], self.model.context_length)

    def _prompt_too_long(self, n: int, limit: int) -> str:
        bigger = 1 << max(8, (n - 1).bit_length())  # a power of two, as static shapes like
        return (f"the prompt has {n} tokens, but the NPU pipeline takes at most {limit} (MAX_PROMPT_LEN); shorten "
                f"it, or load with a higher limit: load('npu', max_prompt_tokens={bigger}).")

    def _load(self) -> None:
        if self.device.startswith("NPU"):
            Path(self.runtime_settings()["CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
        try:
            super()._load()
        except Exception as exc:
            if not self.device.startswith("NPU"):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise DeviceUnavailable(
                f"the NPU could not compile {self.model.name} ({type(exc).__name__}: {first}); update the NPU driver "
                "(32.0.100.3104 or newer), try DISABLE_OPENVINO_GENAI_NPU_L0=1 on out-of-memory errors, "
                "or run on the CPU: load('npu', device='CPU')."
            ) from exc
