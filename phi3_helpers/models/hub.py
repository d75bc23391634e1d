"""The real Phi-3 from the Hugging Face hub: the plan and the checked download of a catalog folder.

huggingface_hub does the work (its cache, HF_ENDPOINT, HF_HUB_OFFLINE). A download is complete when every planned
file has the size the hub reported; the sizes are then recorded in ``<HF cache>/models--ORG--NAME/phi3_helpers/``.
A cached folder without that record, or with a file missing or truncated, is completed online, refused offline.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants

from ..errors import ModelFolderError, Phi3Error
from .cache import damaged_files
from .catalog import CHECKPOINT, EXPORT_OUTPUT_BYTES, ONNX, OPENVINO, REVISION_ENV  # noqa: F401  (re-exported)
from .catalog import HubFolder, describe_export, gb, hub_folder


class HubError(ModelFolderError):
    """The hub (or mirror) could not give what was asked: unknown repo or folder, an HTTP error."""


class HubUnreachable(HubError):
    """No answer from the hub or mirror (or HF_HUB_OFFLINE is set), and nothing complete in the cache."""


class DiskTooSmall(Phi3Error):
    pass


class DownloadIncomplete(ModelFolderError):
    """A cached folder is missing a file, has a truncated one, or was never finished."""


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds ``path`` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _storage(folder: HubFolder) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=folder.repo_id, repo_type="model")


@dataclass
class Plan:
    """What a download would fetch: files and sizes as the hub reports them, those not cached, the disk free."""

    folder: HubFolder
    commit: str
    files: dict[str, int]  # repo path -> bytes
    missing: list[str]  # missing or damaged in the cache
    free_bytes: int

    @property
    def snapshot(self) -> Path:
        return _storage(self.folder) / "snapshots" / self.commit

    @property
    def to_download(self) -> int:
        return sum(self.files[p] for p in self.missing)

    def lines(self) -> list[str]:
        sub = f"  folder {self.folder.subfolder}" if self.folder.subfolder else ""
        out = [f"repo {self.folder.repo_id}  revision {self.commit}{sub}"]
        out += [f"  {'get' if p in self.missing else 'cached':6} {n:>14,d}  {p}" for p, n in sorted(self.files.items())]
        return out + [f"total {gb(sum(self.files.values()))}, to download {gb(self.to_download)}, "
                      f"free {gb(self.free_bytes)} in {constants.HF_HUB_CACHE} (sizes from the hub)"]


def make_plan(folder: HubFolder) -> Plan:
    """Ask the hub (or the mirror in HF_ENDPOINT) which files the folder has and their sizes (2 requests)."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        info = api.model_info(folder.repo_id, revision=folder.pinned())
        names = [s.rfilename for s in info.siblings or [] if folder.wanted(s.rfilename)]
        infos = api.get_paths_info(folder.repo_id, names, revision=info.sha) if names else []
    except Exception as exc:
        raise explain(exc, folder) from None
    if not names:
        raise HubError(
            f"{folder.repo_id} at {folder.pinned()} has no files under {folder.subfolder or 'its root'} matching "
            f"{', '.join(folder.patterns)}; check the repo and folder on {constants.ENDPOINT} (or set {REVISION_ENV})."
        )
    files = {i.path: int(i.size) for i in infos if getattr(i, "size", None) is not None}
    snapshot = _storage(folder) / "snapshots" / str(info.sha)  # its symlinks lead to the blobs
    return Plan(folder, str(info.sha), files, damaged_files(snapshot, files), free_bytes(constants.HF_HUB_CACHE))


def explain(exc: BaseException, folder: HubFolder) -> Phi3Error:
    """A huggingface_hub/httpx error as one line that names the fix."""
    from huggingface_hub import errors as hf

    where = f"{folder.label} on {constants.ENDPOINT}"
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return HubUnreachable(f"{where} is not in the cache and HF_HUB_OFFLINE is set; unset it to download.")
    if isinstance(exc, hf.RevisionNotFoundError):
        return HubError(f"{where} has no revision {folder.pinned()!r}; set {REVISION_ENV}=main or update the course.")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return HubError(f"{where}: no such repo (404); check HF_ENDPOINT points at a mirror that serves it.")
    if isinstance(exc, hf.HfHubHTTPError) and exc.response is not None:
        code = exc.response.status_code
        return HubError(f"{where} answered HTTP {code}; try again later, or check the mirror's log (HF_ENDPOINT).")
    return HubUnreachable(f"could not reach {where} ({type(exc).__name__}); check the network or HF_ENDPOINT, "
                          "or use PHI3_MODEL=smollm2-135m-phi3.")


def _record_path(folder: HubFolder, commit: str) -> Path:
    sub = folder.subfolder.replace("/", "--")
    return _storage(folder) / "phi3_helpers" / (f"{commit}--{sub}.json" if sub else f"{commit}.json")


def problems(snapshot: Path, files: dict[str, int]) -> list[str]:
    """What is wrong with a snapshot against the sizes the hub reported ([] when complete)."""
    return [f"{p} is {'truncated' if (snapshot / p).is_file() else 'missing'}" for p in damaged_files(snapshot, files)]


def cached_folder(folder: HubFolder, strict: bool = True) -> Path | None:
    """The complete cached folder; None when nothing was downloaded, or when it is damaged and not ``strict``
    (``strict``: raise DownloadIncomplete with the fix)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # huggingface_hub finds the pinned revision in its cache (a commit, or refs/<name>)
        snapshot = Path(snapshot_download(folder.repo_id, revision=folder.pinned(), local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    record = _record_path(folder, snapshot.name)
    bad = problems(snapshot, json.loads(record.read_text())["files"]) if record.is_file() else []
    if record.is_file() and not bad:
        return snapshot / folder.subfolder
    if not strict:
        return None
    why = f"cached {folder.label}: {bad[0]}" if bad else f"the download of {folder.label} was not finished"
    raise DownloadIncomplete(f"{why}; connect to the hub (or the mirror in HF_ENDPOINT) and run the same command "
                             "again to finish it (only what is missing is downloaded).")


def fetch(folder: HubFolder, progress=None) -> Path:
    """The folder, downloaded (only the planned files) and checked; from the cache when complete."""
    from . import notice

    say = progress or notice
    try:
        plan = make_plan(folder)
    except HubError as exc:  # offline, or the hub away or failing: a complete cached copy will do
        found = cached_folder(folder, strict=isinstance(exc, HubUnreachable))  # a hub error is shown as such
        if found is None:
            raise
        if not constants.is_offline_mode():
            say(f"{exc} Using the complete copy in the cache.")
        return found
    if plan.to_download:
        say(f"Downloading {folder.label}@{plan.commit[:7]}, {len(plan.files)} files: {plan.lines()[-1]}")
        if plan.free_bytes < plan.to_download + 200 * 10**6:  # refused before any byte is fetched
            raise DiskTooSmall(
                f"{folder.label} needs {gb(plan.to_download)} but only {gb(plan.free_bytes)} is free in "
                f"{constants.HF_HUB_CACHE}; free some space (hf cache rm) or set HF_HOME to a bigger disk."
            )
        _download(plan, say)
    record = _record_path(folder, plan.commit)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"repo": folder.repo_id, "commit": plan.commit, "files": plan.files}, indent=1))
    os.replace(tmp, record)
    return plan.snapshot / folder.subfolder


def _download(plan: Plan, say) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    folder = plan.folder
    try:  # by the pinned name (not the commit), so huggingface_hub records refs/<name> for offline use
        snapshot_download(folder.repo_id, revision=folder.pinned(), allow_patterns=folder.allow_patterns)
        for path in damaged_files(plan.snapshot, plan.files):  # a truncated file: huggingface_hub trusts it
            say(f"{path} in the cache does not match the hub's size; downloading it again.")
            hf_hub_download(folder.repo_id, path, revision=plan.commit, force_download=True)
    except Exception as exc:
        err = explain(exc, folder)
        raise type(err)(f"the download stopped: {err} Run the same command again to resume it.") from None
    bad = problems(plan.snapshot, plan.files)
    if bad:
        raise DownloadIncomplete(f"after the download {folder.label}: {bad[0]}; run the same command again.")


def plan_lines(backend: str, precision: str, target: str | None = None, source: str | None = None) -> list[str]:
    """What ``prepare --plan`` prints for phi3-mini: repos, files, sizes (from the hub) and free disk."""
    folder = None if source == "export" else hub_folder(backend, precision, target)
    lines = [] if folder else [f"{backend} {precision}: {describe_export(precision)}."]
    folder = folder or CHECKPOINT
    try:
        return lines + make_plan(folder).lines()
    except HubUnreachable as exc:
        cached = cached_folder(folder, strict=False)
        if cached is not None:
            return lines + [f"{folder.label}: complete in the cache ({cached}); nothing to download."]
        return lines + [f"{exc} (published: about {gb(folder.published_bytes)}, {folder.source})"]
