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
from collections.abc import Callable
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


def remove_directory(path: Path) -> None:
    """Delete ``path`` now (the default way :func:`replace_directory` disposes of an old copy)."""
    shutil.rmtree(path, ignore_errors=True)


def replace_directory(staged: Path, target: Path, discard: Callable[[Path], None] = remove_directory) -> None:
    """Move a fully written directory ``staged`` into place at ``target``.

    An existing ``target`` is first renamed to a ``.trash`` sibling, so at every instant either the
    old or the new directory exists under a name :func:`recover_directory` understands. ``discard``
    disposes of the old copy once the new one is in place (a store's trash deletes it in the background).
    """
    trash = _aside(target)
    if trash.exists():
        discard(trash)
    if target.exists():
        os.replace(target, trash)
    os.replace(staged, target)
    if trash.exists():
        discard(trash)


def recover_directory(target: Path, discard: Callable[[Path], None] = remove_directory) -> None:
    """Undo an interrupted :func:`replace_directory`: restore the old copy if the new never landed,
    else ``discard`` the old copy."""
    trash = _aside(target)
    if trash.exists():
        if target.exists():
            discard(trash)
        else:
            os.replace(trash, target)


def _aside(target: Path) -> Path:
    """Where :func:`replace_directory` keeps the old copy of ``target`` while the new one moves in."""
    return target.with_name(f".{target.name}.trash")
