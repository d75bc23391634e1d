"""The real Phi-3 from the Hugging Face hub: the plan and the checked download of a catalog folder.

``phi3-mini`` is downloaded prequantized per backend and precision (see catalog.py: 2.2 GB for
OpenVINO int4 instead of the 7.6 GB checkpoint plus an export). Everything goes through
``huggingface_hub`` (progress bar, the standard HF cache, ``HF_ENDPOINT`` mirrors, ``HF_HUB_OFFLINE``), fetching
only the files a runtime needs (``allow_patterns``).

A download is complete only when every planned file is in the snapshot with the size the hub
reported; then a small record ``<HF cache>/models--ORG--NAME/phi3_helpers/<commit>.json`` is
written. Without that record (an interrupted download) or with a file missing or truncated, the
folder is never used as it is: online it is completed or fetched again, offline a one-line error
names the fix.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFolderError, Phi3Error
from .catalog import (  # noqa: F401  (re-exported: the catalog is part of what this module answers)
    CHECKPOINT,
    EXPORT_OUTPUT_BYTES,
    GB,
    ONNX,
    OPENVINO,
    REVISION_ENV,
    HubFolder,
    describe_export,
    gb,
    hub_folder,
)


class HubError(ModelFolderError):
    """The hub (or mirror) could not give what was asked: unknown repo/subfolder, an HTTP error."""


class HubUnreachable(HubError):
    """No answer from the hub or mirror, and nothing complete in the cache."""


class DiskTooSmall(Phi3Error):
    """The download does not fit on the disk; refused before it starts."""


class DownloadIncomplete(ModelFolderError):
    """A cached folder is missing a file, has a truncated one, or was never finished."""


# -- the plan ------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What a download would fetch: files and sizes as the hub reports them, and the disk free."""

    folder: HubFolder
    commit: str
    files: dict[str, int]  # repo path -> bytes
    cached: dict[str, int] = field(default_factory=dict)  # the part already in the HF cache
    free_bytes: int = 0
    sizes_from: str = "the hub"

    @property
    def total(self) -> int:
        return sum(self.files.values())

    @property
    def to_download(self) -> int:
        return self.total - sum(self.cached.values())

    def line(self) -> str:
        todo = self.to_download
        what = f"{gb(todo)} to download" if todo else "all in the cache"
        return (
            f"{self.folder.label}@{self.commit[:7]}: {len(self.files)} files, {gb(self.total)} ({what}); "
            f"{gb(self.free_bytes)} free in {hf_cache_dir()}"
        )

    def lines(self) -> list[str]:
        sub = f"  folder {self.folder.subfolder}" if self.folder.subfolder else ""
        out = [f"repo {self.folder.repo_id}  revision {self.commit}{sub}"]
        for path, size in sorted(self.files.items()):
            mark = "cached" if path in self.cached else "get"
            out.append(f"  {mark:6} {size:>14,d}  {path}")
        out.append(f"total {gb(self.total)}, to download {gb(self.to_download)}, free {gb(self.free_bytes)} "
                   f"in {hf_cache_dir()} (sizes from {self.sizes_from})")
        return out


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds ``path`` (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def make_plan(folder: HubFolder) -> Plan:
    """Ask the hub (or the mirror in HF_ENDPOINT) which files the folder has and their sizes (2 requests)."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        info = api.model_info(folder.repo_id, revision=folder.pinned())
        names = [s.rfilename for s in (info.siblings or []) if folder.wanted(s.rfilename)]
        if not names:
            raise HubError(
                f"{folder.repo_id} at {folder.pinned()} has no files under {folder.subfolder or 'its root'} matching "
                f"{', '.join(folder.patterns)}; check the repo and folder name on {endpoint()} (or set {REVISION_ENV})."
            )
        infos = api.get_paths_info(folder.repo_id, names, revision=info.sha)
    except Phi3Error:
        raise
    except Exception as exc:
        raise explain(exc, folder) from None
    files = {i.path: int(i.size) for i in infos if getattr(i, "size", None) is not None}
    plan = Plan(folder, str(info.sha), files, free_bytes=free_bytes(hf_cache_dir()))
    snap = _storage(folder) / "snapshots" / plan.commit
    plan.cached = {p: s for p, s in files.items() if _size(snap / p) == s}
    return plan


def check_disk(plan: Plan, margin: int = 200 * 10**6) -> None:
    """Refuse a download that does not fit, before any byte is fetched."""
    need = plan.to_download + margin
    if plan.free_bytes < need:
        raise DiskTooSmall(
            f"{plan.folder.label} needs {gb(plan.to_download)} but only {gb(plan.free_bytes)} is free in "
            f"{hf_cache_dir()}; "
            "free some space (huggingface-cli delete-cache) or set HF_HOME to a bigger disk."
        )


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def explain(exc: BaseException, folder: HubFolder) -> Phi3Error:
    """A huggingface_hub/httpx error as one line that names the fix."""
    from huggingface_hub import errors as hf

    where = f"{folder.label} on {endpoint()}"
    if isinstance(exc, hf.RevisionNotFoundError):
        return HubError(f"{where} has no revision {folder.pinned()!r}; set {REVISION_ENV}=main or update the course.")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return HubError(f"{where}: no such repo (404); check HF_ENDPOINT points at a mirror that serves it.")
    if isinstance(exc, hf.HfHubHTTPError) and exc.response is not None:
        code = exc.response.status_code
        return HubError(f"{where} answered HTTP {code}; try again later, or check the mirror's log (HF_ENDPOINT).")
    if isinstance(exc, (hf.OfflineModeIsEnabled,)):
        return HubUnreachable(f"{where} is not in the cache and HF_HUB_OFFLINE is set; unset it to download.")
    kind = type(exc).__name__
    return HubUnreachable(
        f"could not reach {where} ({kind}); check the network or HF_ENDPOINT, or use PHI3_MODEL=smollm2-135m-phi3."
    )


# -- the cache ----------------------------------------------------------------------------------
def _storage(folder: HubFolder) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hf_cache_dir() / repo_folder_name(repo_id=folder.repo_id, repo_type="model")


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size  # follows the snapshot's symlink to the blob
    except OSError:
        return None


def _record_path(folder: HubFolder, commit: str) -> Path:
    sub = folder.subfolder.replace("/", "--")
    return _storage(folder) / "phi3_helpers" / (f"{commit}--{sub}.json" if sub else f"{commit}.json")


def _write_record(plan: Plan) -> None:
    rec = _record_path(plan.folder, plan.commit)
    rec.parent.mkdir(parents=True, exist_ok=True)
    tmp = rec.with_suffix(".tmp")
    tmp.write_text(json.dumps({"repo": plan.folder.repo_id, "commit": plan.commit, "files": plan.files}, indent=1))
    os.replace(tmp, rec)


def problems(folder: HubFolder, commit: str, files: dict[str, int]) -> list[str]:
    """What is wrong with a snapshot against the sizes the hub reported ('' list when complete)."""
    snap = _storage(folder) / "snapshots" / commit
    out = []
    for path, size in sorted(files.items()):
        have = _size(snap / path)
        if have is None:
            out.append(f"{path} is missing")
        elif have != size:
            out.append(f"{path} is truncated ({have:,d} of {size:,d} bytes)")
    return out


def _local_commit(folder: HubFolder) -> str | None:
    rev = folder.pinned()
    if len(rev) == 40:
        return rev
    ref = _storage(folder) / "refs" / rev
    return ref.read_text().strip() if ref.is_file() else None


def cached_folder(folder: HubFolder, strict: bool = True) -> Path | None:
    """The complete cached folder, or None when nothing was downloaded.

    A download that was started but is not complete raises DownloadIncomplete (``strict``) with the
    fix, so it is never loaded as it is.
    """
    commit = _local_commit(folder)
    if commit is None or not (_storage(folder) / "snapshots" / commit).is_dir():
        return None
    path = _storage(folder) / "snapshots" / commit / folder.subfolder
    rec = _record_path(folder, commit)
    fix = f"connect to the hub (or the mirror in HF_ENDPOINT) and run the same command again to finish {folder.label}"
    if not rec.is_file():
        if strict:
            raise DownloadIncomplete(f"the download of {folder.label} was not finished; {fix}.")
        return None
    bad = problems(folder, commit, json.loads(rec.read_text())["files"])
    if bad:
        if strict:
            raise DownloadIncomplete(f"cached {folder.label}: {bad[0]}; {fix} (it downloads only what is damaged).")
        return None
    return path


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch(folder: HubFolder, progress=None) -> Path:
    """The folder, downloaded (only the planned files) and checked; from the cache when complete."""
    from .. import models

    say = progress or models.notice
    if _offline():
        found = cached_folder(folder)
        if found is None:
            raise HubUnreachable(
                f"could not get {folder.label}: it is not in the cache and HF_HUB_OFFLINE is set; "
                "unset it to download it."
            )
        return found
    try:
        plan = make_plan(folder)
    except HubError as exc:
        found = cached_folder(folder, strict=False)  # the hub is away or failing: a complete cached copy will do
        if found is None:
            raise
        say(f"{exc} Using the complete copy in the cache.")
        return found
    storage = _storage(folder)
    path = storage / "snapshots" / plan.commit / folder.subfolder
    if plan.to_download == 0 and not problems(folder, plan.commit, plan.files):
        _write_record(plan)
        return path
    say("Downloading " + plan.line())
    check_disk(plan)
    _download(plan, say)
    return path


def _download(plan: Plan, say) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    folder = plan.folder
    try:
        # by the pinned name (not the commit), so huggingface_hub records refs/<name> for offline use
        snapshot_download(folder.repo_id, revision=folder.pinned(), allow_patterns=folder.allow_patterns)
        damaged = [p for p, s in plan.files.items() if _size(storage_file(plan, p)) != s]
        for p in damaged:  # a file truncated in the cache: huggingface_hub trusts it, so fetch it again
            say(f"{p} in the cache does not match the hub's size; downloading it again.")
            hf_hub_download(folder.repo_id, p, revision=plan.commit, force_download=True)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        err = explain(exc, folder)
        raise type(err)(f"the download stopped: {err} Run the same command again to resume it.") from None
    bad = problems(folder, plan.commit, plan.files)
    if bad:
        raise DownloadIncomplete(f"after the download {folder.label}: {bad[0]}; run the same command again.")
    _write_record(plan)


def storage_file(plan: Plan, path: str) -> Path:
    return _storage(plan.folder) / "snapshots" / plan.commit / path


def plan_lines(backend: str, precision: str, target: str | None = None, source: str | None = None) -> list[str]:
    """What ``prepare --plan`` prints for phi3-mini: repos, files, sizes (from the hub) and free disk."""
    folder = None if source == "export" else hub_folder(backend, precision, target)
    lines = []
    if folder is None:
        lines.append(f"{backend} {precision}: {describe_export(precision)}.")
        folder = CHECKPOINT
    cached = cached_folder(folder, strict=False)
    if _offline() and cached is not None:
        return lines + [f"{folder.label}: complete in the cache ({cached}); nothing to download."]
    try:
        lines += make_plan(folder).lines()
    except HubUnreachable as exc:
        lines.append(f"{exc} (published: about {gb(folder.published_bytes)}, {folder.source})")
    return lines
