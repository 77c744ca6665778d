"""Regions of chosen frames, decoded forward by a decoder of their own: the fast way to read sampled frames.

The embedding step reads every 2nd or 3rd frame of a video (12 of 30 fps) and uses only the part of it
around each animal. Through :class:`~napari_sbl.io.video.VideoReader` each such frame cost a decode plus a
whole-frame RGB conversion that alone costs four decodes (4:4:4 video), on a decoder whose frame threads
fight the other readers' for the cores. Here, per sampled frame, only the frames that others are predicted
from are decoded on the way (FFmpeg skips the rest), only the wanted regions are converted to RGB
(:mod:`napari_sbl.io.yuv`), and the decoder runs on one thread: parallelism comes from several readers, each
decoding its own span of the video.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from napari_sbl.errors import VideoError
from napari_sbl.io.frame_index import FrameIndex
from napari_sbl.io.packet_decoding import decode_errors, decode_packets, open_video_stream
from napari_sbl.io.yuv import Box, region_rgb

log = logging.getLogger(__name__)


class FrameRegionReader:
    """Regions of the ``wanted`` frames of one video, as RGB, read in increasing frame order.

    ``frame_index`` is the video's index (shared with its :class:`VideoReader`, so nothing is re-demuxed);
    ``wanted`` (N,) are the frames :meth:`regions` will be asked for: their packets are always decoded, the
    packets of other frames only when a later frame depends on them. Asking for a frame behind the last one
    read, or far ahead, seeks. Not thread-safe: one reader per thread.
    """

    def __init__(self, path: str | Path, frame_index: FrameIndex, wanted: np.ndarray) -> None:
        self.path = Path(path)
        self.index = frame_index
        self._wanted_pts = set(frame_index.pts[np.asarray(wanted, dtype=np.int64)].tolist())
        self._container, self._stream = open_video_stream(self.path, threads=1)
        self._frames: Iterator | None = None
        self._next = -1
        self.damaged_frames: set[int] = set()
        self._prime()

    def regions(self, frame_index: int, boxes: Sequence[Box],
                alphas: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """The ``boxes`` of frame ``frame_index``, each (h, w, 3) uint8 RGB, or (h, w, 4) with the matching
        (h, w) uint8 plane of ``alphas`` as a fourth channel."""
        frame = self._decode_to(int(frame_index))
        return [region_rgb(frame, box, None if alphas is None else alphas[k]) for k, box in enumerate(boxes)]

    def close(self) -> None:
        self._frames = None
        self._container.close()

    def _prime(self) -> None:
        """Decode the first frame before any seek, as VideoReader does: H.264 decoders learn encoder quirks
        (old x264 4:4:4 output) from the first packet, and decode such files wrongly after an early seek."""
        self._frames = self._decoded()
        self._next = 0
        self._decode_to(0)

    def _decode_to(self, target: int) -> object:
        keyframe = self.index.keyframe_before(target)
        if self._frames is None or not keyframe <= self._next <= target:
            self._container.seek(int(self.index.pts[keyframe]), stream=self._stream, backward=True, any_frame=False)
            self._frames, self._next = self._decoded(), keyframe
        try:
            for frame in self._frames:
                index = self.index.index_of_frame(frame, self._next)
                if index < 0:
                    continue
                self._next = index + 1
                if index >= target:
                    if index > target and target not in self.damaged_frames:
                        log.warning("%s: frame %d is damaged; using frame %d", self.path.name, target, index)
                        self.damaged_frames.add(target)
                    return frame
        except decode_errors() as err:
            self._frames = None
            raise VideoError(f"{self.path}: frame {target} cannot be decoded ({err})") from err
        self._frames = None
        raise VideoError(f"{self.path}: frame {target} cannot be decoded (file ends early)")

    def _decoded(self) -> Iterator:
        """Frames in order; a packet neither wanted nor referred to by later frames is skipped by FFmpeg."""
        return decode_packets(self._container, self._stream, self._wanted_pts.__contains__)
