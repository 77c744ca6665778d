"""The crop pipeline of the embedding step: sampled frames decoded in parallel, cut to each animal's region, and
registered into the clips an encoder sees.

Split from :mod:`napari_sbl.embed.run` (which drives it block by block): decoders keep only the frame regions the
planned clips will cut, so memory follows the blocks in flight rather than the video.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from napari_sbl.embed.clips import ClipPlan, TrackGeometry, TrackSet
from napari_sbl.embed.registration import Jitter, RegistrationParams, box_size_px, register_clip


def iter_samples(video, tracks: TrackSet, plan: ClipPlan, pool: ThreadPoolExecutor,
                 chunk: int = 32) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row, frame, labels) for every sample in order; masks are read on ``pool`` while frames decode."""
    for first in range(0, len(plan.sample_frames), chunk):
        rows = range(first, min(first + chunk, len(plan.sample_frames)))
        labels = [pool.submit(tracks.labels, plan.sample_frames[row]) for row in rows]
        for row, future in zip(rows, labels, strict=True):
            yield row, video.frame(int(plan.sample_frames[row])), future.result()


class SampleStreams:
    """Each animal's region of the samples the blocks need, decoded by several readers in parallel.

    Reader k decodes the k-th contiguous span of samples with its own decoder (blocks are interleaved
    across spans, so every decoder has work); each decoded sample keeps only the regions clips will cut
    from it, frame and animal mask, and is dropped after the last block that uses it.
    """

    def __init__(self, video, tracks: TrackSet, plan: ClipPlan, regions: np.ndarray, streams: int) -> None:
        self.tracks, self.plan, self.regions = tracks, plan, regions
        self.readers = [video, *(reopen_video(video) for _ in range(streams - 1))]
        self._decoders = [ThreadPoolExecutor(1, thread_name_prefix="embed-decode") for _ in self.readers]
        self._samples: dict[int, Future] = {}

    def stream_of(self, row: int) -> int:
        return int(row) * len(self.readers) // len(self.plan.sample_frames)

    def request(self, rows: np.ndarray) -> None:
        for row in np.unique(rows):
            if int(row) not in self._samples:
                decoder = self._decoders[self.stream_of(row)]
                self._samples[int(row)] = decoder.submit(self._load, self.readers[self.stream_of(row)], int(row))

    def _load(self, reader, row: int) -> dict[int, tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
        index = int(self.plan.sample_frames[row])
        frame, labels = reader.frame(index), self.tracks.labels(index)
        cuts = {}
        for column in np.flatnonzero(self.regions[row, :, 2] > 0):
            x0, y0, x1, y1 = (int(v) for v in self.regions[row, column])
            cuts[int(column)] = (frame[y0:y1, x0:x1].copy(), labels[y0:y1, x0:x1] == self.plan.animal_ids[column],
                                 (x0, y0))
        return cuts

    def region(self, row: int, column: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(frame part, mask part, (x0, y0) of the part in the frame) of one sample for one animal."""
        return self._samples[int(row)].result()[int(column)]

    def drop(self, rows: np.ndarray) -> None:
        for row in rows:
            self._samples.pop(int(row), None)

    def close(self) -> None:
        for decoder in self._decoders:
            decoder.shutdown(wait=True, cancel_futures=True)


@contextmanager
def opencv_single_threaded(workers: int) -> Iterator[None]:
    """Our worker threads already register clips in parallel; OpenCV's own thread pool under each of them
    oversubscribes the cores (on 16 cores registration scaled 1.8× instead of ~10×). Restored after."""
    import cv2

    before = cv2.getNumThreads()
    if workers > 1:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def reopen_video(video):
    """A second reader of the same file (its own decoder), sharing the frame index."""
    return type(video)(video.path, frame_index=video.index)


class CropBuilder:
    """Registered clips of the planned blocks, block by block, on worker threads.

    ``blocks``: entry arrays in processing order. Each entry's clip is cut from one frame region that any
    rotation, scale and shift of its box stays inside; each sample keeps the union of its entries' regions.
    """

    def __init__(self, video, tracks: TrackSet, plan: ClipPlan, geometry: TrackGeometry,
                 registration: RegistrationParams, seed: int, pool: ThreadPoolExecutor, blocks: list[np.ndarray],
                 streams: int = 1) -> None:
        self.plan, self.registration, self.seed, self.pool, self.blocks = plan, registration, seed, pool, blocks
        self.boxes = [box_size_px(registration, length) for length in geometry.body_length_px()]
        self.filled = [geometry.filled(column) for column in range(len(plan.animal_ids))]
        self.entry_regions = {int(e): self._region(int(e), video.width, video.height) for b in blocks for e in b}
        regions, self.last_use = self._sample_regions(len(plan.animal_ids))
        parallel = bool(blocks) and hasattr(video, "index") and hasattr(video, "path")
        self.samples = SampleStreams(video, tracks, plan, regions, streams if parallel else 1)

    def block(self, index: int, copy: int = 0) -> np.ndarray:
        """(B, Tc, S, S, C) uint8 clips of block ``index``; ``copy`` k >= 1 jitters each clip reproducibly.

        Asks for the samples of the next blocks too, so the decoders work ahead of registration.
        """
        for ahead in self.blocks[index : index + len(self.samples.readers) + 1]:
            self.samples.request(self.plan.rows(ahead))
        return np.stack(list(self.pool.map(lambda entry: self.clip(int(entry), copy), self.blocks[index])))

    def done(self, index: int) -> None:
        """Forget the samples no later block needs."""
        self.samples.drop(np.flatnonzero(self.last_use == index))

    def clip(self, entry: int, copy: int = 0) -> np.ndarray:
        column = int(self.plan.entry_column[entry])
        rows = self.plan.clip_rows[self.plan.entry_clip[entry]]
        centres, headings = self.filled[column][0][rows], self.filled[column][1][rows]
        jitter = Jitter.draw(np.random.default_rng([self.seed, copy, entry])) if copy else None
        x0, y0, x1, y1 = self.entry_regions[entry]
        frames, masks = [], []
        for row in rows:
            frame, mask, (ox, oy) = self.samples.region(row, column)
            frames.append(frame[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
            masks.append(mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
        return register_clip(np.stack(frames), np.stack(masks), centres - (x0, y0), headings, self.boxes[column],
                             int(self.registration.size_px), self.registration, jitter)

    def _region(self, entry: int, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in the frame that holds every pixel the entry's crops can sample."""
        column = int(self.plan.entry_column[entry])
        rows = self.plan.clip_rows[self.plan.entry_clip[entry]]
        centres = self.filled[column][0][rows[:1] if self.registration.anchor == "first" else rows]
        reach = 0.9 * self.boxes[column] + 2  # covers ±15° rotation, 0.9× scale and 5 % shift of the box
        x0, y0 = np.clip(np.floor(centres.min(axis=0) - reach).astype(int), 0, (width - 1, height - 1))
        x1, y1 = np.clip(np.ceil(centres.max(axis=0) + reach).astype(int) + 1, (x0 + 1, y0 + 1), (width, height))
        return int(x0), int(y0), int(x1), int(y1)

    def _sample_regions(self, n_animals: int) -> tuple[np.ndarray, np.ndarray]:
        """(M, A, 4) union of the regions of the entries using each sample (0 = unused) and (M,) the
        index of the last block using each sample (-1 = none)."""
        regions = np.zeros((len(self.plan.sample_frames), n_animals, 4), dtype=np.int64)
        regions[..., :2] = np.iinfo(np.int64).max
        last_use = np.full(len(self.plan.sample_frames), -1)
        for index, entries in enumerate(self.blocks):
            for entry in entries:
                rows, column = self.plan.rows(np.array([entry]))[0], int(self.plan.entry_column[entry])
                box = self.entry_regions[int(entry)]
                regions[rows, column, :2] = np.minimum(regions[rows, column, :2], box[:2])
                regions[rows, column, 2:] = np.maximum(regions[rows, column, 2:], box[2:])
                last_use[rows] = np.maximum(last_use[rows], index)
        regions[regions[..., 2] == 0] = 0
        return regions, last_use

