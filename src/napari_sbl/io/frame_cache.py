"""A byte-budgeted LRU of decoded frames, so scrubbing back and forth never re-decodes."""

from __future__ import annotations

import threading
from collections import OrderedDict

from napari_sbl.io.kept_frame import KeptFrame


class FrameCache:
    """Least-recently-used frames keyed by frame index, bounded by total bytes.

    Thread-safe: the reader serves hits without taking its decoder lock, and a background filler
    adds frames while the foreground reads.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._frames: OrderedDict[int, KeptFrame] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, frame_index: int) -> bool:
        with self._lock:
            return frame_index in self._frames

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, frame_index: int) -> KeptFrame | None:
        with self._lock:
            frame = self._frames.get(frame_index)
            if frame is not None:
                self._frames.move_to_end(frame_index)
            return frame

    def put(self, frame_index: int, frame: KeptFrame) -> None:
        if frame.nbytes > self.budget_bytes:
            return
        with self._lock:
            old = self._frames.pop(frame_index, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._frames[frame_index] = frame
            self._bytes += frame.nbytes
            while self._bytes > self.budget_bytes:
                _, evicted = self._frames.popitem(last=False)
                self._bytes -= evicted.nbytes

    def indices(self) -> list[int]:
        """Cached frame indices, least recently used first."""
        with self._lock:
            return list(self._frames)

    def last_index(self) -> int:
        """The highest cached frame index, or -1 when empty."""
        with self._lock:
            return max(self._frames, default=-1)

    def capacity_frames(self, frame_nbytes: int) -> int:
        return max(1, self.budget_bytes // max(frame_nbytes, 1))

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0
