"""Where built models live, how a folder is built atomically (an interrupted build never leaves a folder a later
run takes for a good one), and the file sizes a build records to tell damage later."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def cache_root() -> Path:
    """$PHI3_CACHE_DIR, else ~/.cache/phi3_helpers."""
    env = os.environ.get("PHI3_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "phi3_helpers").resolve()


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` in one rename on success, and is removed on any error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        import psutil  # cross-platform (os.kill(pid, 0) would send Ctrl-C on Windows)

        pid = stale.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if not (pid.isdigit() and int(pid) != os.getpid() and psutil.pid_exists(int(pid))):  # not another build's
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        if final.exists():  # someone else finished first, or a forced rebuild
            shutil.rmtree(final)
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def file_sizes(folder: Path) -> dict[str, int]:
    """Bytes of each file directly in ``folder``: what a build records, to tell damage later."""
    return {p.name: p.stat().st_size for p in sorted(Path(folder).iterdir()) if p.is_file()}


def damaged_files(folder: Path, recorded: dict[str, int] | None) -> list[str]:
    """Files whose size differs from ``recorded`` (missing ones included); [] when nothing was recorded."""
    folder = Path(folder)
    return [f for f, n in (recorded or {}).items() if not (folder / f).is_file() or (folder / f).stat().st_size != n]
