"""Each animal's mask on each sampled frame, read from the store once.

Planning measures every sampled mask (centre, body axis and length); registration then needs the same masks
again to replace the background. Rather than read each twice, planning keeps each animal's mask cut to its
bounding box and bit-packed (about 1 KB for a mouse), and crops are cut from those. Measuring looks only
inside the box ``tracks/bbox`` gives for the animal (written with the masks, by the same pass that counted
``tracks/area``); a box that does not hold the animal's whole area is not trusted, and the frame is
measured whole. Reads run on worker threads (:class:`~napari_sbl.store.frame_chunks.FrameChunkReader`
mostly releases the GIL).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from napari_sbl.embed.registration import ABSENT_BODY, body_moments, stack_bodies
from napari_sbl.io.yuv import Box

READ_AHEAD = 64
"""Samples whose masks are in flight at once (bounds the memory of whole label images)."""
MEASURE_THREADS = 2
"""Most threads measuring masks: the work holds the GIL for most of each sample (zstd, moments), so more
threads only contend: on the 9,320-frame test video, 1 thread 0.93 s, 2 1.02, 4 1.12, 16 1.21 (2 cores);
two still overlap the file reads where a store sits on a slow or network disk."""


@dataclass
class AnimalMasks:
    """``boxes`` (M, A, 4) int64 (x0, y0, x1, y1) of each animal's pixels on each sample (zeros where
    absent); ``packed[(row, column)]`` its mask inside that box, ``np.packbits`` of the (h, w) bools."""

    boxes: np.ndarray
    packed: dict[tuple[int, int], np.ndarray]

    def cut(self, row: int, column: int) -> np.ndarray:
        """The animal's (h, w) bool mask inside its own box (empty when absent)."""
        x0, y0, x1, y1 = (int(v) for v in self.boxes[row, column])
        if x1 <= x0 or y1 <= y0:
            return np.zeros((0, 0), dtype=bool)
        bits = np.unpackbits(self.packed[(int(row), int(column))], count=(y1 - y0) * (x1 - x0))
        return bits.reshape(y1 - y0, x1 - x0).view(bool)

    def region(self, row: int, column: int, box: Box) -> np.ndarray:
        """(h, w) bool: the animal's pixels within ``box`` of sample ``row`` (False elsewhere)."""
        x0, y0, x1, y1 = box
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        bx0, by0, bx1, by1 = (int(v) for v in self.boxes[row, column])
        left, top, right, bottom = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
        if right > left and bottom > top:
            out[top - y0 : bottom - y0, left - x0 : right - x0] = \
                self.cut(row, column)[top - by0 : bottom - by0, left - bx0 : right - bx0]
        return out


@dataclass(frozen=True)
class BoxHints:
    """The store's per-frame boxes (T, A, 4) and areas (T, A) of each animal, to look only there."""

    bbox: np.ndarray
    area: np.ndarray

    def account_for(self, labels: np.ndarray, frame_index: int) -> bool:
        """Whether the areas of this frame add up to every labelled pixel, so an animal they call absent is
        (the boxes of the present ones are checked animal by animal)."""
        areas = self.area[frame_index].astype(np.float64)
        return bool(np.all(np.isfinite(areas))) and int(np.count_nonzero(labels)) == round(float(areas.sum()))


def measure_samples(read_labels, animal_ids: np.ndarray, samples: np.ndarray, hints: BoxHints | None,
                    workers: int, reporter) -> tuple[list[dict], AnimalMasks]:
    """Measure every animal on the label images of ``samples`` (M,) frames and keep its cut mask.

    ``read_labels(frame_index)`` → (H, W) labels. Returns one :func:`stack_bodies` dict per sample (the
    measurements over the A ``animal_ids``) and the cut masks.
    """
    ids = np.asarray(animal_ids, dtype=np.int64).reshape(-1)
    boxes = np.zeros((len(samples), len(ids), 4), dtype=np.int64)
    packed: dict[tuple[int, int], np.ndarray] = {}

    def measure(row: int) -> dict:
        reporter.check()
        frame_index = int(samples[row])
        labels = read_labels(frame_index)
        trusted = hints is not None and hints.account_for(labels, frame_index)
        bodies = []
        for column, animal_id in enumerate(ids):
            hint = (hints.bbox[frame_index, column], hints.area[frame_index, column]) if trusted else None
            body, box, cut = _measure_animal(labels, int(animal_id), hint)
            if box is not None:
                boxes[row, column] = box
                packed[(row, column)] = np.packbits(cut)
            bodies.append(body)
        return stack_bodies(bodies)

    measured = list(_in_order(measure, len(samples), min(workers, MEASURE_THREADS), reporter))
    return measured, AnimalMasks(boxes, packed)


def _in_order(measure, count: int, workers: int, reporter) -> Iterator[dict]:
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="embed-masks") as pool:
        for first in range(0, count, READ_AHEAD):
            for result in pool.map(measure, range(first, min(first + READ_AHEAD, count))):
                reporter.advance()
                yield result


def _measure_animal(labels: np.ndarray, animal_id: int, hint: tuple[np.ndarray, float] | None
                    ) -> tuple[dict, Box | None, np.ndarray | None]:
    """(measurements, box of its pixels or None when absent, its bool mask in that box); ``hint``: the
    store's (box, area) of this animal on this frame, from a frame whose areas account for every pixel."""
    if hint is not None:
        box, area = hint
        if not area > 0:
            return dict(ABSENT_BODY), None, None
        if np.all(np.isfinite(box)):
            x0, y0, x1, y1 = (int(v) for v in np.clip(box, 0, (labels.shape[1], labels.shape[0]) * 2))
            cut = labels[y0:y1, x0:x1] == animal_id
            body = body_moments(cut, (x0, y0))
            if body["area"] == area:
                return body, (x0, y0, x1, y1), cut
    mask = labels == animal_id
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return dict(ABSENT_BODY), None, None
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    cut = mask[y0:y1, x0:x1]
    return body_moments(cut, (x0, y0)), (x0, y0, x1, y1), cut
