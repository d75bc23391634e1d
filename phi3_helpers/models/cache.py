"""Where built models live, and how a folder is built atomically.

A build writes into a temporary sibling folder and renames it into place only when complete, so
an interrupted build (Ctrl-C, crash, full disk) never leaves a folder a later run mistakes for a
good one; leftovers of interrupted builds are removed by the next build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

CACHE_ENV = "PHI3_CACHE_DIR"


def cache_root() -> Path:
    """The cache folder: $PHI3_CACHE_DIR, else ~/.cache/phi3_helpers."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "phi3_helpers"
    return root.resolve()


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``final`` in one rename.

    On any error or KeyboardInterrupt the temporary folder is removed and the error re-raised.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
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
    """Bytes on disk of all files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
