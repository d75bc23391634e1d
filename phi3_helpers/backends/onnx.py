"""Phi-3 on ONNX Runtime GenAI: DirectML on a Windows PC's GPU, CUDA on NVIDIA, CPU anywhere.

The execution provider follows what is installed (one ONNX Runtime GenAI package per machine):

  onnxruntime-genai-directml  -> dml   (Windows, any DirectX 12 GPU)
  onnxruntime-genai-cuda      -> cuda  (NVIDIA GPU with CUDA)
  onnxruntime-genai           -> cpu

A one-line notice says which provider runs and why. Asking for ``dml`` (or ``cuda``) where its
package is missing falls back to the CPU with a notice, or raises a clear error with
``fallback_to_cpu=False``. :func:`choose_provider` is a pure function of the installed packages,
so every case can be tested on any machine.

Generation is the runtime's own token loop (og.Generator: append_tokens, then
generate_next_token until done). It is a pull loop, so it runs in the reader's thread with no
queue bridge: Stop is checked before every token and simply ends the loop, inside the runtime.
Token ids come from the course's Hugging Face tokenizer (shared with every backend), so the same
prompt gives the same ids everywhere.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import BackendUnavailable, DeviceUnavailable, InvalidOption, ModelFolderError, UnknownDevice, UnknownPrecision
from ..models import MODEL_ENV, PHI3_MINI, ModelSource, hub_reachable, notice
from ..options import GenerationOptions
from .base import Backend
from .onnx_build import (
    PREBUILT_REPO,
    TARGET_NAMES,
    build_onnx_model,
    build_record,
    built_for,
    check_combination,
    check_onnx_folder,
    fetch_prebuilt_phi3_dml,
    is_onnx_folder,
)

# -- which execution provider -------------------------------------------------------------------
#: provider -> the ONNX Runtime GenAI package that brings it
GENAI_PACKAGES = {"dml": "onnxruntime-genai-directml", "cuda": "onnxruntime-genai-cuda", "cpu": "onnxruntime-genai"}
INSTALL_HINTS = {
    "dml": "on Windows: pip install onnxruntime-genai-directml==0.13.1 (and no plain onnxruntime beside it)",
    "cuda": "with an NVIDIA GPU and CUDA 12: pip install onnxruntime-genai-cuda",
    "cpu": "pip install -r requirements.txt",
}
_DEVICE_NAMES = {"auto": None, "": None, "cpu": "cpu", "dml": "dml", "directml": "dml", "cuda": "cuda", "gpu": "gpu"}


@dataclass(frozen=True)
class ProviderChoice:
    """The execution provider to run on, what was asked, and why (one line)."""

    provider: str  # cpu | dml | cuda
    asked: str | None  # None (auto), cpu, dml, cuda or gpu
    reason: str

    @property
    def fell_back(self) -> bool:
        """A GPU provider was asked but is not installed, so the CPU runs instead."""
        return self.asked in {"dml", "cuda", "gpu"} and self.provider == "cpu"

    @property
    def notice(self) -> str:
        return f"ONNX Runtime GenAI runs on {TARGET_NAMES[self.provider]}: {self.reason}"


def installed_packages() -> frozenset[str]:
    """The ONNX Runtime (GenAI) distributions installed here, by their PyPI names."""
    names = set(GENAI_PACKAGES.values()) | {"onnxruntime", "onnxruntime-directml", "onnxruntime-gpu"}
    found = set()
    for name in names:
        try:
            md.version(name)
            found.add(name)
        except md.PackageNotFoundError:
            pass
    return frozenset(found)


def package_conflicts(installed: Iterable[str]) -> list[str]:
    """Package mixes known to break provider loading, each with its fix (one line each)."""
    have = set(installed)
    out = []
    genai = [p for p in GENAI_PACKAGES.values() if p in have]
    if len(genai) > 1:
        out.append(f"{' and '.join(genai)} are both installed and share one module; keep only one (pip uninstall {genai[-1]}).")
    if "onnxruntime-directml" in have and "onnxruntime" in have:
        out.append(
            "plain onnxruntime is installed beside onnxruntime-directml (symptom: 'Specified provider is not supported'); "
            "pip uninstall onnxruntime onnxruntime-directml, then pip install onnxruntime-genai-directml==0.13.1."
        )
    return out


def normalize_device(device: str | None) -> str | None:
    """'DML', 'DirectML', 'gpu', 'auto'... -> dml, gpu, None; unknown names are refused."""
    key = (device or "").strip().lower()
    if key not in _DEVICE_NAMES:
        extra = " (for the NPU use the npu or openvino backend)" if key.startswith("npu") else ""
        raise UnknownDevice(f"unknown device {device!r} for the onnx backend; use auto, cpu, dml (DirectML) or cuda{extra}.")
    return _DEVICE_NAMES[key]


def choose_provider(device: str | None, installed: Iterable[str], fallback_to_cpu: bool = True) -> ProviderChoice:
    """Pick the execution provider from the device asked and the packages installed.

    Pure: ``installed`` is a set of distribution names (see :func:`installed_packages`).
    """
    have = set(installed)
    asked = normalize_device(device)
    if not any(p in have for p in GENAI_PACKAGES.values()):
        raise BackendUnavailable(f"no ONNX Runtime GenAI package is installed; {INSTALL_HINTS['cpu']} (or {INSTALL_HINTS['dml']}).")
    present = [p for p in ("dml", "cuda") if GENAI_PACKAGES[p] in have]
    if asked is None:
        if present:
            p = present[0]
            return ProviderChoice(p, None, f"{GENAI_PACKAGES[p]} is installed.")
        return ProviderChoice(
            "cpu", None, f"only the CPU package {GENAI_PACKAGES['cpu']} is installed (DirectML needs {GENAI_PACKAGES['dml']}, on Windows)."
        )
    if asked == "cpu":
        return ProviderChoice("cpu", "cpu", "the CPU was asked for.")
    wanted = [asked] if asked in {"dml", "cuda"} else ["dml", "cuda"]  # gpu: whichever is installed
    for p in wanted:
        if p in present:
            return ProviderChoice(p, asked, f"{TARGET_NAMES[p]} was asked for and {GENAI_PACKAGES[p]} is installed.")
    label = TARGET_NAMES[wanted[0]] if asked != "gpu" else "a GPU"
    pkgs = " or ".join(GENAI_PACKAGES[p] for p in wanted)
    where = " (it exists for Windows only)" if "dml" in wanted and sys.platform != "win32" else ""
    if not fallback_to_cpu:
        raise DeviceUnavailable(
            f"{label} was asked for, but {pkgs} is not installed{where}; {INSTALL_HINTS[wanted[0]]}, or use device='cpu'."
        )
    return ProviderChoice("cpu", asked, f"{label} was asked for, but {pkgs} is not installed{where}; falling back to the CPU.")


def device_report() -> list[dict]:
    """One row per ONNX Runtime GenAI provider (dml, cuda, cpu): available here, and why not."""
    have = installed_packages()
    rows = []
    try:
        import onnxruntime_genai as og
    except Exception as exc:  # a broken install must still be reported, not crash the listing
        og = None
        broken = f"onnxruntime_genai does not import ({type(exc).__name__}: {exc})"
    probes = {"dml": "is_dml_available", "cuda": "is_cuda_available"}
    for p in ("dml", "cuda", "cpu"):
        pkg = GENAI_PACKAGES[p]
        if og is None:
            ok, detail = False, broken
        elif p == "cpu":
            ok = True
            pkgs = ", ".join(f"{n} {md.version(n)}" for n in GENAI_PACKAGES.values() if n in have)
            detail = f"{pkgs}; {os.cpu_count()} logical CPUs"
        elif pkg not in have:
            ok = False
            where = " (Windows only)" if p == "dml" and sys.platform != "win32" else ""
            detail = f"{pkg} is not installed{where}; {INSTALL_HINTS[p]}"
        else:
            try:
                ok = bool(getattr(og, probes[p])())
            except Exception as exc:
                ok = False
                detail = f"{pkg} {md.version(pkg)} is installed but the provider did not load ({exc})"
            else:  # a build flag: the GPU and its driver are only tried when a model loads
                what = "DirectML (needs a DirectX 12 GPU driver)" if p == "dml" else "CUDA (needs an NVIDIA driver and CUDA 12)"
                detail = f"{pkg} {md.version(pkg)}: built with {what}" if ok else f"{pkg} {md.version(pkg)} is installed but not built with {TARGET_NAMES[p]}; reinstall it"
        rows.append({"backend": "onnx", "device": p.upper(), "available": ok, "detail": detail})
    for c in package_conflicts(have):
        rows.append({"backend": "onnx", "device": "-", "available": False, "detail": "conflict: " + c})
    return rows


# -- the backend ---------------------------------------------------------------------------------
class OnnxGenAIBackend(Backend):
    """Phi-3 through ONNX Runtime GenAI.

    ``model`` may also be a ready GenAI folder (with genai_config.json). Extra options:
    ``target`` the provider to build the model for (default: the device asked, else the one
    chosen), ``fallback_to_cpu`` (default True), ``prebuilt`` (phi3-mini int4 on DirectML:
    use Microsoft's prebuilt folder; default yes), ``threads`` (CPU threads; default one per physical core),
    ``rebuild`` (build the folder again).
    """

    name = "onnx"
    runtime = "ONNX Runtime GenAI"
    precisions = ("int4", "fp16", "fp32")

    def __init__(
        self,
        model: ModelSource | str | os.PathLike | None = None,
        device: str | None = None,
        precision: str | None = None,
        *,
        target: str | None = None,
        fallback_to_cpu: bool = True,
        prebuilt: bool | None = None,
        threads: int | None = None,
        rebuild: bool = False,
        reuse_cache: bool = True,
    ):
        self.fallback_to_cpu = bool(fallback_to_cpu)
        self.threads = threads
        self.rebuild = rebuild
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InvalidOption(f"threads must be a whole number of CPU threads, 1 or more (got {threads!r}).")
        self.choice = choose_provider(device, installed_packages(), self.fallback_to_cpu)
        self.target = self.target_built = self._pick_target(target)
        self._ready_folder: Path | None = None
        source = model
        if not isinstance(model, ModelSource) and model is not None and is_onnx_folder(Path(model).expanduser()):
            self._ready_folder = Path(model).expanduser().resolve()
            source = ModelSource(self._ready_folder.name, self._ready_folder)
        elif self._use_prebuilt(model, precision, prebuilt):
            self._ready_folder = fetch_prebuilt_phi3_dml()
            source = ModelSource(PHI3_MINI, self._ready_folder, PREBUILT_REPO)
        self._genai: dict = check_onnx_folder(self._ready_folder) if self._ready_folder else {}
        super().__init__(source, device, precision, reuse_cache=reuse_cache)

    def _pick_target(self, target: str | None) -> str:
        if target is not None:
            t = _DEVICE_NAMES.get(str(target).strip().lower())
            if t not in TARGET_NAMES:
                raise UnknownDevice(f"target {target!r} is not a provider to build for; use cpu, dml or cuda.")
            return t
        if self.choice.asked in {"dml", "cuda"}:
            return self.choice.asked  # build what was asked for, even when it runs on the CPU here
        return self.choice.provider

    def _use_prebuilt(self, model, precision, prebuilt: bool | None) -> bool:
        """phi3-mini, int4, for DirectML: Microsoft's prebuilt folder (about 2 GB) beats downloading
        7.6 GB of weights and building. Only that case; ``prebuilt=False`` builds instead."""
        if prebuilt is False:
            return False
        if self.target != "dml" or (precision or self.precisions[0]).lower() != "int4":
            if prebuilt:
                raise InvalidOption("prebuilt=True is only for phi3-mini at int4 for DirectML (device='dml'); drop it to build the model.")
            return False
        name = model.name if isinstance(model, ModelSource) else model if model is not None else os.environ.get(MODEL_ENV)
        if name is None:  # the default model: the real Phi-3 when the hub is reachable
            name = PHI3_MINI if hub_reachable()[0] else None
        if prebuilt and name != PHI3_MINI:
            raise InvalidOption(f"prebuilt=True is only for {PHI3_MINI} (int4, DirectML), not {name!r}; drop it to build the model.")
        return name == PHI3_MINI

    # -- checks the base class calls first -------------------------------------------------------
    def _check_precision(self, precision: str | None) -> str:
        if self._ready_folder is not None:
            built = str(build_record(self._ready_folder).get("precision") or ("int4" if self.model_is_prebuilt else "")).lower()
            if precision and built and precision.lower() != built:
                raise UnknownPrecision(f"{self._ready_folder} holds a {built} model; drop precision= or build a {precision} folder.")
            return (precision or built or "as built").lower()
        p = super()._check_precision(precision)
        check_combination(p, self.target)
        return p

    @property
    def model_is_prebuilt(self) -> bool:
        return self._ready_folder is not None and PREBUILT_REPO.split("/")[1] in str(self._ready_folder)

    def _pick_device(self, device: str | None) -> str:
        return self.choice.provider.upper()

    @property
    def context_length(self) -> int:
        m = self._genai.get("model", {})
        n = m.get("context_length") or self._genai.get("search", {}).get("max_length")
        return int(n) if n else self.model.context_length

    def describe(self) -> str:
        return f"{self.name} | {self.device} | {self.precision} (built for {TARGET_NAMES.get(self.target_built, self.target_built)}) | {self.model.name}"

    # -- load ------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime_genai does not import ({exc}); {INSTALL_HINTS['cpu']}.") from None
        if self._ready_folder is not None:
            folder = self._ready_folder
        else:
            folder = build_onnx_model(self.model, self.precision, self.target, rebuild=self.rebuild)
            self._genai = check_onnx_folder(folder)
        self.prepared_folder = folder
        self.target_built = built_for(self._genai)
        config = og.Config(str(folder))
        line = self.choice.notice
        if self.target_built != self.choice.provider:
            line = line.rstrip(".") + "; " + self._reconcile(config)
        if self.choice.provider == "cpu" and hasattr(config, "overlay"):
            # ORT GenAI runs the CPU on one thread unless told otherwise. 0 is ONNX Runtime's own
            # default, one thread per physical core (logical cores would oversubscribe SMT laptops).
            # Set at load time, so a folder stays right for any machine it is copied to.
            n = self.threads or 0
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": n}}}}))
        notice(line)
        try:
            self.og_model = og.Model(config)
        except Exception as exc:
            raise self._explain(exc, folder) from None
        # int4 (and fp16) kernels compute a token's keys and values in a one-token decode step slightly
        # differently than in a prefill; fp32 is exact. Elsewhere an answer is prefilled again with the
        # next turn (measured: otherwise greedy chats drift from the same chat without reuse).
        self.kv.decoded_reusable = self.precision == "fp32"
        eos = self._genai.get("model", {}).get("eos_token_id")
        extra = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
        self.eos_token_ids = frozenset(self.eos_token_ids | {int(i) for i in extra})

    def _reconcile(self, config) -> str:
        """A folder built for another provider: run it on the CPU, or say how to fix it."""
        built, runs = self.target_built, self.choice.provider
        folder = self.prepared_folder
        if runs == "cpu" and built in GENAI_PACKAGES:
            if not self.fallback_to_cpu:
                raise DeviceUnavailable(
                    f"{folder} was built for {TARGET_NAMES[built]}, which is not installed here; "
                    f"build it for the CPU (target='cpu'), install {GENAI_PACKAGES[built]}, or allow fallback_to_cpu=True."
                )
            config.clear_providers()  # the ONNX graph itself runs on the CPU provider too
            return f"the model folder was built for {TARGET_NAMES[built]} and runs on the CPU here."
        name = TARGET_NAMES.get(built, built)
        raise ModelFolderError(
            f"{folder} was built for {name}, but ONNX Runtime GenAI runs on {TARGET_NAMES[runs]} here; build it for "
            f"{TARGET_NAMES[runs]} (python -m phi3_helpers prepare --backend onnx --device {runs}) or use device='cpu'."
        )

    def _explain(self, exc: Exception, folder: Path) -> Exception:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "provider" in msg.lower() or "interface not available" in msg.lower():
            return DeviceUnavailable(
                f"ONNX Runtime GenAI could not start the model's execution provider ({msg}); check `python -m phi3_helpers devices` "
                "and that only one ONNX Runtime GenAI package is installed, or use device='cpu'."
            )
        return ModelFolderError(f"ONNX Runtime GenAI could not load {folder} ({msg}); delete the folder and build it again.")

    # -- generate ----------------------------------------------------------------------------
    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event) -> Iterator[list[int]]:
        # One og.Generator is kept between answers (as in onnxruntime-genai's model-chat.py): a new
        # prompt rewinds it to the part it shares with what the generator holds and appends the rest.
        generator, keep = self._generator(options, input_ids)
        held = list(input_ids[:keep])  # the tokens whose keys and values the generator has computed
        try:
            if stop.is_set():
                return
            if keep < generator.token_count():
                generator.rewind_to(keep)
            generator.append_tokens(list(input_ids[keep:]))  # the prompt (prefill) past the reused part
            held = list(input_ids)
            pending: list[int] = []
            produced = 0
            while not generator.is_done() and not stop.is_set():
                generator.generate_next_token()
                # a new token enters the KV cache only when the next step feeds it; the next prompt
                # rewinds to before the last one and feeds it again, not relying on that step
                held += pending
                pending = [int(t) for t in generator.get_next_tokens()]
                produced += len(pending)
                yield pending
                if produced >= options.max_new_tokens or any(i in self.eos_token_ids for i in pending):
                    break
        except GeneratorExit:  # the reader stopped (Stop): what the generator holds is still right
            raise
        except BaseException:
            self.kv.reset()  # the generator's state is unknown after an error: a fresh one next time
            raise
        finally:
            if self.kv.enabled and self.kv.runtime is not None:
                self.kv.hold(held, prefilled=min(len(held), len(input_ids)))
            else:
                self.kv.reset()  # reuse off: frees the KV cache now, not at the next garbage collection
            del generator

    def _generator(self, options: GenerationOptions, input_ids: list[int]):
        """The kept og.Generator and how many of its tokens the prompt keeps, or a fresh one and 0."""
        import onnxruntime_genai as og

        search: dict = {"do_sample": options.sampling}
        if options.sampling:
            search.update(temperature=options.temperature, top_p=options.top_p)
        if self.kv.enabled:
            # the session's generator spans the whole context; max_new_tokens is counted here
            search["max_length"] = self.context_length
            kept = self.kv.runtime
            if kept is not None and kept[0] == search:
                return kept[1], self.kv.plan(input_ids)
            self.kv.reset()
        else:
            search["max_length"] = min(len(input_ids) + options.max_new_tokens, self.context_length)
        params = og.GeneratorParams(self.og_model)
        params.set_search_options(**search)
        generator = og.Generator(self.og_model, params)
        if self.kv.enabled:
            self.kv.runtime = (search, generator)
        self.kv.last_reused, self.kv.last_prefilled = 0, len(input_ids)
        return generator, 0

    def close(self) -> None:
        self.kv.reset()
        self.og_model = None
