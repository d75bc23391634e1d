"""Resolve a model by name or folder: ``phi3-mini`` (the real Phi-3 from the hub: catalog.py), ``smollm2-135m-phi3``
(the offline model, built on first use: offline.py), or a folder. Chosen by ``model=`` or $PHI3_MODEL; with
neither, phi3-mini when the hub answers (or it is downloaded already), else the offline model with a notice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..console import notice  # noqa: F401  (re-exported: backends import it from here)
from ..errors import InvalidOption, ModelFolderError, UnknownModel
from . import hub
from .cache import cache_root
from .offline import OFFLINE_MODEL, build_offline_model

MODEL_ENV = "PHI3_MODEL"
PHI3_MINI = "phi3-mini"
KNOWN_MODELS = (PHI3_MINI, OFFLINE_MODEL)


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: a short name for caches and labels, its Hugging Face folder, its hub repo."""

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
    """Whether the hub (or the mirror in HF_ENDPOINT) gives any HTTP answer, and why not."""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    try:  # huggingface_hub's own client: it refuses every request when HF_HUB_OFFLINE is set
        get_session().head(constants.ENDPOINT + "/", timeout=timeout)
        return True, ""
    except OfflineModeIsEnabled:
        return False, "HF_HUB_OFFLINE is set"
    except Exception as exc:
        return False, f"the Hugging Face hub at {constants.ENDPOINT} is unreachable ({type(exc).__name__})"


def check_model_folder(folder: Path) -> None:
    """Refuse a folder that is not a complete Hugging Face causal-LM folder, saying what is missing."""
    folder = Path(folder)
    if folder.is_file():
        raise ModelFolderError(
            f"{folder} is a file, not a model folder; point --model at the folder that holds config.json."
        )
    problem = _folder_problem(folder)
    if problem:
        raise ModelFolderError(f"{problem}; rebuild it (delete the folder and run `python -m phi3_helpers prepare`) "
                               "or point --model at a complete folder.")


def _folder_problem(folder: Path) -> str | None:
    from safetensors import safe_open

    if not folder.is_dir():
        return f"model folder {folder} does not exist"
    if not (folder / "config.json").is_file():
        return f"model folder {folder} has no config.json"
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        return f"model folder {folder} has no tokenizer (tokenizer.json)"
    parsed = {}
    for name in ("config.json", "tokenizer.json"):
        try:
            parsed[name] = json.loads((folder / name).read_text(encoding="utf-8")) if (folder / name).is_file() else {}
        except ValueError:
            return f"{name} in {folder} is not valid JSON"
    if not isinstance(parsed["config.json"], dict) or "model_type" not in parsed["config.json"]:
        return f"config.json in {folder} does not say its model_type"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return f"model folder {folder} has no *.safetensors weights"
    for path in weights:
        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except Exception as exc:  # safetensors checks the header against the file's length
            why = f"{type(exc).__name__}, {path.stat().st_size:,d} bytes"
            return f"weights file {path.name} in {folder} is truncated or damaged ({why})"
    return None


def offline_model_folder() -> Path:
    return cache_root() / "hf" / OFFLINE_MODEL


def resolve_model(model: str | os.PathLike | None = None) -> ModelSource:
    """Turn a model name or folder into a ready Hugging Face folder (building or downloading it)."""
    return plan_source(model, "transformers", "fp32")[0]  # the checkpoint, as transformers loads it


def _local_model(name: str) -> ModelSource:
    """The offline model (built on first use) or a folder on disk, checked."""
    if name == OFFLINE_MODEL:
        folder = offline_model_folder()
        if not (folder / "config.json").is_file():
            build_offline_model(folder, progress=notice)
    elif Path(name).expanduser().exists() or os.sep in name or name.startswith("."):
        folder = Path(name).expanduser().resolve()
    else:
        raise UnknownModel(f"unknown model {name!r}; use one of {', '.join(KNOWN_MODELS)} or a folder path.")
    check_model_folder(folder)
    return ModelSource(folder.name, folder)


def model_name(model=None, folders=None) -> str:
    """The model the course runs, downloading nothing: ``model``, else $PHI3_MODEL, else phi3-mini when one of its
    ``folders`` (default: all of them) is complete in the cache or the hub answers, else the offline model."""
    chosen = model if model is not None else os.environ.get(MODEL_ENV) or None
    if chosen is not None:
        return str(chosen)
    folders = folders or (hub.CHECKPOINT, *hub.OPENVINO.values(), *hub.ONNX.values())
    if any(f is not None and hub.cached_folder(f, strict=False) is not None for f in folders):
        return PHI3_MINI
    ok, why = hub_reachable()
    if not ok:
        notice(f"{why}: using the offline model {OFFLINE_MODEL} (set {MODEL_ENV}=phi3-mini for the real Phi-3).")
    return PHI3_MINI if ok else OFFLINE_MODEL


def fetch_source(folder, by_default: bool = False) -> ModelSource:
    """phi3-mini's hub ``folder``, downloaded or complete in the cache; ``by_default``, an unreachable hub gives
    the offline model instead."""
    try:
        return ModelSource(PHI3_MINI, hub.fetch(folder), folder.repo_id)
    except hub.HubUnreachable as exc:
        if by_default:  # the hub looked reachable, but the download failed
            why = type(exc).__name__
            notice(f"could not download {folder.label} ({why}): using the offline model {OFFLINE_MODEL}.")
            return _local_model(OFFLINE_MODEL)
        if OFFLINE_MODEL in str(exc):
            raise
        raise type(exc)(f"{exc} Or use the offline model: {MODEL_ENV}={OFFLINE_MODEL}.") from None


def plan_source(model, backend: str, precision: str, target: str | None = None, source: str | None = None):
    """Where ``backend``'s folder comes from, as ``(model, hub_folder, notices)``; nothing prequantized is fetched.

    phi3-mini with a prequantized folder for this backend (catalog.py): its cached folder or a placeholder, and
    that folder. Else the model ready (phi3-mini: the checkpoint, with a notice of the export's cost), and None.
    """
    if isinstance(model, ModelSource):
        return model, None, []
    if source not in (None, "hub", "export"):
        raise InvalidOption(
            f"source must be 'hub' (prequantized download) or 'export' (export locally); got {source!r}."
        )
    folder = None if source == "export" else hub.hub_folder(backend, precision, target)
    name = model_name(model, (folder, hub.CHECKPOINT))
    by_default = model is None and not os.environ.get(MODEL_ENV)  # the default may fall back to the offline model
    if name != PHI3_MINI:
        if source == "hub":
            raise InvalidOption(f"source='hub' is for {PHI3_MINI} only (got {name!r}); drop it.")
        return _local_model(name), None, []
    if folder is None or folder is hub.CHECKPOINT:
        notices = []
        if folder is None and hub.cached_folder(hub.CHECKPOINT, strict=False) is None:
            notices.append(f"{backend} {precision}: {hub.describe_export(precision)}.")
        return fetch_source(hub.CHECKPOINT, by_default=by_default), None, notices
    placeholder = Path(folder.repo_id) / folder.subfolder  # fetched by the backend's prepare step
    return ModelSource(PHI3_MINI, hub.cached_folder(folder, strict=False) or placeholder, folder.repo_id), folder, []


def resolve_prepared(model, backend: str, precision: str, target: str | None = None, source: str | None = None):
    """:func:`plan_source`, then the download: the ModelSource ``backend`` loads as it is (or exports)."""
    src, folder, notices = plan_source(model, backend, precision, target, source)
    for line in notices:
        notice(line)
    return fetch_source(folder) if folder is not None else src
