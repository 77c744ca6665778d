"""Deleting replaced directories without waiting for it.

Rerunning a step with overwrite replaces arrays of a gigabyte or more (a long video's embedding tokens);
deleting the old files took a third of a second before the first block on a local disk, and more on slow
ones. A :class:`Trash` takes the old directory out of the way with one atomic rename into its folder and
deletes it on a background thread; whoever owns the trash waits for that at the end of its job. The
folder holds nothing but garbage, so whatever a killed process left there is deleted the next time the
store opens (:meth:`Trash.empty_leftovers`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


class Trash:
    """A folder of directories being deleted by one background thread (started when there is work)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._pending: list[Path] = []
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def discard(self, path: Path) -> None:
        """Move ``path`` into the trash (it is gone from its place at once) and delete it in the background.

        ``path`` must be on the trash's file system (the store's own folder), so the move is a rename.
        """
        self.folder.mkdir(exist_ok=True)
        doomed = self.folder / uuid.uuid4().hex
        try:
            os.replace(path, doomed)
        except FileNotFoundError:  # another thread or process discarded it first
            return
        self._delete_later([doomed])

    def empty_leftovers(self) -> None:
        """Delete, in the background, what a killed process left in the trash."""
        if self.folder.is_dir():
            self._delete_later(sorted(self.folder.iterdir()))

    def wait(self) -> None:
        """Return once every directory discarded so far is deleted."""
        while (worker := self._worker) is not None:
            worker.join()

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def _delete_later(self, paths: list[Path]) -> None:
        if not paths:
            return
        with self._lock:
            self._pending.extend(paths)
            if self._worker is None:  # not daemonic: the interpreter finishes the deletions before it exits
                self._worker = threading.Thread(target=self._delete_pending, name="store-trash")
                self._worker.start()

    def _delete_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._worker = None
                    return
                path = self._pending.pop(0)
            _remove(path)


def _remove(path: Path) -> None:
    """Delete a file or folder; what cannot be deleted now is retried the next time the store opens."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    if path.exists():
        log.warning("could not delete %s; it is retried the next time the store opens", path)
