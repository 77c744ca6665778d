"""Frame-accurate, lazy video reading with PyAV.

Nothing is loaded whole: the reader demuxes once to index frames (see :mod:`.frame_index`),
then decodes on demand. A decoder cursor makes sequential reads run at full decode speed, a
seek to the last keyframe makes random access exact, and a byte-budgeted cache of decoded
frames makes stepping back and forth instant. While a user scrubs, a background filler decodes the
rest of each GOP visited (see :mod:`.gop_filler`), so moving around a position is served from memory.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.errors import VideoError
from napari_sbl.io.frame_cache import FrameCache
from napari_sbl.io.frame_index import FrameIndex, build_frame_index
from napari_sbl.io.gop_filler import DEFAULT_GOP_CACHE_BYTES, GopFiller
from napari_sbl.io.kept_frame import keep_frame, kept_nbytes
from napari_sbl.io.packet_decoding import decode_errors, decode_packets, open_video_stream
from napari_sbl.io.request_history import RequestHistory

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
    slicing threads and dask workers can share it. ``cache_bytes`` bounds the frames the reader
    decodes itself; ``gop_cache_bytes`` bounds the GOPs filled in the background while a user
    scrubs (0 turns the filler off).
    """

    def __init__(
        self,
        path: str | Path,
        frame_index: FrameIndex | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        threads: int | None = None,
        allow_truncated: bool = False,
        gop_cache_bytes: int = DEFAULT_GOP_CACHE_BYTES,
    ) -> None:
        self.path = Path(path)
        self._cache_bytes = cache_bytes
        self._gop_cache_bytes = gop_cache_bytes
        self._threads = threads if threads is not None else min(os.cpu_count() or 1, 8)
        self._allow_truncated = allow_truncated
        self._lock = threading.RLock()
        self._cache = FrameCache(cache_bytes)
        self._container = None
        self._stream = None
        self._cursor: Iterator | None = None
        self._cursor_next = -1
        self._full_decode_from_pts = 0
        self._history = RequestHistory()
        self.frames_decoded = 0
        """Frames the foreground decoder has produced (instrumentation: cache hits do not count)."""
        self.damaged_frames: set[int] = set()
        self.gop_filler: GopFiller | None = None
        self._open()
        self.index = frame_index if frame_index is not None else build_frame_index(
            self._container, self._stream, self.path
        )
        self._prime_decoder()
        self._check_tail()
        self.info = self._make_info()
        self.gop_filler = self._make_filler()

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
        self._container, self._stream = open_video_stream(self.path, self._threads)
        ctx = self._stream.codec_context
        if ctx.name is None or ctx.width == 0:
            raise VideoError(f"{self.path}: unsupported or unknown video codec")
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
        self._history.record(frame_index)
        if self.gop_filler is not None and self._history.playing():
            self.gop_filler.drop_jobs()
        cached = self._cache.get(frame_index)
        if cached is not None:
            return cached
        filled = self._filled(frame_index)
        if filled is not None:
            return filled
        with self._lock:
            return self._decode_or_wait(frame_index)

    def _filled(self, frame_index: int) -> np.ndarray | None:
        """A frame the background filler decoded, kept as RGB from now on (stepping next to it stays instant)."""
        image = self.gop_filler.rgb(frame_index) if self.gop_filler is not None else None
        if image is not None:
            self._cache.put(frame_index, image)
        return image

    def _decode_or_wait(self, frame_index: int) -> np.ndarray:
        cached = self._cache.get(frame_index)  # another thread may have decoded it meanwhile
        if cached is not None:
            return cached
        filler = self.gop_filler
        if filler is None:
            return self._decode_to(frame_index, keep_behind=self._keep_behind(frame_index))
        image = filler.wait_for(frame_index, self._decoder_start(frame_index))
        if image is not None:
            self._cache.put(frame_index, image)
            return image
        with filler.foreground():
            image = self._decode_to(frame_index, keep_behind=self._keep_behind(frame_index))
        if self._history.scrubbing():
            filler.fill_around(frame_index)
        return image

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
        return 0 if self._reads_on_to(frame_index) else KEEP_BEHIND_FRAMES

    def _reads_on_to(self, target: int) -> bool:
        """The decoder cursor sits in ``target``'s GOP, at or before it: decoding can go on from there."""
        return self._cursor is not None and self.index.keyframe_before(target) <= self._cursor_next <= target

    def _decoder_start(self, target: int) -> int:
        """Where decoding toward ``target`` starts: the cursor if it can read on, else the keyframe."""
        return self._cursor_next if self._reads_on_to(target) else self.index.keyframe_before(target)

    def _decode_to(self, target: int, keep_behind: int) -> np.ndarray:
        if not self._reads_on_to(target):
            self._seek(self.index.keyframe_before(target))
        first_kept = max(target - keep_behind, 0)
        self._full_decode_from_pts = int(self.index.pts[first_kept])
        try:
            while True:
                frame = next(self._cursor)
                self.frames_decoded += 1
                index = self.index.index_of_frame(frame, self._cursor_next)
                if index < 0:
                    continue
                self._cursor_next = index + 1
                if index >= first_kept:
                    image = self._keep(index, frame, target)
                    if index >= target:
                        return image if index == target else self._damaged(target, index, image)
        except StopIteration:
            self._cursor, self._cursor_next = None, -1
            raise VideoError(f"{self.path}: frame {target} cannot be decoded (file ends early)") from None
        except decode_errors() as err:
            self._cursor, self._cursor_next = None, -1
            raise VideoError(f"{self.path}: frame {target} cannot be decoded ({err})") from err

    def _keep(self, frame_index: int, frame, target: int) -> np.ndarray | None:
        """Cache a decoded frame: as RGB near the target; further back, as planes in the GOP cache when
        there is one (a bulk step back then costs a copy per frame, not an RGB conversion)."""
        if self.gop_filler is not None and frame_index < target - KEEP_BEHIND_FRAMES:
            self.gop_filler.store.put(frame_index, keep_frame(frame))
            return None
        image = frame.to_ndarray(format="rgb24")
        self._cache.put(frame_index, image)
        return image

    def _damaged(self, target: int, got: int, image: np.ndarray) -> np.ndarray:
        """The decoder skipped ``target`` (corrupt data): serve the nearest decodable frame."""
        if target not in self.damaged_frames:
            log.warning("%s: frame %d is damaged; showing frame %d instead", self.path.name, target, got)
            self.damaged_frames.add(target)
        previous = self._cache.get(target - 1)
        return previous if previous is not None else image

    def _seek(self, keyframe: int) -> None:
        self._container.seek(int(self.index.pts[keyframe]), stream=self._stream, backward=True, any_frame=False)
        self._cursor = decode_packets(self._container, self._stream, lambda ts: ts >= self._full_decode_from_pts)
        self._cursor_next = keyframe

    def _make_filler(self) -> GopFiller | None:
        if self._gop_cache_bytes <= 0:
            return None
        frame_nbytes = kept_nbytes(self.info.pix_fmt, self.width, self.height)
        filler = GopFiller(self.path, self.index, self._gop_cache_bytes, frame_nbytes,
                           threads=max(1, min(self._threads // 2, 4)))  # half the reader's: cores stay free for the UI
        weakref.finalize(self, filler.close)  # stops its thread when the reader is dropped unclosed
        return filler

    def reopened(self) -> VideoReader:
        """A second reader of the same file with its own decoder and caches (no background filler): two
        readers far apart in one video each read on, where one would seek back and forth between them."""
        return VideoReader(self.path, frame_index=self.index, cache_bytes=self._cache_bytes, threads=self._threads,
                           allow_truncated=self._allow_truncated, gop_cache_bytes=0)

    def close(self) -> None:
        if self.gop_filler is not None:
            self.gop_filler.close()
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
        return {"path": self.path, "index": self.index, "cache_bytes": self._cache_bytes, "threads": self._threads,
                "gop_cache_bytes": self._gop_cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], frame_index=state["index"], cache_bytes=state["cache_bytes"],
                      threads=state["threads"], gop_cache_bytes=state.get("gop_cache_bytes", DEFAULT_GOP_CACHE_BYTES))


def open_video(path: str | Path, **kwargs) -> VideoReader:
    """Open a video for reading; raises :class:`VideoError` with the file and problem named."""
    return VideoReader(path, **kwargs)
