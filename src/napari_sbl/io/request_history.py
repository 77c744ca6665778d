"""Recent frame requests, to tell a user scrubbing from reading on.

A person dragging a time slider moves back and forth; playback and batch analysis (sequential
reads, every k-th frame) only move forward. Filling whole GOPs in the background pays off for the
first and only costs CPU and memory for the second.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import pairwise

RECENT_REQUESTS = 16
PLAYING_STEPS = 3
"""This many +1 steps in a row is playback: the decoder cursor serves it, filling would compete."""


class RequestHistory:
    """The last :data:`RECENT_REQUESTS` frame indices asked for (thread-safe)."""

    def __init__(self) -> None:
        self._recent: deque[int] = deque(maxlen=RECENT_REQUESTS)
        self._lock = threading.Lock()

    def record(self, frame_index: int) -> None:
        with self._lock:
            self._recent.append(int(frame_index))

    def playing(self) -> bool:
        """The last :data:`PLAYING_STEPS` requests each asked for the frame after the one before."""
        with self._lock:
            recent = list(self._recent)[-(PLAYING_STEPS + 1):]
        return len(recent) == PLAYING_STEPS + 1 and all(b == a + 1 for a, b in pairwise(recent))

    def scrubbing(self) -> bool:
        """Some recent request went backwards, and the latest ones are not playback."""
        with self._lock:
            recent = list(self._recent)
        went_back = any(b < a for a, b in pairwise(recent))
        return went_back and not self.playing()
