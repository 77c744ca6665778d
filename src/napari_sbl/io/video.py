"""Frame-accurate, lazy video reading with PyAV.

Nothing is loaded whole: the reader demuxes once to index frames (see :mod:`.frame_index`),
then decodes on demand. A decoder cursor makes sequential reads run at full decode speed, a
seek to the last keyframe makes random access exact, and a byte-budgeted cache of decoded
frames makes stepping back and forth instant.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.errors import VideoError
from napari_sbl.io.frame_cache import FrameCache
from napari_sbl.io.frame_index import FrameIndex, build_frame_index

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
KEEP_BEHIND_FRAMES = 1
"""On a random read, the frame before the target is kept too, so the first step back is instant;
stepping back further caches the whole stretch back to the keyframe (see ``_keep_behind``)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a user and the store need to know about a video file."""

    path: str
    size_bytes: int
    n_frames: int
    height: int
    width: int
    fps: float
    codec: str
    pix_fmt: str
    duration_s: float
    variable_frame_rate: bool

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class VideoReader:
    """Random and sequential access to the frames of one video file, as (H, W, 3) uint8 RGB.

    Thread-safe (one lock around the decoder) and picklable (reopens lazily), so napari's
    slicing threads and dask workers can share it.
    """

    def __init__(
        self,
        path: str | Path,
        frame_index: FrameIndex | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        threads: int | None = None,
        allow_truncated: bool = False,
    ) -> None:
        self.path = Path(path)
        self._cache_bytes = cache_bytes
        self._threads = threads if threads is not None else min(os.cpu_count() or 1, 8)
        self._allow_truncated = allow_truncated
        self._lock = threading.RLock()
        self._cache = FrameCache(cache_bytes)
        self._container = None
        self._stream = None
        self._cursor: Iterator | None = None
        self._cursor_next = -1
        self._full_decode_from_pts = 0
        self.damaged_frames: set[int] = set()
        self._open()
        self.index = frame_index if frame_index is not None else build_frame_index(
            self._container, self._stream, self.path
        )
        self._prime_decoder()
        self._check_tail()
        self.info = self._make_info()

    # -- properties of the FrameSource protocol -------------------------------------------------
    @property
    def n_frames(self) -> int:
        return self.index.n_frames

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n_frames, self.height, self.width, 3)

    def frame_times(self) -> np.ndarray:
        """(T,) float64 seconds of each frame (real timestamps, also for variable frame rate)."""
        return self.index.frame_times()

    # -- opening --------------------------------------------------------------------------------
    def _open(self) -> None:
        import av

        if not self.path.exists():
            raise VideoError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a folder, not a video file")
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.FFmpegError as err:
            raise VideoError(_describe_open_error(self.path, err)) from err
        if not self._container.streams.video:
            raise VideoError(f"{self.path}: the file has no video stream")
        self._stream = self._container.streams.video[0]
        ctx = self._stream.codec_context
        if ctx.name is None or ctx.width == 0:
            raise VideoError(f"{self.path}: unsupported or unknown video codec")
        self._stream.thread_type = "AUTO" if self._threads > 1 else "SLICE"
        self._stream.thread_count = self._threads
        self._cursor, self._cursor_next = None, -1

    def _make_info(self) -> VideoInfo:
        stream = self._stream
        times = self.frame_times()
        n = self.n_frames
        if n > 1 and times[-1] > 0:
            fps = (n - 1) / times[-1]
        else:
            rate = stream.average_rate or stream.guessed_rate or 0
            fps = float(rate) if rate else 0.0
        if stream.average_rate and not self.index.is_variable_rate():
            fps = float(stream.average_rate)
        step = float(np.median(np.diff(times))) if n > 1 else (1.0 / fps if fps else 0.0)
        return VideoInfo(
            path=str(self.path.resolve()),
            size_bytes=self.path.stat().st_size,
            n_frames=n,
            height=int(stream.codec_context.height),
            width=int(stream.codec_context.width),
            fps=round(float(fps), 6),
            codec=str(stream.codec_context.name),
            pix_fmt=str(stream.codec_context.pix_fmt or ""),
            duration_s=float(times[-1] + step) if n else 0.0,
            variable_frame_rate=self.index.is_variable_rate(),
        )

    def _prime_decoder(self) -> None:
        """Decode the first frame before any seek.

        H.264 decoders learn encoder quirks from the first packet's SEI (FFmpeg applies fixes for
        old x264 4:4:4 output that way); seeking before seeing it decodes such files wrongly.
        """
        try:
            self._decode_to(0, keep_behind=0)
        except VideoError as err:
            raise VideoError(f"{self.path}: the first frame cannot be decoded; the file is damaged ({err})") from err

    def _declared_shortfall_s(self) -> float:
        """Seconds the container header promises beyond the frames actually present (0 if none)."""
        stream, times = self._stream, self.frame_times()
        declared = 0.0
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            declared = self._container.duration / 1e6
        step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
        indexed = float(times[-1]) + step if times.size else 0.0
        return max(0.0, declared - indexed - max(2 * step, 0.01 * declared))

    def _check_tail(self) -> None:
        """Check the end of the file once: a file cut short fails here, not mid-analysis."""
        shortfall = self._declared_shortfall_s()
        if shortfall > 0 and not self._allow_truncated:
            raise VideoError(
                f"{self.path}: the file is truncated: its header promises {shortfall:.1f} s more video than "
                f"the {self.n_frames} frames present. Re-export or remux the video; "
                "pass allow_truncated to read only the frames present"
            )
        try:
            self._decode_to(self.n_frames - 1, keep_behind=0)
        except VideoError:
            if not self._allow_truncated:
                raise VideoError(
                    f"{self.path}: the file is truncated or damaged near its end (frame {self.n_frames - 1} "
                    "cannot be decoded). Re-export or remux the video; "
                    "pass allow_truncated to read only the decodable frames"
                ) from None
            self._trim_to_decodable()

    def _trim_to_decodable(self) -> None:
        """Keep frames up to the last one decoded on the way to the end (else those before the last keyframe)."""
        decoded = self._cache.last_index()
        keep = (decoded if decoded >= 0 else int(self.index.keyframes[-1]) - 1) + 1
        log.warning("%s: truncated; only frames 0..%d are readable", self.path, keep - 1)
        self.index = FrameIndex(
            self.index.pts[:keep], self.index.keyframes[self.index.keyframes < keep], self.index.time_base
        )

    # -- reading --------------------------------------------------------------------------------
    def frame(self, frame_index: int) -> np.ndarray:
        """Frame ``frame_index`` as (H, W, 3) uint8 RGB; negative indices count from the end."""
        frame_index = self._normalise_index(frame_index)
        with self._lock:
            cached = self._cache.get(frame_index)
            if cached is not None:
                return cached
            return self._decode_to(frame_index, keep_behind=self._keep_behind(frame_index))

    def __getitem__(self, frame_index: int) -> np.ndarray:
        return self.frame(frame_index)

    def __len__(self) -> int:
        return self.n_frames

    def iter_frames(self, start: int = 0, stop: int | None = None, step: int = 1) -> Iterator[np.ndarray]:
        """Frames ``start, start+step, ... < stop`` in order, at full decode speed."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        for frame_index in range(start, stop, step):
            yield self.frame(frame_index)

    def _normalise_index(self, frame_index: int) -> int:
        frame_index = int(frame_index)
        if frame_index < 0:
            frame_index += self.n_frames
        if not 0 <= frame_index < self.n_frames:
            raise IndexError(f"frame {frame_index} is outside 0..{self.n_frames - 1} of {self.path.name}")
        return frame_index

    def _keep_behind(self, frame_index: int) -> int:
        """How many frames before the target to convert and cache while decoding toward it.

        Moving backwards (a miss just behind the cursor) suggests the user keeps stepping back,
        so the whole stretch back to the keyframe is cached, as far as the budget allows. Reading
        on from the cursor (playback, sampling every k-th frame) converts only what is asked for.
        """
        stepping_back = 0 <= frame_index < self._cursor_next <= frame_index + KEEP_BEHIND_FRAMES + 1
        if stepping_back:
            frame_bytes = self.height * self.width * 3
            return self._cache.capacity_frames(frame_bytes) // 2
        keyframe = self.index.keyframe_before(frame_index)
        reading_on = self._cursor is not None and keyframe <= self._cursor_next <= frame_index
        return 0 if reading_on else KEEP_BEHIND_FRAMES

    def _decode_to(self, target: int, keep_behind: int) -> np.ndarray:
        keyframe = self.index.keyframe_before(target)
        if not (self._cursor is not None and keyframe <= self._cursor_next <= target):
            self._seek(keyframe)
        first_kept = max(target - keep_behind, 0)
        self._full_decode_from_pts = int(self.index.pts[first_kept])
        try:
            while True:
                frame = next(self._cursor)
                index = self._index_of(frame)
                if index < 0:
                    continue
                self._cursor_next = index + 1
                if index >= first_kept:
                    image = frame.to_ndarray(format="rgb24")
                    self._cache.put(index, image)
                    if index >= target:
                        return image if index == target else self._damaged(target, index)
        except StopIteration:
            self._cursor, self._cursor_next = None, -1
            raise VideoError(f"{self.path}: frame {target} cannot be decoded (file ends early)") from None
        except _decode_errors() as err:
            self._cursor, self._cursor_next = None, -1
            raise VideoError(f"{self.path}: frame {target} cannot be decoded ({err})") from err

    def _damaged(self, target: int, got: int) -> np.ndarray:
        """The decoder skipped ``target`` (corrupt data): serve the nearest decodable frame."""
        if target not in self.damaged_frames:
            log.warning("%s: frame %d is damaged; showing frame %d instead", self.path.name, target, got)
            self.damaged_frames.add(target)
        return self._cache.get(target - 1) if target - 1 in self._cache else self._cache.get(got)

    def _index_of(self, frame) -> int:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            return self._cursor_next
        return self.index.index_of_pts(int(pts))

    def _seek(self, keyframe: int) -> None:
        self._container.seek(int(self.index.pts[keyframe]), stream=self._stream, backward=True, any_frame=False)
        self._cursor = self._decoded_frames()
        self._cursor_next = keyframe

    def _decoded_frames(self) -> Iterator:
        """Decode packets in order, skipping non-reference frames before the frames we must return.

        A non-reference frame influences no other frame, so skipping it is exact; the switch back
        to full decoding happens at the first packet whose timestamp reaches the first frame kept,
        which is before any packet of a kept frame reaches the decoder.
        """
        context = self._stream.codec_context
        for packet in self._container.demux(self._stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            wanted = ts is None or ts >= self._full_decode_from_pts
            mode = "DEFAULT" if wanted else "NONREF"
            if context.skip_frame != mode:
                context.skip_frame = mode
            yield from packet.decode()

    def close(self) -> None:
        with self._lock:
            if self._container is not None:
                self._container.close()
            self._container, self._cursor = None, None
            self._cache.clear()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "index": self.index, "cache_bytes": self._cache_bytes, "threads": self._threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], frame_index=state["index"], cache_bytes=state["cache_bytes"],
                      threads=state["threads"])


def _decode_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError,)


def _describe_open_error(path: Path, err: Exception) -> str:
    text = str(err)
    if "moov atom not found" in text or "Invalid data" in text:
        return (
            f"{path}: not a readable video: the file is truncated or still being written (its index is "
            f"missing), or it is not a video at all ({text}). If a recording was cut off, recover it with a "
            "repair tool such as untrunc and open the result"
        )
    return f"{path}: cannot open video ({text})"


def open_video(path: str | Path, **kwargs) -> VideoReader:
    """Open a video for reading; raises :class:`VideoError` with the file and problem named."""
    return VideoReader(path, **kwargs)
