"""OpenVINO: export with optimum-intel (int4 / int8 / fp16), run with OpenVINO GenAI's LLMPipeline
(backend ``openvino``) or optimum-intel's OVModelForCausalLM (backend ``openvino-optimum``), on
CPU, GPU, NPU or AUTO.

Exports are cached per model and precision under ``$PHI3_CACHE_DIR/openvino/`` and built
atomically; compiled models are cached too (OpenVINO's CACHE_DIR), so the second load is fast.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import DeviceUnavailable, ModelFolderError, UnknownDevice
from ..models import ModelSource, notice
from ..models.cache import atomic_folder, cache_root
from ..options import GenerationOptions
from ..streaming import bridge
from . import speculative
from .base import Backend

PRECISIONS = ("int4", "int8", "fp16")
KNOWN_DEVICES = ("CPU", "GPU", "NPU", "AUTO")


# -- export ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportRecipe:
    """How one precision is exported; ``cli_flags`` are the equivalent optimum-cli flags."""

    precision: str
    weight_format: str
    bits: int | None = None
    sym: bool = False
    group_size: int | None = None
    ratio: float | None = None
    group_size_fallback: str | None = None
    variant: str = ""  # "" for the general export, "npu" for the NPU-friendly one

    def quantization_config(self) -> dict | None:
        if self.bits is None:
            return None
        q: dict = {"bits": self.bits, "sym": self.sym}
        if self.group_size is not None:
            q["group_size"] = self.group_size
        if self.ratio is not None:
            q["ratio"] = self.ratio
        if self.group_size_fallback:
            q["group_size_fallback"] = self.group_size_fallback
        return q

    def cli_flags(self) -> list[str]:
        flags = ["--weight-format", self.weight_format]
        if self.bits == 4:
            if self.sym:
                flags.append("--sym")
            if self.group_size is not None:
                flags += ["--group-size", str(self.group_size)]
            if self.ratio is not None:
                flags += ["--ratio", str(self.ratio)]
            if self.group_size_fallback:
                flags += ["--group-size-fallback", self.group_size_fallback]
        return flags


def odd_widths(model: ModelSource, group_size: int) -> list[int]:
    """Layer input widths that are not a multiple of ``group_size`` (576 in the offline model)."""
    if group_size <= 0:  # channel-wise: no groups
        return []
    c = model.config
    return sorted(w for w in {int(c["hidden_size"]), int(c["intermediate_size"])} if w % group_size)


def export_recipe(model: ModelSource, precision: str, variant: str = "") -> ExportRecipe:
    """The classic settings (int4: symmetric, group 128, ratio 0.6), adapted to the model.

    When a layer's input width is not a multiple of the group size (576 in the offline model),
    NNCF is told to adjust the group size for those layers, and a notice says so.
    """
    if precision == "int4":
        group = 128
        fallback = "adjust" if odd_widths(model, group) else None  # said in a notice when the export runs
        return ExportRecipe("int4", "int4", bits=4, sym=True, group_size=group, ratio=0.6, group_size_fallback=fallback, variant=variant)
    if precision == "int8":
        return ExportRecipe("int8", "int8", bits=8, variant=variant)
    if precision == "fp16":
        return ExportRecipe("fp16", "fp16", variant=variant)
    raise ValueError(precision)


def export_folder(model: ModelSource, precision: str, variant: str = "") -> Path:
    suffix = f"-{variant}" if variant else ""
    return cache_root() / "openvino" / f"{model.name}-{precision}{suffix}"


def export_command(model: ModelSource, recipe: ExportRecipe, out: Path | str) -> str:
    """The optimum-cli command that does the same export (shown to learners)."""
    args = ["optimum-cli", "export", "openvino", "--model", str(model.repo_id or model.folder), "--task", "text-generation-with-past"]
    args += recipe.cli_flags()
    args.append(str(out))
    return shlex.join(args)


#: What a runtime needs from an export folder; the record file is written last, by our export.
EXPORT_FILES = ("openvino_model.xml", "openvino_model.bin", "config.json")


def is_complete_export(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (*EXPORT_FILES, "phi3_helpers_export.json"))


def export_openvino(model: ModelSource, precision: str = "int4", recipe: ExportRecipe | None = None, force: bool = False, progress=notice) -> Path:
    """Export ``model`` to OpenVINO IR at ``precision`` (cached; atomic; Ctrl-C safe)."""
    recipe = recipe or export_recipe(model, precision)
    out = export_folder(model, recipe.precision, recipe.variant)
    if is_complete_export(out) and not force:
        return out
    from optimum.exporters.openvino.convert import export_tokenizer
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    from transformers import AutoTokenizer

    progress(f"Exporting {model.name} to OpenVINO {recipe.precision} (once; cached in {out}) ...")
    progress("Same as: " + export_command(model, recipe, out))
    q = recipe.quantization_config()
    odd = odd_widths(model, recipe.group_size or 0) if recipe.group_size_fallback else []
    if odd:
        progress(
            f"Layer width {odd[0]} is not a multiple of the int4 group size {recipe.group_size}: "
            "NNCF adjusts the group size for those layers (--group-size-fallback adjust)."
        )
    with atomic_folder(out) as tmp:
        # The Python API of the classic tutorial: export while loading, quantize weights with NNCF.
        ov_model = OVModelForCausalLM.from_pretrained(
            str(model.folder),
            export=True,
            compile=False,
            load_in_8bit=False,  # no automatic int8 for >1B models: the recipe decides
            quantization_config=OVWeightQuantizationConfig(**q) if q else None,
            local_files_only=True,
        )
        if recipe.weight_format == "fp16":
            ov_model.half()  # weights stored as fp16
        ov_model.save_pretrained(tmp)
        del ov_model
        tokenizer = AutoTokenizer.from_pretrained(str(model.folder))
        tokenizer.save_pretrained(tmp)
        export_tokenizer(tokenizer, tmp)  # openvino_tokenizer.xml / openvino_detokenizer.xml for GenAI
        (tmp / "phi3_helpers_export.json").write_text(
            json.dumps(
                {
                    "model": model.name,
                    "precision": recipe.precision,
                    "variant": recipe.variant,
                    "quantization": q,
                    "command": export_command(model, recipe, out),
                    "versions": _versions("optimum-intel", "openvino", "nncf", "transformers"),
                },
                indent=2,
            )
        )
    return out


def _versions(*dists: str) -> dict:
    import importlib.metadata as md

    out = {}
    for d in dists:
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = None
    return out


def check_export_folder(folder: Path) -> None:
    missing = [f for f in EXPORT_FILES if not (Path(folder) / f).is_file()]
    if missing:
        raise ModelFolderError(
            f"OpenVINO folder {folder} is missing {missing[0]}; delete it and export again (python -m phi3_helpers prepare --backend openvino)."
        )


# -- devices -----------------------------------------------------------------------------------
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


def pick_device(device: str | None, found: list[str] | None = None) -> str:
    """Check a device name against what OpenVINO really found; AUTO is always accepted."""
    d = (device or "CPU").strip().upper()
    base = d.split(".", 1)[0].split(":", 1)[0]
    if base not in KNOWN_DEVICES and base not in {"HETERO", "MULTI"}:
        raise UnknownDevice(f"unknown device {device!r}; use one of {', '.join(KNOWN_DEVICES)}.")
    if base in {"AUTO", "HETERO", "MULTI"}:
        return d
    found = available_devices() if found is None else found
    if not any(f == d or f.split(".", 1)[0] == d for f in found):
        raise DeviceUnavailable(
            f"device {d} is not available here (OpenVINO found: {', '.join(found) or 'none'}); use --device CPU or AUTO, "
            "or install the device driver."
        )
    return d


def device_report() -> list[dict]:
    rows = []
    found = available_devices()
    for d in ("CPU", "GPU", "NPU"):
        hits = [f for f in found if f.split(".", 1)[0] == d]
        rows.append(
            {
                "backend": "openvino",
                "device": d,
                "available": bool(hits),
                "detail": "; ".join(device_name(h) for h in hits) if hits else f"OpenVINO found no {d} (driver missing or no such hardware)",
            }
        )
    return rows


def runtime_config(device: str, model_folder: Path) -> dict:
    """Latency-oriented settings and a compiled-model cache folder."""
    cache = cache_root() / "ov_compiled" / Path(model_folder).name
    cache.mkdir(parents=True, exist_ok=True)
    cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "CACHE_DIR": str(cache)}
    if device.split(".", 1)[0] == "CPU":
        # On CPUs with AVX512-BF16/AMX, OpenVINO computes in bf16 by default; that is enough to
        # turn the small offline model's greedy answer into nonsense. f32 activations keep it
        # exact (weights stay int4/int8/fp16). Core Ultra CPUs compute in f32 anyway.
        cfg["INFERENCE_PRECISION_HINT"] = "f32"
    return cfg


# -- backends ----------------------------------------------------------------------------------
class _OpenVINOBase(Backend):
    precisions = PRECISIONS
    export_variant = ""

    def __init__(self, *args, config: dict | None = None, **kw):
        self.extra_config = dict(config or {})
        super().__init__(*args, **kw)

    def _pick_device(self, device: str | None) -> str:
        return pick_device(device)

    def _export(self) -> Path:
        self.ov_folder = export_openvino(self.model, self.precision, recipe=export_recipe(self.model, self.precision, self.export_variant) if self.export_variant else None)
        check_export_folder(self.ov_folder)
        self.prepared_folder = self.ov_folder
        return self.ov_folder

    def _config(self) -> dict:
        cfg = runtime_config(self.device, self.ov_folder)
        cfg.update(self.extra_config)
        return cfg


class OpenVINOGenAIBackend(_OpenVINOBase):
    """OpenVINO GenAI's LLMPipeline: the maintained, fastest path (C++ generation loop).

    Its default (paged-attention) pipeline reuses the KV cache of any prompt prefix it has seen
    (prefix caching); ``reuse_cache=False`` turns that off. ``draft_model=`` (a folder or
    "phi3-mini-draft") or ``prompt_lookup=True`` turn on speculative decoding (see speculative.py).
    """

    name = "openvino"
    runtime = "OpenVINO GenAI"

    def __init__(self, *args, draft_model=None, prompt_lookup: bool = False, **kw):
        self._speculation_asked = (draft_model, prompt_lookup)
        self.speculation = speculative.Speculation()
        super().__init__(*args, **kw)

    def _load(self) -> None:
        import openvino_genai as ov_genai

        self.speculation = speculative.choose(*self._speculation_asked, self.device, self.name)
        folder = self._export()
        self.pipeline = ov_genai.LLMPipeline(str(folder), self.device, **self._pipeline_options())

    def _pipeline_options(self) -> dict:
        import openvino_genai as ov_genai

        opts = self._config()
        spec = self.speculation
        if spec.kind == "draft":
            draft = speculative.resolve_draft(spec.draft_folder)
            speculative.check_same_tokenizer(self.tokenizer, draft)
            self.speculation = speculative.Speculation("draft", draft)
            draft_cfg = {**runtime_config(self.device, draft), **self.extra_config}
            opts["draft_model"] = ov_genai.draft_model(str(draft), self.device, **draft_cfg)
        elif spec.kind == "prompt_lookup":
            opts["prompt_lookup"] = True
        paged = not self.device.startswith("NPU") and str(opts.get("ATTENTION_BACKEND", "PA")).upper() != "SDPA"
        if paged and not self.reuse_cache:
            # the latency-oriented scheduler OpenVINO GenAI uses by default, without prefix caching
            sched = ov_genai.SchedulerConfig()
            sched.enable_prefix_caching = False
            sched.max_num_batched_tokens = sys.maxsize
            opts["scheduler_config"] = sched
        return opts

    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event) -> Iterator[list[int]]:
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
        RUNNING, STOP = ov_genai.StreamingStatus.RUNNING, ov_genai.StreamingStatus.STOP

        def run(emit) -> None:
            class _Streamer(ov_genai.StreamerBase):
                def write(self, token):
                    ids = token if isinstance(token, list) else [token]
                    return STOP if emit(ids) else RUNNING

                def end(self):
                    pass

            self.last_perf = self.pipeline.generate(inputs, cfg, _Streamer()).perf_metrics

        yield from bridge(run, stop)

    def close(self) -> None:
        self.pipeline = None


class OptimumOpenVINOBackend(_OpenVINOBase):
    """optimum-intel's OVModelForCausalLM: the transformers API (generate) on OpenVINO."""

    name = "openvino-optimum"
    runtime = "OpenVINO (optimum-intel)"

    def _pick_device(self, device: str | None) -> str:
        d = pick_device(device)
        if d.startswith("NPU"):
            raise DeviceUnavailable(
                "OVModelForCausalLM keeps dynamic shapes, which the NPU does not compile; use the openvino or npu backend "
                "for the NPU, or --device CPU/GPU here."
            )
        return d

    def _load(self) -> None:
        from optimum.intel import OVModelForCausalLM

        folder = self._export()
        self.model_obj = OVModelForCausalLM.from_pretrained(
            str(folder), export=False, device=self.device, ov_config=self._config(), compile=True
        )

    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event) -> Iterator[list[int]]:
        from .pytorch import hf_generate_stream

        yield from hf_generate_stream(self.model_obj, input_ids, options, stop, self.eos_token_ids, self.tokenizer.pad_token_id)

    def close(self) -> None:
        self.model_obj = None
