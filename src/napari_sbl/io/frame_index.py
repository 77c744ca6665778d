"""The frame index of a video: every frame's presentation timestamp and where keyframes are.

Built once by demuxing packets (no decoding, milliseconds per thousand frames) and cached in the
session store, it is what makes random access frame-accurate: frame ``i`` is the ``i``-th smallest
presentation timestamp, and decoding starts at the last keyframe at or before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from napari_sbl.errors import VideoError


@dataclass(frozen=True)
class FrameIndex:
    """``pts`` (T,) int64 sorted presentation timestamps in ``time_base`` units;
    ``keyframes`` (K,) int64 frame indices where decoding may start (always includes 0)."""

    pts: np.ndarray
    keyframes: np.ndarray
    time_base: Fraction

    @property
    def n_frames(self) -> int:
        return int(self.pts.size)

    def frame_times(self) -> np.ndarray:
        """(T,) float64 seconds from the first frame."""
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)

    def keyframe_before(self, frame_index: int) -> int:
        """The last keyframe index at or before ``frame_index``."""
        pos = int(np.searchsorted(self.keyframes, frame_index, side="right")) - 1
        return int(self.keyframes[max(pos, 0)])

    def gop_of(self, frame_index: int) -> tuple[int, int]:
        """(first, one past the last) frame of the group of pictures holding ``frame_index``:
        from its keyframe up to the next keyframe or the end."""
        pos = max(int(np.searchsorted(self.keyframes, frame_index, side="right")) - 1, 0)
        stop = int(self.keyframes[pos + 1]) if pos + 1 < self.keyframes.size else self.n_frames
        return int(self.keyframes[pos]), stop

    def index_of_pts(self, pts: int) -> int:
        """Frame index of a timestamp, or -1 if no frame has it."""
        pos = int(np.searchsorted(self.pts, pts))
        return pos if pos < self.pts.size and self.pts[pos] == pts else -1

    def index_of_frame(self, frame, unstamped: int) -> int:
        """Frame index of a decoded frame from its timestamp (pts, else dts), ``unstamped`` when it has
        none, -1 when no frame of the index has it."""
        pts = frame.pts if frame.pts is not None else frame.dts
        return unstamped if pts is None else self.index_of_pts(int(pts))

    def is_variable_rate(self, tolerance: float = 0.01) -> bool:
        if self.pts.size < 3:
            return False
        steps = np.diff(self.pts).astype(np.float64)
        median = float(np.median(steps))
        return bool(median > 0 and np.max(np.abs(steps - median)) > tolerance * median)


def build_frame_index(container, stream, path: Path) -> FrameIndex:
    """Demux every packet of ``stream`` and return its frame index.

    Packets without a timestamp (some AVI and raw streams) fall back on the decode timestamp;
    if neither exists the file cannot be indexed and a :class:`VideoError` says so.
    """
    import av

    pts_list: list[int] = []
    key_pts: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                raise VideoError(
                    f"{path}: packets carry no timestamps, so frames cannot be addressed exactly; "
                    "remux it (e.g. ffmpeg -i in -c copy out.mp4) and open the result"
                )
            pts_list.append(int(ts))
            if packet.is_keyframe:
                key_pts.append(int(ts))
    except av.error.FFmpegError as err:
        if not pts_list:
            raise VideoError(f"{path}: cannot read video packets ({err})") from err
    if not pts_list:
        raise VideoError(f"{path}: the video stream holds no frames")
    pts = np.unique(np.asarray(pts_list, dtype=np.int64))
    keys = np.searchsorted(pts, np.unique(np.asarray(key_pts, dtype=np.int64)))
    keyframes = np.union1d(np.array([0], dtype=np.int64), keys.astype(np.int64))
    return FrameIndex(pts=pts, keyframes=keyframes, time_base=Fraction(stream.time_base))
