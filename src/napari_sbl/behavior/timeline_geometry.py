"""Pure geometry of the timeline: frame ↔ pixel mapping, zoom, bars to draw, edge hit-testing.

The Qt timeline only paints what these functions return, so a long video costs one rectangle per
visible run (coalesced to at most a few per pixel column), never one per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

LANES = ("labels", "predictions", "candidates")


@dataclass(frozen=True)
class FrameAxis:
    """Frames ``[view_start, view_stop)`` drawn across ``width_px`` pixels starting at ``x0_px``."""

    n_frames: int
    x0_px: float
    width_px: float
    view_start: float = 0.0
    view_stop: float | None = None

    @property
    def stop(self) -> float:
        return float(self.n_frames if self.view_stop is None else self.view_stop)

    @property
    def span(self) -> float:
        return max(self.stop - self.view_start, 1e-9)

    @property
    def px_per_frame(self) -> float:
        return max(self.width_px, 1.0) / self.span

    def frame_to_x(self, frame):
        """Pixel x of a frame's left edge (float; arrays work too)."""
        return self.x0_px + (np.asarray(frame, dtype=float) - self.view_start) * self.px_per_frame

    def x_to_frame(self, x: float) -> int:
        """The frame under pixel ``x``, clamped to the video."""
        frame = math.floor(self.view_start + (float(x) - self.x0_px) / self.px_per_frame)
        return int(min(max(frame, 0), max(self.n_frames - 1, 0)))

    def x_to_boundary(self, x: float) -> int:
        """The frame boundary (0..n_frames) nearest pixel ``x``: where a dragged segment edge lands."""
        boundary = round(self.view_start + (float(x) - self.x0_px) / self.px_per_frame)
        return int(min(max(boundary, 0), self.n_frames))

    def zoomed(self, anchor_frame: float, factor: float, min_span: float = 10.0) -> FrameAxis:
        """Zoom by ``factor`` (>1 zooms in) keeping ``anchor_frame`` under the same pixel."""
        span = min(max(self.span / factor, min(min_span, self.n_frames)), float(self.n_frames))
        fraction = (anchor_frame - self.view_start) / self.span
        start = anchor_frame - fraction * span
        return self._clamped(start, span)

    def panned(self, frames: float) -> FrameAxis:
        return self._clamped(self.view_start + frames, self.span)

    def showing(self, frame: int) -> FrameAxis:
        """Scrolled (not zoomed) just enough that ``frame`` is visible."""
        if self.view_start <= frame < self.stop:
            return self
        return self._clamped(frame - 0.5 * self.span, self.span)

    def _clamped(self, start: float, span: float) -> FrameAxis:
        start = min(max(start, 0.0), max(self.n_frames - span, 0.0))
        return replace(self, view_start=start, view_stop=start + span)


@dataclass(frozen=True)
class RowLayout:
    """One row per animal below a ``top_px`` ruler: a labels lane, then thinner predictions and candidates lanes."""

    top_px: float
    n_rows: int
    labels_px: float = 16.0
    lane_px: float = 6.0
    gap_px: float = 4.0

    @property
    def row_px(self) -> float:
        return self.labels_px + 2 * self.lane_px + self.gap_px

    @property
    def height_px(self) -> float:
        return self.top_px + self.n_rows * self.row_px

    def lane_span(self, row: int, lane: str) -> tuple[float, float]:
        """(y, height) of a lane of a row."""
        if lane not in LANES:
            raise ValueError(f"lanes are {LANES}, not {lane!r}")
        y = self.top_px + row * self.row_px
        if lane == "labels":
            return y, self.labels_px
        return y + self.labels_px + (LANES.index(lane) - 1) * self.lane_px, self.lane_px

    def row_at(self, y: float) -> int | None:
        """The animal row under pixel ``y``, or None on the ruler or below the rows."""
        if y < self.top_px:
            return None
        row = int((y - self.top_px) // self.row_px)
        return row if row < self.n_rows else None


def visible_bars(starts: np.ndarray, stops: np.ndarray, values: np.ndarray,
                 axis: FrameAxis) -> list[tuple[int, int, int]]:
    """(x0, x1, value) pixel bars of runs in view, at least 1 px wide, adjacent equal bars merged.

    Runs thinner than a pixel that land in a pixel already drawn are dropped, so a whole video of
    short runs costs at most one bar per pixel column.
    """
    starts, stops, values = (np.asarray(a) for a in (starts, stops, values))
    keep = (stops > axis.view_start) & (starts < axis.stop)
    x0s = np.floor(axis.frame_to_x(np.maximum(starts[keep], axis.view_start))).astype(int)
    x1s = np.ceil(axis.frame_to_x(np.minimum(stops[keep], axis.stop))).astype(int)
    x1s = np.maximum(x1s, x0s + 1)
    bars: list[list[int]] = []
    for x0, x1, value in zip(x0s.tolist(), x1s.tolist(), values[keep].tolist(), strict=True):
        if bars and x1 <= bars[-1][1]:
            continue
        if bars and x0 < bars[-1][1]:
            x0 = bars[-1][1]
        if bars and bars[-1][2] == value and x0 <= bars[-1][1]:
            bars[-1][1] = x1
        else:
            bars.append([x0, x1, value])
    return [(a, b, c) for a, b, c in bars]


def hit_edge(starts: np.ndarray, stops: np.ndarray, x: float, axis: FrameAxis,
             tolerance_px: float = 4.0) -> tuple[int, str] | None:
    """(segment index, "start" | "stop") of the segment edge nearest pixel ``x`` within the tolerance."""
    if not len(starts):
        return None
    edges = np.concatenate([axis.frame_to_x(np.asarray(starts)), axis.frame_to_x(np.asarray(stops))])
    distance = np.abs(edges - float(x))
    nearest = int(np.argmin(distance))
    if distance[nearest] > tolerance_px:
        return None
    n = len(starts)
    return (nearest, "start") if nearest < n else (nearest - n, "stop")


def drag_range(frame_a: int, frame_b: int) -> tuple[int, int]:
    """The frames a drag from ``frame_a`` to ``frame_b`` selects: ``[min, max + 1)``, both ends included."""
    return min(frame_a, frame_b), max(frame_a, frame_b) + 1


def tick_frames(axis: FrameAxis, min_spacing_px: float = 70.0) -> list[int]:
    """Frames for ruler ticks at a 1-2-5 step no closer than ``min_spacing_px``."""
    raw = min_spacing_px / axis.px_per_frame
    step = 1
    for magnitude in (10**k for k in range(0, 12)):
        step = next((m * magnitude for m in (1, 2, 5) if m * magnitude >= raw), 0)
        if step:
            break
    first = math.ceil(axis.view_start / step) * step
    return list(range(int(first), math.ceil(axis.stop), int(step)))
