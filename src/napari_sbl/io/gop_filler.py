"""Background decoding of the rest of a GOP, so a user scrubbing around a position gets frames from memory.

Random access costs a decode from the last keyframe; a user dragging a time slider back and forth asks
for many frames of the same few GOPs. After the reader answers a request, a :class:`GopFiller` decodes
that request's whole GOP (every frame, exactly as sequential decoding gives it) on its own thread, with
its own decoder, into a byte-budgeted cache. It waits whenever the foreground decodes (the foreground
needs the CPU more), switches to the newest request's GOP between two frames, and a request for a frame
it is about to produce waits for it instead of starting a second decode from the keyframe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sbl.io.frame_cache import FrameCache
from napari_sbl.io.frame_index import FrameIndex
from napari_sbl.io.kept_frame import RgbConverter, keep_frame
from napari_sbl.io.packet_decoding import decode_packets, open_video_stream

log = logging.getLogger(__name__)

DEFAULT_GOP_CACHE_BYTES = 512 * 1024 * 1024
MAX_PENDING_JOBS = 3
"""GOPs waiting to be filled, newest first; older requests are forgotten (the user has moved on)."""
FILLER_FRAME_COST = 2
"""A frame costs the filler about twice what it costs the foreground, which uses every decoder thread
and skips non-reference frames; so a request waits for the filler only when it is twice as close."""


@dataclass(frozen=True)
class FillJob:
    """Frames ``start`` up to (not including) ``stop`` to decode into the cache."""

    start: int
    stop: int

    def __contains__(self, frame_index: int) -> bool:
        return self.start <= frame_index < self.stop


class GopFiller:
    """Fills GOPs around requested frames on a background thread (started on the first job).

    ``frame_nbytes`` is what one kept frame costs (for sizing jobs to the budget); ``threads`` are the
    filler decoder's. Frames the reader also holds as RGB are kept here too (a few per GOP), so the reader's
    smaller cache can let them go without leaving holes in a filled GOP.
    """

    def __init__(self, path: Path, index: FrameIndex, budget_bytes: int, frame_nbytes: int, threads: int = 1) -> None:
        self.path, self.index = Path(path), index
        self.store = FrameCache(budget_bytes)
        self.frames_filled = 0
        self._frame_nbytes = frame_nbytes
        self._threads = threads
        self._to_rgb = RgbConverter()
        self._changed = threading.Condition()
        self._jobs: list[FillJob] = []
        self._active: FillJob | None = None
        self._position = -1
        self._foreground = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._container = None
        self._stream = None

    # -- the foreground's side --------------------------------------------------------------------
    def rgb(self, frame_index: int) -> np.ndarray | None:
        """Frame ``frame_index`` as (H, W, 3) uint8 RGB if it has been filled, else None."""
        kept = self.store.get(frame_index)
        return None if kept is None else self._to_rgb(kept)

    def job_for(self, frame_index: int) -> FillJob:
        """The GOP of ``frame_index``, or the window of it around the frame that half the budget holds."""
        start, stop = self.index.gop_of(frame_index)
        limit = max(1, self.store.capacity_frames(self._frame_nbytes) // 2)
        if stop - start > limit:
            start = max(start, min(frame_index - limit // 2, stop - limit))
            stop = start + limit
        return FillJob(start, stop)

    def fill_around(self, frame_index: int) -> None:
        """Queue the job holding ``frame_index`` first (an existing one moves to the front)."""
        with self._changed:
            if self._closed:
                return
            job = next((j for j in self._jobs if frame_index in j), None) or self.job_for(frame_index)
            self._jobs = [job, *(j for j in self._jobs if j != job)][:MAX_PENDING_JOBS]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"gop-fill {self.path.name}", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def drop_jobs(self) -> None:
        """Stop filling (the reader is reading on by itself)."""
        with self._changed:
            if self._jobs:
                self._jobs.clear()
                self._changed.notify_all()

    def wait_for(self, frame_index: int, decoder_start: int) -> np.ndarray | None:
        """Frame ``frame_index`` as RGB once filled, if the filler is decoding toward it and will get there
        sooner than the foreground would from ``decoder_start``; else None at once."""
        with self._changed:
            while (kept := self.store.get(frame_index)) is None:
                if not self._on_its_way(frame_index, decoder_start):
                    return None
                self._changed.wait(timeout=1.0)
        return self._to_rgb(kept)

    def _on_its_way(self, frame_index: int, decoder_start: int) -> bool:
        job, position = self._active, self._position
        if self._closed or job is None or frame_index not in job or self._jobs[:1] != [job]:
            return False
        if not 0 <= position <= frame_index:
            return False
        return FILLER_FRAME_COST * (frame_index - position) <= frame_index - decoder_start

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """While the foreground decodes, the filler waits after its current frame."""
        with self._changed:
            self._foreground += 1
        try:
            yield
        finally:
            with self._changed:
                self._foreground -= 1
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is left (True), or ``timeout`` seconds (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._jobs or self._closed, timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def position(self) -> int:
        """The next frame the filler's decoder will produce (-1 between jobs)."""
        return self._position

    def close(self) -> None:
        """Stop the thread (it closes its decoder) and drop the filled frames."""
        with self._changed:
            self._closed = True
            self._jobs.clear()
            self._changed.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
        self.store.clear()

    # -- the filler thread ------------------------------------------------------------------------
    def _run(self) -> None:
        import av

        try:
            while (job := self._next_job()) is not None:
                try:
                    done = self._fill(job)
                except (av.error.FFmpegError, OSError) as err:
                    log.debug("%s: background fill of frames %d..%d failed (%s)", self.path.name, job.start,
                              job.stop - 1, err)
                    self._close_decoder()
                    done = True
                with self._changed:
                    self._active, self._position = None, -1
                    if done and job in self._jobs:
                        self._jobs.remove(job)
                    self._changed.notify_all()
        finally:
            self._close_decoder()

    def _next_job(self) -> FillJob | None:
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._jobs)
            if self._closed:
                return None
            self._active, self._position = self._jobs[0], -1
            return self._active

    def _fill(self, job: FillJob) -> bool:
        """Decode ``job``'s missing frames into the store; False if a newer job or closing cut it short."""
        missing = [i for i in range(job.start, job.stop) if i not in self.store]
        if not missing:
            return True
        first, last = missing[0], missing[-1]
        keyframe = self.index.keyframe_before(first)
        full_decode_from_pts = int(self.index.pts[first])
        container, stream = self._decoder()
        container.seek(int(self.index.pts[keyframe]), stream=stream, backward=True, any_frame=False)
        self._move_to(keyframe)
        for frame in decode_packets(container, stream, lambda ts: ts >= full_decode_from_pts):
            if not self._may_continue(job):
                return False
            frame_index = self.index.index_of_frame(frame, self._position)
            if frame_index < 0:
                continue
            if frame_index >= first and frame_index in job and frame_index not in self.store:
                self.store.put(frame_index, keep_frame(frame))
                self.frames_filled += 1
            self._move_to(frame_index + 1)
            if frame_index >= last:
                return True
        return True

    def _may_continue(self, job: FillJob) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._closed or not self._foreground)
            return not self._closed and self._jobs[:1] == [job]

    def _move_to(self, position: int) -> None:
        with self._changed:
            self._position = position
            self._changed.notify_all()

    def _decoder(self):
        """This thread's own (container, stream), opened and primed on first use."""
        if self._container is None:
            container, stream = open_video_stream(self.path, self._threads)
            # the first frame before any seek, as VideoReader._prime_decoder explains
            next(decode_packets(container, stream, lambda ts: True), None)
            self._container, self._stream = container, stream
        return self._container, self._stream

    def _close_decoder(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._stream = None, None
