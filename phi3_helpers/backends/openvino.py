"""OpenVINO on CPU, GPU or AUTO, on the export of ``openvino_export.py``: OpenVINO GenAI's LLMPipeline (backend
``openvino``) or optimum-intel's OVModelForCausalLM (``openvino-optimum``). Compiled models are cached too
(OpenVINO's CACHE_DIR), so a second load is fast."""

from __future__ import annotations

import functools
import sys
import threading
from pathlib import Path

from ..errors import DeviceUnavailable, ModelFolderError, UnknownDevice
from ..models import fetch_source
from ..models.cache import cache_root
from ..options import GenerationOptions
from ..streaming import bridge
from . import speculative
from .base import Backend, Plan
from .hf import GenerateAPI
from .openvino_export import (  # noqa: F401  (the export's public names, re-exported for chapter 3)
    ExportRecipe, check_export_folder, export_command, export_folder, export_openvino, export_recipe,
    is_complete_export,
)

PRECISIONS = ("int4", "int8", "fp16")
KNOWN_DEVICES = ("CPU", "GPU", "NPU", "AUTO")


@functools.lru_cache(maxsize=1)
def core():
    import openvino as ov

    return ov.Core()


def available_devices() -> list[str]:
    """OpenVINO's devices on this machine, e.g. ['CPU', 'GPU.0', 'NPU']."""
    return list(core().available_devices)


def device_name(device: str) -> str:
    try:
        return str(core().get_property(device, "FULL_DEVICE_NAME"))
    except Exception:
        return device


def _kind(device: str) -> str:
    """'GPU' for 'GPU.0'."""
    return device.split(".", 1)[0]


def pick_device(device: str | None, found: list[str] | None = None) -> str:
    """A device name checked against what OpenVINO found (AUTO, HETERO and MULTI are always accepted)."""
    d = (device or "CPU").strip().upper()
    base = _kind(d).split(":", 1)[0]
    if base in {"AUTO", "HETERO", "MULTI"}:
        return d
    if base not in KNOWN_DEVICES:
        raise UnknownDevice(f"unknown device {device!r}; use one of {', '.join(KNOWN_DEVICES)}.")
    found = available_devices() if found is None else found
    if not any(f == d or _kind(f) == d for f in found):
        raise DeviceUnavailable(f"device {d} is not available here (OpenVINO found: {', '.join(found) or 'none'}); "
                                "use --device CPU or AUTO, or install the device driver.")
    return d


def runtime_config(device: str, model_folder: Path) -> dict:
    """Latency-oriented settings and a compiled-model cache folder."""
    cache = cache_root() / "ov_compiled" / Path(model_folder).name
    cache.mkdir(parents=True, exist_ok=True)
    cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "CACHE_DIR": str(cache)}
    if _kind(device) == "CPU":
        # CPUs with AVX512-BF16/AMX compute in bf16 by default, which turns the small offline model's greedy
        # answer into nonsense; f32 activations keep it exact (weights stay int4/int8/fp16).
        cfg["INFERENCE_PRECISION_HINT"] = "f32"
    return cfg


def damaged_folder_error(folder: Path, exc: BaseException) -> ModelFolderError:
    """OpenVINO could not read a model folder (a truncated .bin, a broken .xml): one line that names the fix."""
    last = (str(exc).strip().splitlines() or [""])[-1][:200]
    return ModelFolderError(f"OpenVINO could not load {folder} ({type(exc).__name__}: {last}); the folder looks "
                            "damaged: delete it and run again to export or download it anew.")


class _OpenVINOBackend(Backend):
    """What both OpenVINO backends share. Option ``config``: OpenVINO properties over the defaults."""

    requires = ("transformers", "openvino", "optimum.intel")
    precisions = PRECISIONS
    options = {"config": None}

    @classmethod
    def devices_here(cls) -> list[str | None]:
        found = {_kind(f) for f in available_devices()}
        return [d for d in ("CPU", "GPU") if d in found] or ["CPU"]  # the npu backend measures the NPU

    @classmethod
    def device_report(cls) -> list[dict]:
        found = available_devices()
        rows = []
        for d in ("CPU", "GPU", "NPU"):
            names = [device_name(f) for f in found if _kind(f) == d]
            detail = "; ".join(names) or f"OpenVINO found no {d} (driver missing or no such hardware)"
            rows.append({"backend": "openvino", "device": d, "available": bool(names), "detail": detail})
        return rows

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        return pick_device(device)

    @classmethod
    def prepared_path(cls, plan: Plan) -> Path | None:
        if plan.settings.get("hub"):  # the publisher's -ov folder, loaded as it is (None until fetched)
            return plan.model.folder if Path(plan.model.folder).is_dir() else None
        return export_folder(plan.model, plan.precision)

    @classmethod
    def prepare(cls, plan: Plan) -> Plan:
        if plan.settings.get("hub"):
            model = fetch_source(plan.settings["hub"])
            return plan.replace(model=model, folder=model.folder)
        folder = export_openvino(plan.model, plan.precision)
        check_export_folder(folder)
        return plan.replace(folder=folder)

    def runtime_settings(self) -> dict:
        """The OpenVINO properties this load compiles with (defaults, then the ``config`` option)."""
        return {**runtime_config(self.device, self.prepared_folder), **(self.plan.settings["config"] or {})}


class OpenVINOGenAIBackend(_OpenVINOBackend):
    """OpenVINO GenAI's LLMPipeline, the course's default. Its paged-attention pipeline reuses the KV cache of any
    prefix it has seen (not with ``reuse_cache=False``); ``draft_model=`` or ``prompt_lookup=True`` speculate (see
    speculative.py). ``perf_metrics``: the pipeline's own timings (TTFT, TPOT) of the last answer."""

    name = "openvino"
    runtime = "OpenVINO GenAI"
    requires = ("transformers", "openvino_genai", "optimum.intel")
    options = {"config": None, "draft_model": None, "prompt_lookup": False}

    @classmethod
    def plan(cls, model=None, device: str | None = None, precision: str | None = None, **options) -> Plan:
        plan = super().plan(model, device, precision, **options)
        s = dict(plan.settings)
        asked = s.pop("draft_model", None), s.pop("prompt_lookup", False)
        s["speculation"] = speculative.choose(*asked, plan.device, cls.name)
        return plan.replace(settings=s)

    def _load(self) -> None:
        import openvino_genai as ov_genai

        opts = self.runtime_settings()
        self.speculation = self.plan.settings.get("speculation") or speculative.Speculation()
        if self.speculation.kind == "draft":
            draft = speculative.resolve_draft(self.speculation.draft_folder)
            speculative.check_same_tokenizer(self.tokenizer, draft)
            self.speculation = speculative.Speculation("draft", draft)
            draft_cfg = {**runtime_config(self.device, draft), **(self.plan.settings["config"] or {})}
            opts["draft_model"] = ov_genai.draft_model(str(draft), self.device, **draft_cfg)
        elif self.speculation.kind == "prompt_lookup":
            opts["prompt_lookup"] = True
        paged = not self.device.startswith("NPU") and str(opts.get("ATTENTION_BACKEND", "PA")).upper() != "SDPA"
        if paged and not self.reuse_cache:  # OpenVINO GenAI's default latency scheduler, without prefix caching
            opts["scheduler_config"] = sched = ov_genai.SchedulerConfig()
            sched.enable_prefix_caching = False
            sched.max_num_batched_tokens = sys.maxsize
        try:
            self.pipeline = ov_genai.LLMPipeline(str(self.prepared_folder), self.device, **opts)
        except RuntimeError as exc:
            raise damaged_folder_error(self.prepared_folder, exc) from exc
        self.perf_metrics = None

    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event):
        import numpy as np
        import openvino as ov
        import openvino_genai as ov_genai

        cfg = self.pipeline.get_generation_config()
        cfg.max_new_tokens = options.max_new_tokens
        cfg.do_sample = options.sampling
        if options.sampling:
            cfg.temperature = options.temperature
            cfg.top_p = options.top_p
        cfg.stop_token_ids = set(self.eos_token_ids)
        if self.speculation.kind:
            cfg.num_assistant_tokens = self.speculation.assistant_tokens
        if self.speculation.kind == "prompt_lookup":
            cfg.max_ngram_size = self.speculation.ngram
        ids = np.asarray([input_ids], dtype=np.int64)
        inputs = ov_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
        running, stopping = ov_genai.StreamingStatus.RUNNING, ov_genai.StreamingStatus.STOP

        def run(emit) -> None:
            class _Streamer(ov_genai.StreamerBase):
                def write(self, token):
                    return stopping if emit(token if isinstance(token, list) else [token]) else running

                def end(self):
                    pass

            self.perf_metrics = self.pipeline.generate(inputs, cfg, _Streamer()).perf_metrics

        yield from bridge(run, stop)

    def close(self) -> None:
        self.pipeline = None


class OptimumOpenVINOBackend(GenerateAPI, _OpenVINOBackend):
    """optimum-intel's OVModelForCausalLM: the transformers API (generate) on OpenVINO."""

    name = "openvino-optimum"
    runtime = "OpenVINO (optimum-intel)"

    @classmethod
    def device_report(cls) -> list[dict]:
        return []  # the openvino backend lists the same devices

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        d = pick_device(device)
        if d.startswith("NPU"):
            raise DeviceUnavailable("OVModelForCausalLM keeps dynamic shapes, which the NPU does not compile; use the "
                                    "openvino or npu backend for the NPU, or --device CPU/GPU here.")
        return d

    def _load(self) -> None:
        from optimum.intel import OVModelForCausalLM

        try:
            self.model_obj = OVModelForCausalLM.from_pretrained(
                str(self.prepared_folder), export=False, device=self.device, ov_config=self.runtime_settings(),
                compile=True,
            )
        except RuntimeError as exc:
            raise damaged_folder_error(self.prepared_folder, exc) from exc
