"""The crop pipeline of the embedding step: each block's clips, registered on the host or handed uncut to an
encoder that registers them on its device.

Split from :mod:`napari_sbl.embed.run` (which drives it block by block). The sampled frames come from
:mod:`napari_sbl.embed.samples` (reader threads decoding spans, keeping only the regions the planned clips
cut, so memory follows the blocks in flight rather than the video).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from napari_sbl.embed.clip_sources import ClipSources, pack_sources, photometry_of
from napari_sbl.embed.clips import ClipPlan, TrackGeometry, TrackSet
from napari_sbl.embed.registration import Jitter, RegistrationParams, box_size_px, crop_transform, register_clip
from napari_sbl.embed.samples import SampleRegions

DECODED_BYTES_AHEAD = 2 << 30
"""Decoded sample regions the readers may hold ahead of the encoder (2 GiB)."""


def iter_samples(video, tracks: TrackSet, plan: ClipPlan, pool: ThreadPoolExecutor,
                 chunk: int = 32) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row, frame, labels) for every sample in order; masks are read on ``pool`` while frames decode."""
    for first in range(0, len(plan.sample_frames), chunk):
        rows = range(first, min(first + chunk, len(plan.sample_frames)))
        labels = [pool.submit(tracks.labels, plan.sample_frames[row]) for row in rows]
        for row, future in zip(rows, labels, strict=True):
            yield row, video.frame(int(plan.sample_frames[row])), future.result()


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


class CropBuilder:
    """Registered clips of the planned blocks, block by block: cut on worker threads (:meth:`block`) or
    handed uncut to an encoder that registers them on its device (:meth:`sources`).

    ``blocks``: entry arrays in processing order; ``readers``: threads decoding the samples (see
    :mod:`napari_sbl.embed.samples`); ``copies``: augmented copies that will be asked for. Each
    entry's clip is cut from one frame region that all its copies' crops stay inside; each sample keeps the
    union of its entries' regions.
    """

    def __init__(self, video, tracks: TrackSet, plan: ClipPlan, geometry: TrackGeometry,
                 registration: RegistrationParams, seed: int, pool: ThreadPoolExecutor, blocks: list[np.ndarray],
                 readers: int = 1, copies: int = 0) -> None:
        self.plan, self.registration, self.seed, self.pool, self.blocks = plan, registration, seed, pool, blocks
        self.copies = copies
        self.boxes = [box_size_px(registration, length) for length in geometry.body_length_px()]
        self.filled = [geometry.filled(column) for column in range(len(plan.animal_ids))]
        entries = np.concatenate(blocks).astype(np.int64) if blocks else np.zeros(0, np.int64)
        boxes = self._regions(entries, video.width, video.height)
        self.entry_regions = {entry: tuple(box) for entry, box in zip(entries.tolist(), boxes.tolist(), strict=True)}
        block_of = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
        regions, first_use, self.last_use = self._sample_regions(entries, boxes, block_of)
        self.samples = SampleRegions(video, tracks, plan, geometry.masks, regions, first_use, readers,
                                     blocks_ahead(regions, first_use, len(blocks), readers))
        self.samples.release(0)  # the readers start now
        self._packed: tuple[int, ClipSources, np.ndarray] | None = None  # (block, regions, origins) of sources()

    def block(self, index: int, copy: int = 0) -> np.ndarray:
        """(B, Tc, S, S, C) uint8 clips of block ``index``; ``copy`` k >= 1 jitters each clip reproducibly.
        Lets the readers decode the next blocks' samples meanwhile."""
        self.samples.release(index)
        return np.stack(list(self.pool.map(lambda entry: self.clip(int(entry), copy), self.blocks[index])))

    def sources(self, index: int, copy: int = 0) -> ClipSources:
        """Block ``index`` uncut, for an encoder that registers on its device (the clips of :meth:`block`).
        The regions are packed once per block; each copy only places its clips differently."""
        self.samples.release(index)
        if self._packed is None or self._packed[0] != index:
            self._packed = (index, *self._pack(index))
        _, table, origins = self._packed
        entries = self.blocks[index]
        matrix = np.zeros((len(entries), self.plan.clip_frames, 2, 3), np.float32)
        photometry = np.zeros((len(entries), 3), np.float32)
        for b, entry in enumerate(entries):
            jitter = self._jitter(int(entry), copy)
            matrix[b] = self._transforms(int(entry), jitter)
            photometry[b] = photometry_of(jitter)
        matrix[..., 2] -= origins[table.source]
        return replace(table, matrix=matrix, photometry=photometry)

    def _pack(self, index: int) -> tuple[ClipSources, np.ndarray]:
        """The block's (sample, animal) regions in one table, each clip frame pointing at its region, and
        the (x, y) origin of each region in its frame."""
        entries = self.blocks[index]
        slots: dict[tuple[int, int], int] = {}
        parts: list[tuple[np.ndarray, tuple[int, int]]] = []
        source = np.zeros((len(entries), self.plan.clip_frames), np.int32)
        for b, entry in enumerate(entries):
            column = int(self.plan.entry_column[entry])
            for t, row in enumerate(self.plan.clip_rows[self.plan.entry_clip[entry]]):
                key = (int(row), column)
                if key not in slots:
                    slots[key] = len(parts)
                    parts.append(self.samples.region(row, column))
                source[b, t] = slots[key]
        unplaced = np.zeros((*source.shape, 2, 3), np.float32), np.zeros((len(entries), 3), np.float32)
        table = pack_sources([pixels for pixels, _ in parts], source, *unplaced, self.pool)
        return table, np.array([origin for _, origin in parts], dtype=np.float32).reshape(-1, 2)

    def done(self, index: int) -> None:
        """Forget the samples no later block needs (and the block's packed regions)."""
        self.samples.drop(np.flatnonzero(self.last_use == index))
        if self._packed is not None and self._packed[0] == index:
            self._packed = None

    def clip(self, entry: int, copy: int = 0) -> np.ndarray:
        """(Tc, S, S, C) uint8: one entry's clip, registered here with OpenCV."""
        column = int(self.plan.entry_column[entry])
        rows = self.plan.clip_rows[self.plan.entry_clip[entry]]
        centres, headings = self.filled[column][0][rows], self.filled[column][1][rows]
        x0, y0, x1, y1 = self.entry_regions[entry]
        parts = []  # (h, w, 4) views: RGB and the mask, warped together
        for row in rows:
            part, (ox, oy) = self.samples.region(row, column)
            parts.append(part[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
        return register_clip(parts, None, centres - (x0, y0), headings, self.boxes[column],
                             int(self.registration.size_px), self.registration, self._jitter(entry, copy))

    def _jitter(self, entry: int, copy: int) -> Jitter | None:
        return Jitter.draw(np.random.default_rng([self.seed, copy, entry])) if copy else None

    def _transforms(self, entry: int, jitter: Jitter | None) -> np.ndarray:
        """(Tc, 2, 3) crop → frame maps of the entry's frames, as :func:`register_clip` makes them."""
        column = int(self.plan.entry_column[entry])
        rows = self.plan.clip_rows[self.plan.entry_clip[entry]]
        centres, headings = self.filled[column][0][rows], self.filled[column][1][rows]
        size, align = int(self.registration.size_px), self.registration.align == "body"
        if self.registration.anchor == "first":
            return np.repeat(crop_transform(centres[0], headings[0], self.boxes[column], size, align, jitter)[None],
                             len(rows), axis=0)
        return np.stack([crop_transform(centres[t], headings[t], self.boxes[column], size, align, jitter)
                         for t in range(len(rows))])

    def _regions(self, entries: np.ndarray, width: int, height: int) -> np.ndarray:
        """(N, 4) int64 (x0, y0, x1, y1) of each entry: the part of the frame holding every pixel its crops
        sample, in every copy (the bounding box of the crops' corners, widened by the neighbours bilinear
        sampling reads). The maps are the crops' own; the corners of all entries are found at once."""
        last = int(self.registration.size_px) - 1
        corners = np.array([[0, last, 0, last], [0, 0, last, last], [1, 1, 1, 1]], dtype=float)
        maps = [self._transforms(entry, self._jitter(entry, copy))
                for entry in entries.tolist() for copy in range(self.copies + 1)]
        if not maps:
            return np.zeros((0, 4), np.int64)
        points = (np.stack(maps) @ corners).reshape(len(entries), -1, 2, 4)  # (N, copies·Tc, 2, 4)
        top_left = np.clip(np.floor(points.min(axis=(1, 3))).astype(np.int64) - 1, 0, (width - 1, height - 1))
        bottom_right = np.clip(np.floor(points.max(axis=(1, 3))).astype(np.int64) + 3, top_left + 1, (width, height))
        return np.concatenate([top_left, bottom_right], axis=1)

    def _sample_regions(self, entries: np.ndarray, boxes: np.ndarray, block_of: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(M, A, 4) union of the ``boxes`` (N, 4) of the ``entries`` using each sample (0 = unused), and (M,)
        the index of the first and of the last block using each sample (-1 = none); ``block_of``: (N,) the
        block of each entry."""
        n_samples, n_animals = len(self.plan.sample_frames), len(self.plan.animal_ids)
        regions = np.zeros((n_samples, n_animals, 4), dtype=np.int64)
        regions[..., :2] = np.iinfo(np.int64).max
        first_use = np.full(n_samples, np.iinfo(np.int64).max)
        last_use = np.full(n_samples, -1)
        rows = self.plan.rows(entries)  # (N, Tc)
        steps = rows.shape[1]
        rows, columns = rows.ravel(), np.repeat(self.plan.entry_column[entries], steps)
        boxes, uses = np.repeat(boxes, steps, axis=0), np.repeat(block_of, steps)
        for side in range(4):
            combine = np.minimum if side < 2 else np.maximum
            combine.at(regions[..., side], (rows, columns), boxes[:, side])
        np.minimum.at(first_use, rows, uses)
        np.maximum.at(last_use, rows, uses)
        first_use[first_use == np.iinfo(np.int64).max] = -1
        regions[regions[..., 2] == 0] = 0
        return regions, first_use, last_use


def blocks_ahead(regions: np.ndarray, first_use: np.ndarray, n_blocks: int, readers: int) -> int:
    """How many blocks the readers may decode ahead of the one being assembled: one per reader and one more
    (enough spans for every reader at stride 8, and readers to spare at stride 2), within
    DECODED_BYTES_AHEAD of decoded regions."""
    if not n_blocks:
        return 1
    areas = (regions[..., 2] - regions[..., 0]) * (regions[..., 3] - regions[..., 1])
    block_bytes = max(1, int(areas[first_use >= 0].sum()) * 4 // n_blocks)
    return int(np.clip(readers + 1, 2, max(2, DECODED_BYTES_AHEAD // block_bytes)))
