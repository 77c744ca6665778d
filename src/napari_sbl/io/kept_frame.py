"""Decoded frames kept in memory as the decoder's own planes, turned into RGB only when asked for.

A 4:2:0 frame's planes are half the bytes of its RGB image, so a cache holds twice the frames; and
copying planes costs a fraction of converting to RGB, so a background decoder fills a cache twice as
fast (4:4:4 too). Converting the planes back goes through the same swscale conversion, from the same
colourspace, as converting the decoder's frame directly, so the RGB is identical.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

PLANAR_8BIT_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray"})
"""Pixel formats whose planes are plain 8-bit arrays (one byte per sample), so copying them is exact."""


@dataclass(frozen=True)
class PlanarFrame:
    """One decoded frame as its pixel format's planes: ``planes[i]`` (plane height, plane width) uint8."""

    planes: tuple[np.ndarray, ...]
    pix_fmt: str
    width: int
    height: int
    colorspace: int
    color_range: int

    @property
    def nbytes(self) -> int:
        return sum(plane.nbytes for plane in self.planes)


def plane_array(plane) -> np.ndarray:
    """A PyAV plane as an (H, W) uint8 view of the frame's own memory (no copy; rows padded to
    ``line_size`` are cut to the plane's width)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


KeptFrame = PlanarFrame | np.ndarray
"""What a frame cache holds: planes where the pixel format allows, else (H, W, 3) uint8 RGB."""


def keep_frame(frame) -> KeptFrame:
    """A copy of a decoded ``av.VideoFrame`` that outlives the decoder's buffers."""
    if frame.format.name not in PLANAR_8BIT_FORMATS:
        return frame.to_ndarray(format="rgb24")
    planes = tuple(plane_array(plane).copy() for plane in frame.planes)
    return PlanarFrame(planes, frame.format.name, frame.width, frame.height, int(frame.colorspace),
                       int(frame.color_range))


def kept_nbytes(pix_fmt: str, width: int, height: int) -> int:
    """Bytes :func:`keep_frame` uses for one frame of this format and size."""
    import av

    if pix_fmt not in PLANAR_8BIT_FORMATS:
        return width * height * 3
    video_format = av.VideoFormat(pix_fmt, width, height)
    return sum(component.width * component.height for component in video_format.components)


class RgbConverter:
    """Kept frames to (H, W, 3) uint8 RGB, reusing one swscale context and one input frame (serialised)."""

    def __init__(self) -> None:
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()
        self._scratch = None
        self._lock = threading.Lock()

    def __call__(self, kept: KeptFrame) -> np.ndarray:
        if isinstance(kept, np.ndarray):
            return kept
        with self._lock:
            frame = self._scratch_for(kept)
            for plane, data in zip(frame.planes, kept.planes, strict=True):
                plane_array(plane)[:] = data
            frame.colorspace = kept.colorspace
            frame.color_range = kept.color_range
            return self._reformatter.reformat(frame, format="rgb24").to_ndarray()

    def _scratch_for(self, kept: PlanarFrame):
        """A frame of ``kept``'s format and size to copy planes into (allocated once, not per frame)."""
        import av

        scratch = self._scratch
        if scratch is None or (scratch.width, scratch.height, scratch.format.name) != (
            kept.width, kept.height, kept.pix_fmt
        ):
            scratch = self._scratch = av.VideoFrame(kept.width, kept.height, kept.pix_fmt)
        return scratch
