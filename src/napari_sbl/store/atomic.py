"""Crash-safe file writes: write beside the target, flush, then rename over it.

A reader therefore sees either the old file or the new one, never half of one, even if the
process is killed or the disk fills mid-write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from napari_sbl.errors import StoreError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (same directory temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes files private; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if err.errno == errno.ENOSPC:
            raise StoreError(
                f"disk full while writing {path}; the previous version is intact. Free space and rerun"
            ) from err
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_directory(staged: Path, target: Path) -> None:
    """Move a fully written directory ``staged`` into place at ``target``.

    An existing ``target`` is first renamed to a ``.trash`` sibling, so at every instant either the
    old or the new directory exists under a name :func:`recover_directory` understands.
    """
    trash = target.with_name(f".{target.name}.trash")
    if trash.exists():
        shutil.rmtree(trash)
    if target.exists():
        os.replace(target, trash)
    os.replace(staged, target)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)


def recover_directory(target: Path) -> None:
    """Undo an interrupted :func:`replace_directory`: restore the old copy if the new never landed."""
    trash = target.with_name(f".{target.name}.trash")
    if trash.exists():
        if target.exists():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(trash, target)
