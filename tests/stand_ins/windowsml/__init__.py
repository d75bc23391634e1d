"""STAND-IN for the windowsml package (tests only; see tests/stand_ins/README.md).

The real windowsml (PyPI, Windows only) wraps the Windows ML EP catalog in ctypes and refuses to import
elsewhere ("winml is only supported on Windows"). This stand-in offers the names of its API that
phi3_helpers/backends/winml.py calls, as windowsml 2.5.96's README documents them:

- ``EpCatalog()`` (a context manager) and ``EpCatalog.find_all_providers() -> list[ExecutionProvider]``
- ``ExecutionProvider``: ``name``, ``version``, ``library_path``, ``ready_state``, ``certification``,
  ``ensure_ready()``
- the enums ``EpReadyState`` (Ready, NotReady, NotPresent) and ``EpCertification`` (Unknown, Certified, Uncertified)

It downloads, installs and loads nothing: tests set ``PROVIDERS`` (what the catalog reports) and read ``CALLS``
(what the adapter called). A library path it hands out names no real file, so registering it with the real
onnxruntime_genai fails, as a broken EP would. Only the adapter's wiring is tested with it.
"""

from __future__ import annotations

from enum import IntEnum

STAND_IN = True
__version__ = "stand-in"


class EpReadyState(IntEnum):
    Ready = 0
    NotReady = 1
    NotPresent = 2


class EpCertification(IntEnum):
    Unknown = 0
    Certified = 1
    Uncertified = 2


#: What the catalog reports: one dict per EP (name, version, ready, library_path); tests set it.
PROVIDERS: list[dict] = []
#: Every call the adapter made: (what, EP name or None).
CALLS: list[tuple[str, str | None]] = []


class ExecutionProvider:
    """A handle to one EP of the catalog (the real one reads these fields from the native EpInfo)."""

    def __init__(self, info: dict, catalog: "EpCatalog") -> None:
        self._info, self._catalog = info, catalog

    def _check_open(self) -> None:
        if self._catalog.closed:  # like the real handles: owned by the catalog, dead once it is closed
            raise RuntimeError("the EP handle was used after its EpCatalog was closed")

    @property
    def name(self) -> str:
        return self._info["name"]

    @property
    def version(self) -> str:
        return self._info.get("version", "1.0.0")

    @property
    def ready_state(self) -> EpReadyState:
        return EpReadyState[self._info.get("ready", "Ready")]

    @property
    def certification(self) -> EpCertification:
        return EpCertification[self._info.get("certification", "Certified")]

    @property
    def library_path(self) -> str:
        """Empty until the EP is ready (assumed from upstream winml.py, which skips EPs with an empty path)."""
        self._check_open()
        return self._info.get("library_path", "") if self.ready_state == EpReadyState.Ready else ""

    def ensure_ready(self) -> None:
        """The real one blocks while Windows Update downloads and installs the EP."""
        self._check_open()
        CALLS.append(("ensure_ready", self.name))
        if self._info.get("fails"):  # the real one raises OSError when the native call fails
            raise OSError(self._info["fails"])
        if self._info.get("installs", True):
            self._info["ready"] = "Ready"


class EpCatalog:
    def __init__(self) -> None:
        CALLS.append(("EpCatalog", None))
        self.closed = False

    def find_all_providers(self) -> list[ExecutionProvider]:
        CALLS.append(("find_all_providers", None))
        return [ExecutionProvider(info, self) for info in PROVIDERS]

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "EpCatalog":
        return self

    def __exit__(self, *args) -> None:
        self.close()
