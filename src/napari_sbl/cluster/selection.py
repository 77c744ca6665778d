"""Selection geometry on the scatter and the clip montage, as pure functions (testable without Qt).

Coordinates are whatever the caller works in (the scatter uses canvas pixels, so 2-D and rotated 3-D views
select the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: which of ``points`` (N, 2) lie inside ``polygon`` (M, 2), even-odd rule, closed implicitly."""
    points = np.asarray(points, dtype=np.float64)
    polygon = np.asarray(polygon, dtype=np.float64)
    inside = np.zeros(len(points), dtype=bool)
    if len(polygon) < 3 or not len(points):
        return inside
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    candidates = np.flatnonzero(np.all((points >= low) & (points <= high), axis=1))
    x, y = points[candidates, 0], points[candidates, 1]
    crossings = np.zeros(len(candidates), dtype=bool)
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1, strict=True):
        spans = (ay > y) != (by > y)
        if not spans.any():
            continue
        x_cross = ax + (y - ay) * (bx - ax) / np.where(by != ay, by - ay, 1.0)
        crossings ^= spans & (x < x_cross)
    inside[candidates] = crossings
    return inside


def points_in_box(points: np.ndarray, corner_a: np.ndarray, corner_b: np.ndarray) -> np.ndarray:
    """(N,) bool: points inside the axis-aligned box spanned by two opposite corners."""
    points = np.asarray(points, dtype=np.float64)
    low = np.minimum(corner_a, corner_b)
    high = np.maximum(corner_a, corner_b)
    return np.all((points >= low) & (points <= high), axis=1)


def nearest_point(points: np.ndarray, xy: np.ndarray, max_distance: float = np.inf,
                  candidates: np.ndarray | None = None) -> int | None:
    """Index of the point nearest ``xy`` within ``max_distance`` (same units), or None.

    ``candidates`` restricts the search (e.g. to visible points); ties go to the lowest index.
    """
    points = np.asarray(points, dtype=np.float64)
    rows = np.arange(len(points)) if candidates is None else np.asarray(candidates)
    if not len(rows):
        return None
    distances = np.hypot(*(points[rows, :2] - np.asarray(xy, dtype=np.float64)[:2]).T)
    finite = np.isfinite(distances)
    if not finite.any():
        return None
    best = int(np.argmin(np.where(finite, distances, np.inf)))
    return int(rows[best]) if distances[best] <= max_distance else None


def clips_at_frame(start_frame: np.ndarray, stop_frame: np.ndarray, frame_index: int,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """Indices of the clips whose ``[start, stop)`` contains ``frame_index`` (among ``rows`` when given)."""
    rows = np.arange(len(start_frame)) if rows is None else np.asarray(rows)
    inside = (start_frame[rows] <= frame_index) & (frame_index < stop_frame[rows])
    return rows[inside]


@dataclass
class MontagePosition:
    clip: int  # position in the montage's list of rows
    row: int  # table row of the clip
    frame_index: int


class Montage:
    """Plays a list of clips one after another, frame by frame (the widget drives it with a timer)."""

    def __init__(self, rows: np.ndarray, start_frame: np.ndarray, stop_frame: np.ndarray, loop: bool = False) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self._start = np.asarray(start_frame)[self.rows]
        self._stop = np.asarray(stop_frame)[self.rows]
        self.loop = loop
        self.clip = 0
        self.frame_index = int(self._start[0]) if len(self.rows) else 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def position(self) -> MontagePosition | None:
        if not len(self.rows) or self.clip >= len(self.rows):
            return None
        return MontagePosition(self.clip, int(self.rows[self.clip]), self.frame_index)

    def go_to(self, clip: int) -> MontagePosition | None:
        """Jump to the first frame of the ``clip``-th clip of the list."""
        self.clip = int(clip)
        if 0 <= self.clip < len(self.rows):
            self.frame_index = int(self._start[self.clip])
        return self.position

    def step(self) -> MontagePosition | None:
        """Next frame; after a clip's last frame, the next clip's first; None when the list is done."""
        if self.position is None:
            return None
        if self.frame_index + 1 < int(self._stop[self.clip]):
            self.frame_index += 1
            return self.position
        following = self.clip + 1
        if following >= len(self.rows):
            if not self.loop:
                self.clip = len(self.rows)
                return None
            following = 0
        return self.go_to(following)
