"""Backend ``npu-classic``: intel-npu-acceleration-library's NPUModelForCausalLM, the first NPU tutorials' path.

The library quantizes the Hugging Face model (CompilerConfig dtype) and compiles its layers for the NPU; then
``generate`` works as in transformers. It is archived and Windows-only: imported only when chosen.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable, DeviceUnavailable, ModelFolderError, UnknownDevice
from .base import Plan
from .hf import GenerateAPI
from .npu import DRIVER_HELP, NPUFallback

LIBRARY = "intel_npu_acceleration_library"
PACKAGE = "intel-npu-acceleration-library"
#: neural-compressor 3.8+ removed an API the library uses; 3.7.1 needs numpy<2 and setuptools<81.
WINDOWS_INSTALL = (
    'pip install "intel-npu-acceleration-library==1.4.0" "neural-compressor==3.7.1" "numpy<2" "setuptools<81"'
)
INSTALL = (f"{WINDOWS_INSTALL} (Windows only; the library is archived, the maintained path needs nothing extra: "
           "load('npu') or --backend npu)")
MIN_DRIVER = 2408  # the oldest NPU driver build the library 1.4.0 accepts without warning
LIBRARY_CACHE = Path("cache") / "models"  # where the library caches compiled models (export=True)


def _quiet_import(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "NPU is not available ... fallback to AUTO": we say it ourselves
        return importlib.import_module(name)


def import_library():
    try:
        return _quiet_import(LIBRARY)
    except ImportError as exc:
        raise BackendUnavailable(f"{PACKAGE} does not import here ({type(exc).__name__}: {exc}); {INSTALL}.") from None


@dataclass(frozen=True)
class ClassicStatus:
    """What the library says about this machine."""

    installed: bool
    version: str = ""
    npu_available: bool | None = None
    driver_version: str = ""
    problem: str = ""

    def describe(self) -> str:
        if not self.installed:
            return self.problem or f"{PACKAGE} not installed (Windows only, archived); maintained path: --backend npu"
        text = f"{PACKAGE} {self.version or '?'}: npu_available() = {self.npu_available}"
        if self.driver_version:
            text += f", NPU driver {self.driver_version}"
            if self.driver_version.isdigit() and int(self.driver_version) < MIN_DRIVER:
                text += f" (older than {MIN_DRIVER}, the library's minimum: update the NPU driver)"
        if self.npu_available is False:
            text += " (the library falls back to CPU)"
        return text + (f"; {self.problem}" if self.problem else "")


def classic_status() -> ClassicStatus:
    """Ask the library (if installed) whether it sees an NPU and which driver it runs on."""
    if importlib.util.find_spec(LIBRARY) is None:
        return ClassicStatus(installed=False)
    try:
        lib = import_library()
    except BackendUnavailable as exc:  # installed but broken (e.g. a dependency at the wrong version)
        return ClassicStatus(installed=False, problem=str(exc))
    version = str(getattr(lib, "__version__", ""))
    try:
        backend = _quiet_import(f"{LIBRARY}.backend")
        available = bool(backend.npu_available())
    except Exception as exc:  # a broken install is a status to show, not a crash
        return ClassicStatus(True, version, None, "", f"its backend failed to load: {type(exc).__name__}: {exc}")
    try:
        driver = str(backend.get_driver_version()) if available else ""
    except Exception:  # when the driver cannot be queried
        driver = ""
    return ClassicStatus(True, version, available, driver)


def compiler_config(lib, precision: str):
    import torch

    dtype = {"int4": lib.int4, "int8": lib.int8, "fp16": torch.float16}[precision]
    return importlib.import_module(f"{LIBRARY}.compiler").CompilerConfig(dtype=dtype)


class ClassicNPUBackend(NPUFallback, GenerateAPI):
    """The archived library on the NPU (its own CPU fallback when there is none); int4, int8 or fp16."""

    name = "npu-classic"
    runtime = PACKAGE
    requires = ("torch", "transformers", LIBRARY)
    install = INSTALL
    precisions = ("int4", "int8", "fp16")

    @classmethod
    def missing(cls) -> str:
        """Also an installed library that does not import says why."""
        reason = super().missing()
        if not reason:
            try:
                import_library()
            except BackendUnavailable as exc:
                reason = str(exc)
        return reason

    @classmethod
    def devices_here(cls) -> list[str | None]:
        return [None]

    @classmethod
    def device_report(cls) -> list[dict]:
        status = classic_status()
        available = bool(status.installed and status.npu_available)
        return [{"backend": cls.name, "device": "NPU", "available": available, "detail": status.describe()}]

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        import_library()  # a clear install message when it is missing
        want = (device or "AUTO").strip().upper()
        if want not in {"AUTO", "NPU"}:
            raise UnknownDevice(f"the classic library chooses its device itself (the NPU, else its own CPU "
                                f"fallback); got {want!r}: leave the device unset.")
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

    def _load(self) -> None:
        # export=False: the library's own cache (./cache/models/*.pt, a pickle) does not reload under torch>=2.6
        lib = import_library()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = lib.NPUModelForCausalLM.from_pretrained(
                    str(self.prepared_folder), config=compiler_config(lib, self.precision), export=False,
                    use_cache=True, attn_implementation="sdpa")
        except Exception as exc:
            if not any(s in f"{type(exc).__name__} {exc}" for s in ("weights_only", "Weights only", "Unpickling")):
                raise
            raise ModelFolderError(
                f"{PACKAGE} found an old compiled copy in {LIBRARY_CACHE.resolve()} that torch cannot reload "
                "(weights_only); delete that folder and load again."
            ) from None
        self.model_obj = model.eval()
