"""Backend ``npu-classic``: the classic NPU path, intel-npu-acceleration-library's NPUModelForCausalLM.

This is how the first NPU tutorials ran Phi-3: load the Hugging Face model through the library,
which quantizes it (CompilerConfig dtype int4 / int8 / fp16) and compiles its layers for the NPU,
then call ``generate`` as with any transformers model.

The library is archived (end of life; Intel points to OpenVINO / OpenVINO GenAI instead) and
installs on Windows only. It is kept here so the course can show the classic code next to the
maintained path (``load("npu-classic")``, or ``load("npu")`` with PHI3_NPU_PATH=classic). The library
is imported only when this backend is chosen or listed.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import BackendUnavailable, DeviceUnavailable, ModelFolderError, UnknownDevice
from ..options import GenerationOptions
from .base import Backend, Plan

LIBRARY = "intel_npu_acceleration_library"
PACKAGE = "intel-npu-acceleration-library"
#: The pins that make the library import: neural-compressor 3.8+ removed an API it
#: uses, and neural-compressor 3.7.1 needs numpy<2 and setuptools<81.
WINDOWS_INSTALL = (
    'pip install "intel-npu-acceleration-library==1.4.0" "neural-compressor==3.7.1" "numpy<2" "setuptools<81"'
)
PRECISIONS = ("int4", "int8", "fp16")
#: The oldest NPU driver build the library 1.4.0 accepts without warning (get_driver_version()).
MIN_DRIVER = 2408
#: Where the library caches compiled models when export=True (relative to the working folder).
LIBRARY_CACHE = Path("cache") / "models"


def missing_library_message(reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    return (
        f"the classic NPU path needs {PACKAGE}, which is not installed here{why}. It installs on Windows only: "
        f"{WINDOWS_INSTALL}. It is archived (end of life); the maintained path needs nothing extra: "
        "load('npu') or --backend npu (OpenVINO GenAI)."
    )


def import_library(import_module: Callable = importlib.import_module):
    """The library's top-level module, or a BackendUnavailable that says how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "NPU is not available ... fallback to AUTO": we say it ourselves
            return import_module(LIBRARY)
    except ImportError as exc:
        reason = "" if getattr(exc, "name", None) == LIBRARY else f"{type(exc).__name__}: {exc}"
        raise BackendUnavailable(missing_library_message(reason)) from None


# -- what the library reports --------------------------------------------------------------
@dataclass(frozen=True)
class ClassicStatus:
    """What intel-npu-acceleration-library says about this machine."""

    installed: bool
    version: str = ""
    npu_available: bool | None = None
    driver_version: str = ""
    problem: str = ""

    def describe(self) -> str:
        if not self.installed:
            return (
                f"{PACKAGE} not installed ({self.problem or 'Windows only, archived'}); maintained path: --backend npu"
            )
        text = f"{PACKAGE} {self.version or '?'}: npu_available() = {self.npu_available}"
        if self.driver_version:
            text += f", NPU driver {self.driver_version}"
            if self.driver_version.isdigit() and int(self.driver_version) < MIN_DRIVER:
                text += f" (older than {MIN_DRIVER}, the library's minimum: update the NPU driver)"
        if self.npu_available is False:
            text += " (the library falls back to CPU)"
        if self.problem:
            text += f"; {self.problem}"
        return text


def classic_status(import_module: Callable = importlib.import_module) -> ClassicStatus:
    """Ask the library (if installed) whether it sees an NPU and which driver it runs on.

    ``import_module`` is injectable so tests can hand in what the library would report.
    """
    try:
        lib = import_library(import_module)
    except BackendUnavailable:
        return ClassicStatus(installed=False)
    version = str(getattr(lib, "__version__", ""))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = import_module(f"{LIBRARY}.backend")
        available = bool(backend.npu_available())
    except Exception as exc:  # a broken install is a status to show, not a crash
        return ClassicStatus(True, version, None, "", f"its backend failed to load: {type(exc).__name__}: {exc}")
    driver = ""
    if available:
        try:
            driver = str(backend.get_driver_version())
        except Exception:  # raises when the driver cannot be queried
            driver = ""
    return ClassicStatus(True, version, available, driver)


# -- loading and generating ----------------------------------------------------------------
def compiler_config(lib, precision: str, import_module: Callable = importlib.import_module):
    """CompilerConfig(dtype=...) for a course precision name, as the library documents it."""
    import torch

    compiler = import_module(f"{LIBRARY}.compiler")
    dtypes = {"int4": lambda: lib.int4, "int8": lambda: lib.int8, "fp16": lambda: torch.float16}
    return compiler.CompilerConfig(dtype=dtypes[precision]())


def _is_stale_cache_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "weights_only" in text or "Weights only load failed" in text or "UnpicklingError" in text


DRIVER_HELP = "install or update the Intel NPU driver (Windows: Device Manager > Neural processors > Intel(R) AI Boost)"


class ClassicNPUBackend(Backend):
    """The archived library on the NPU (its own CPU fallback when there is none); int4, int8 or fp16."""

    name = "npu-classic"
    runtime = "intel-npu-acceleration-library"
    requires = ("torch", "transformers", LIBRARY)
    install = WINDOWS_INSTALL
    precisions = PRECISIONS

    @classmethod
    def missing(cls) -> str:
        try:
            import_library()
        except BackendUnavailable as exc:
            return str(exc)
        return super().missing()

    @classmethod
    def devices_here(cls) -> list[str | None]:
        return [None]

    @classmethod
    def device_report(cls) -> list[dict]:
        status = classic_status()
        return [
            {
                "backend": cls.name, "device": "NPU", "available": bool(status.installed and status.npu_available),
                "detail": status.describe(),
            }
        ]

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        import_library()  # a clear install message when it is missing
        want = (device or "AUTO").strip().upper()
        if want not in {"AUTO", "NPU"}:
            raise UnknownDevice(
                f"the classic library chooses its device itself (the NPU, else its own CPU fallback); got {want!r}: "
                "leave the device unset."
            )
        status = classic_status()
        settings["fallback"] = not status.npu_available
        if status.npu_available:
            return "NPU"
        if want == "NPU":
            raise DeviceUnavailable(f"device NPU was asked for, but {status.describe()}; {DRIVER_HELP}.")
        notices.append(f"No NPU here ({PACKAGE}: npu_available() is False): the library falls back to CPU.")
        return "CPU"

    @classmethod
    def prepared_path(cls, plan: Plan) -> Path:
        return plan.model.folder  # the library quantizes in memory: nothing is exported

    @property
    def fallback(self) -> bool:
        return bool(self.plan.settings.get("fallback"))

    def _load(self) -> None:
        """NPUModelForCausalLM from the Hugging Face folder, ``export=False``: the library's own cache
        (``./cache/models/*.pt``, a pickled module) cannot be reloaded under torch>=2.6 (``weights_only``)."""
        lib = import_library()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = lib.NPUModelForCausalLM.from_pretrained(
                    str(self.prepared_folder), config=compiler_config(lib, self.precision), export=False,
                    use_cache=True, attn_implementation="sdpa")
        except Exception as exc:
            if _is_stale_cache_error(exc):
                raise ModelFolderError(
                    f"{PACKAGE} found an old compiled copy in {LIBRARY_CACHE.resolve()} that torch cannot reload "
                    "(weights_only); delete that folder and load again."
                ) from None
            raise
        self.model_obj = model.eval()

    def stream_tokens(self, input_ids, options: GenerationOptions, stop: threading.Event) -> Iterator[list[int]]:
        from .hf import hf_generate_stream

        yield from hf_generate_stream(
            self.model_obj, input_ids, options, stop, self.eos_token_ids, self.tokenizer.pad_token_id)

    def describe(self) -> str:
        where = self.device + (" (no NPU: fallback)" if self.fallback else "")
        return f"{self.name} | {where} | {self.precision} | {self.model.name} | {self.runtime}"

    def close(self) -> None:
        self.model_obj = None
