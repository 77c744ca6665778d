"""A byte-budgeted LRU of decoded frames, so scrubbing back and forth never re-decodes."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class FrameCache:
    """Least-recently-used frames keyed by frame index, bounded by total bytes."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bytes = 0

    def __contains__(self, frame_index: int) -> bool:
        return frame_index in self._frames

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, frame_index: int) -> np.ndarray | None:
        frame = self._frames.get(frame_index)
        if frame is not None:
            self._frames.move_to_end(frame_index)
        return frame

    def put(self, frame_index: int, frame: np.ndarray) -> None:
        if frame.nbytes > self.budget_bytes:
            return
        old = self._frames.pop(frame_index, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._frames[frame_index] = frame
        self._bytes += frame.nbytes
        while self._bytes > self.budget_bytes:
            _, evicted = self._frames.popitem(last=False)
            self._bytes -= evicted.nbytes

    def last_index(self) -> int:
        """The highest cached frame index, or -1 when empty."""
        return max(self._frames, default=-1)

    def capacity_frames(self, frame_nbytes: int) -> int:
        return max(1, self.budget_bytes // max(frame_nbytes, 1))

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0
