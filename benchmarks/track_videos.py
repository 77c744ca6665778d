"""The videos the SAM2 tracking benchmarks feed both trackers: a synthetic one and a decoded file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class SyntheticVideo:
    """Two bright blobs circling over a fixed textured background; (H, W, 3) uint8 RGB frames.

    A frame is the background with a precomputed disc stamped at each centre rounded to a pixel (so up
    to half a pixel from :meth:`centres`): a handful of NumPy calls, so drawing the video costs the
    trackers under test next to nothing (drawing it pixel by pixel cost 1.4 ms of GIL-bound Python on
    the tracking thread; benchmarks/results/track.md).
    """

    def __init__(self, n_frames: int, height: int = 480, width: int = 640) -> None:
        self.n_frames, self.height, self.width = n_frames, height, width
        rng = np.random.default_rng(0)
        self._background = rng.integers(30, 90, (height, width, 3), dtype=np.uint8)
        self._radius = int(min(height, width) / 12)
        offsets = np.arange(-self._radius, self._radius + 1)
        self._disc = offsets[:, None] ** 2 + offsets[None, :] ** 2 < (min(height, width) / 12) ** 2

    def centres(self, frame_index: int) -> list[tuple[float, float]]:
        phase = frame_index / 40.0
        h, w = self.height, self.width
        return [
            (w * (0.3 + 0.15 * np.cos(phase)), h * (0.5 + 0.25 * np.sin(phase))),
            (w * (0.7 + 0.15 * np.sin(phase)), h * (0.5 + 0.25 * np.cos(phase))),
        ]

    def frame(self, frame_index: int) -> np.ndarray:
        image = self._background.copy()
        r = self._radius
        for x, y in self.centres(frame_index):
            x0, y0 = round(x) - r, round(y) - r
            top, left = max(y0, 0), max(x0, 0)
            bottom, right = min(y0 + 2 * r + 1, self.height), min(x0 + 2 * r + 1, self.width)
            if bottom > top and right > left:
                disc = self._disc[top - y0 : bottom - y0, left - x0 : right - x0]
                image[top:bottom, left:right][disc] = (235, 225, 210)
        return image


class ArrayVideo:
    """Frames from a (T, H, W, 3) uint8 array (a memory map of a decoded file)."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames = frames
        self.n_frames, self.height, self.width = frames.shape[:3]

    def centres(self, frame_index: int) -> list[tuple[float, float]]:
        return [(self.width / 3, self.height / 2), (2 * self.width / 3, self.height / 2)]

    def frame(self, frame_index: int) -> np.ndarray:
        return np.asarray(self._frames[frame_index])


def decode_video(path: Path, n_frames: int, target: Path) -> Path:
    """Decode the first ``n_frames`` of ``path`` with PyAV into a .npy file (memory-mapped later)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        out = None
        count = 0
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            if out is None:
                out = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(n_frames, *rgb.shape))
            out[count] = rgb
            count += 1
            if count == n_frames:
                break
    if out is None or count < n_frames:
        raise SystemExit(f"{path} has only {count} frames; ask for at most that many with --frames")
    out.flush()
    return target
