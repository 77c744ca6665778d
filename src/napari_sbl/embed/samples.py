"""The sampled frames' regions the blocks of clips need, decoded in spans by reader threads, ahead of use.

Samples are split into spans: runs of consecutive needed samples that start at a keyframe and cover about
two keyframe intervals (one, when a short plan would leave readers idle), so that a span is decoded forward
by one decoder and its seek decodes nothing it does not use. Reader threads (each with a decoder of its own,
:class:`~napari_sbl.io.regions.FrameRegionReader`) take spans in the order the blocks first need them,
preferring the span that continues the one they just read (no seek at all), and never more than ``ahead``
blocks beyond the block being assembled, which bounds memory. So the first block's samples come from several
readers at once, and later spans stream in while the encoder works. Each decoded sample keeps, per animal,
the region its clips cut: RGB plus the animal's mask (0/255).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from napari_sbl.embed.clips import ClipPlan, TrackSet
from napari_sbl.embed.masks import AnimalMasks
from napari_sbl.errors import Cancelled
from napari_sbl.io.regions import FrameRegionReader
from napari_sbl.io.yuv import Box

MIN_SPAN_SAMPLES = 32
KEYFRAME_INTERVALS_PER_SPAN = 2


class SampleRegions:
    """Regions of the needed samples, decoded by ``readers`` threads (see the module docstring).

    ``regions`` (M, A, 4): per sample and animal the frame box to keep (x1 = 0: not needed);
    ``first_use`` (M,): the first block (in processing order) that needs each sample, -1 if none.
    Call :meth:`release` with a block index before asking for its samples' :meth:`region`.
    """

    def __init__(self, video, tracks: TrackSet, plan: ClipPlan, masks: AnimalMasks | None, regions: np.ndarray,
                 first_use: np.ndarray, readers: int, ahead: int) -> None:
        self.video, self.tracks, self.plan, self.masks, self.regions = video, tracks, plan, masks, regions
        self.from_file = hasattr(video, "index") and hasattr(video, "path")
        self.readers = max(1, readers) if self.from_file else 1
        self.ahead = ahead
        needed = np.flatnonzero(first_use >= 0)
        self._wanted = plan.sample_frames[needed]
        self._pending = spans_of(needed, first_use, self._groups(needed), self._span_samples())
        self._futures: dict[int, Future] = {int(row): Future() for row in needed}
        self._released = -1
        self._closed = False
        self._lock = threading.Condition()
        self._threads = [threading.Thread(target=self._read, daemon=True, name=f"embed-decode-{k}")
                         for k in range(self.readers if len(self._pending) else 0)]
        for thread in self._threads:
            thread.start()

    def release(self, block: int) -> None:
        """Let readers decode the samples of blocks up to ``block + ahead``."""
        with self._lock:
            if block + self.ahead > self._released:
                self._released = block + self.ahead
                self._lock.notify_all()

    def region(self, row: int, column: int) -> tuple[np.ndarray, tuple[int, int]]:
        """((h, w, 4) uint8 RGB + mask part, (x0, y0) of the part in the frame) of one sample for one animal."""
        return self._futures[int(row)].result()[int(column)]

    def wait(self, rows: np.ndarray) -> None:
        """Block until these samples are decoded (their blocks must be released)."""
        for row in np.unique(rows):
            self._futures[int(row)].result()

    def drop(self, rows: np.ndarray) -> None:
        """Forget decoded samples no later block needs."""
        for row in rows:
            self._futures.pop(int(row), None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(Cancelled("the embedding step stopped before this sample was decoded"))

    # -- reader threads ---------------------------------------------------------------------------------
    def _span_samples(self) -> int:
        """Samples per span: two keyframe intervals' worth, or as few as one interval's when there would not
        be a span for every reader; at least MIN_SPAN_SAMPLES."""
        needed = len(self._wanted)
        if not self.from_file or len(self.video.index.keyframes) < 2:
            return max(MIN_SPAN_SAMPLES, needed)
        frames_per_sample = max(np.median(np.diff(self.plan.sample_frames)) if len(self.plan.sample_frames) > 1
                                else 1.0, 1.0)
        interval = float(np.median(np.diff(self.video.index.keyframes))) / frames_per_sample
        span = np.clip(-(-needed // self.readers), interval, KEYFRAME_INTERVALS_PER_SPAN * interval)
        return max(MIN_SPAN_SAMPLES, int(span))

    def _groups(self, rows: np.ndarray) -> np.ndarray:
        """(N,) the keyframe interval each of ``rows`` lies in (all 0 for sources that are not files)."""
        if not self.from_file:
            return np.zeros(len(rows), np.int64)
        frames = self.plan.sample_frames[rows]
        return np.searchsorted(self.video.index.keyframes, frames, side="right") - 1

    def _read(self) -> None:
        reader, last_row = None, -2
        try:
            while True:
                span = self._next_span(last_row)
                if span is None:
                    return
                for row in span:
                    if self._closed:
                        return
                    future = self._futures.get(int(row))
                    try:
                        reader = reader or self._open()
                        result = self._load(reader, int(row))
                    except BaseException as err:  # handed to whoever waits for this sample
                        if future is not None:
                            future.set_exception(err)
                        continue
                    if future is not None:
                        future.set_result(result)
                last_row = int(span[-1])
        finally:
            if reader is not None:
                reader.close()

    def _next_span(self, last_row: int) -> np.ndarray | None:
        """The released span continuing ``last_row`` if there is one, else the one needed first."""
        with self._lock:
            while not self._closed:
                released = [k for k, (block, _) in enumerate(self._pending) if block <= self._released]
                if released:
                    follow = [k for k in released if int(self._pending[k][1][0]) == last_row + 1]
                    return self._pending.pop(follow[0] if follow else released[0])[1]
                if not self._pending:
                    return None
                self._lock.wait()
            return None

    def _open(self):
        if self.from_file:
            return FrameRegionReader(self.video.path, self.video.index, self._wanted)
        return WholeFrameRegions(self.video)

    def _load(self, reader, row: int) -> dict[int, tuple[np.ndarray, tuple[int, int]]]:
        columns = np.flatnonzero(self.regions[row, :, 2] > 0)
        boxes = [tuple(int(v) for v in self.regions[row, column]) for column in columns]
        index = int(self.plan.sample_frames[row])
        labels = self.tracks.labels(index) if self.masks is None and len(columns) else None
        masks = []
        for column, (x0, y0, x1, y1) in zip(columns, boxes, strict=True):
            mask = (labels[y0:y1, x0:x1] == self.plan.animal_ids[column] if labels is not None
                    else self.masks.region(row, column, (x0, y0, x1, y1)))
            masks.append(mask.view(np.uint8) * np.uint8(255))
        parts = reader.regions(index, boxes, masks)
        return {int(column): (part, (box[0], box[1])) for column, box, part in zip(columns, boxes, parts, strict=True)}


def spans_of(rows: np.ndarray, first_use: np.ndarray, groups: np.ndarray, length: int
             ) -> list[tuple[int, np.ndarray]]:
    """(first block needing it, rows) of each span, in the order they are needed: runs of consecutive needed
    ``rows`` (N,) that end once they hold ``length`` samples and the next row starts a new group (keyframe
    interval, ``groups`` (N,)), so that every span but a run's first starts right after a keyframe."""
    spans, start = [], 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[k - 1] + 1 or (k - start >= length and groups[k] != groups[k - 1]):
            part = rows[start:k]
            spans.append((int(first_use[part].min()), part))
            start = k
    return sorted(spans, key=lambda span: (span[0], int(span[1][0])))


class WholeFrameRegions:
    """Regions cut from whole frames of any frame source (``frame(i)``): for sources that are not files."""

    def __init__(self, video) -> None:
        self.video = video

    def regions(self, frame_index: int, boxes: list[Box], alphas: list[np.ndarray]) -> list[np.ndarray]:
        import cv2

        frame = self.video.frame(frame_index)
        return [cv2.merge([frame[y0:y1, x0:x1], alpha]) for (x0, y0, x1, y1), alpha in zip(boxes, alphas, strict=True)]

    def close(self) -> None:
        pass
