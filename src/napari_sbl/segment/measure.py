"""Per-animal measurements of a label image, in one pass over its foreground pixels.

Every backend's masks are measured the same way, so centroid, box and area mean the same thing
whichever tracker made them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelMeasurements:
    """What :func:`measure_labels` returns, with the ids its rows belong to.

    A backend that measures its masks anyway (SAM2 does, on the GPU) hands this along with the
    labels, so the tracking step does not measure the same image again.
    """

    animal_ids: np.ndarray  # (A,) int
    centroid: np.ndarray  # (A, 2) float32 (x, y), NaN where absent
    bbox: np.ndarray  # (A, 4) float32 (x0, y0, x1, y1), x1/y1 exclusive, NaN where absent
    area: np.ndarray  # (A,) float32 pixel counts

    @classmethod
    def of(cls, labels: np.ndarray, animal_ids: np.ndarray) -> LabelMeasurements:
        ids = np.asarray(animal_ids, dtype=np.int64).reshape(-1)
        return cls(ids, *measure_labels(labels, ids))

    def for_ids(self, animal_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(centroid, bbox, area) in the order of ``animal_ids``; None unless every id was measured."""
        row_of = {int(i): k for k, i in enumerate(self.animal_ids)}
        try:
            rows = [row_of[int(i)] for i in np.asarray(animal_ids).reshape(-1)]
        except KeyError:
            return None
        return self.centroid[rows], self.bbox[rows], self.area[rows]


def measure_labels(
    labels: np.ndarray, animal_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, bounding box and area of each animal in ``labels``.

    ``labels``: (H, W) integer image, 0 = background, value = animal id.
    ``animal_ids``: (A,) ids to measure, in the order the results use.

    Returns ``centroid`` (A, 2) float32 (x, y) px, ``bbox`` (A, 4) float32 (x0, y0, x1, y1) px with
    x1, y1 exclusive (so x1 - x0 is the width), both NaN where the animal is absent, and ``area``
    (A,) float32 pixel counts (0 where absent).
    """
    ids = np.asarray(animal_ids, dtype=np.int64).reshape(-1)
    n_ids = len(ids)
    centroid = np.full((n_ids, 2), np.nan, dtype=np.float32)
    bbox = np.full((n_ids, 4), np.nan, dtype=np.float32)
    area = np.zeros(n_ids, dtype=np.float32)
    height, width = labels.shape
    flat = np.ascontiguousarray(labels).reshape(-1)
    foreground = np.flatnonzero(flat != 0)
    if n_ids == 0 or foreground.size == 0:
        return centroid, bbox, area
    values = flat[foreground].astype(np.int64)
    row_of_value = np.full(max(int(values.max()), int(ids.max(initial=0)), 0) + 1, -1, dtype=np.int64)
    row_of_value[ids[ids >= 0]] = np.flatnonzero(ids >= 0)
    rows = row_of_value[values]
    keep = rows >= 0
    rows, foreground = rows[keep], foreground[keep]
    ys, xs = np.divmod(foreground, width)
    counts = np.bincount(rows, minlength=n_ids)
    present = counts > 0
    area[:] = counts
    centroid[present, 0] = np.bincount(rows, weights=xs, minlength=n_ids)[present] / counts[present]
    centroid[present, 1] = np.bincount(rows, weights=ys, minlength=n_ids)[present] / counts[present]
    bbox[present, 0], bbox[present, 2] = _extent(rows, xs, n_ids, width, present)
    bbox[present, 1], bbox[present, 3] = _extent(rows, ys, n_ids, height, present)
    return centroid, bbox, area


def _extent(rows: np.ndarray, coordinate: np.ndarray, n_rows: int, size: int, present: np.ndarray):
    """First and one-past-last occupied coordinate of each present row, from an occupancy table.

    The (rows, size) table costs one bincount, unlike a sort of every foreground pixel.
    """
    occupied = np.bincount(rows * size + coordinate, minlength=n_rows * size).reshape(n_rows, size)[present] > 0
    first = np.argmax(occupied, axis=1)
    last = size - np.argmax(occupied[:, ::-1], axis=1)
    return first, last
