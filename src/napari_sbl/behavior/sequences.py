"""Per-frame sequences per (store, animal), assembled from the clips the embed step cached.

Sequences live on a grid of ``frame_step`` frames per cell (about the clips' sampling interval);
where clips overlap, a cell averages every vector that falls in it, and a covered cell no vector
falls in takes its nearest neighbour's. Labels of a cell are those of its centre frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sbl.behavior.clip_table import ClipTable
from napari_sbl.behavior.segment_table import HARD_NEGATIVES, SegmentTable, read_segments
from napari_sbl.store.session import SessionStore


@dataclass
class AnimalSequence:
    """One animal's cells in one store: features (L, D) or (L, G, D) float16, valid (L,), targets (L, C) int8."""

    store: str
    animal_id: int
    origin_frame: int
    frame_step: int
    features: np.ndarray
    valid: np.ndarray
    targets: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.valid)

    def centre_frames(self) -> np.ndarray:
        return self.origin_frame + np.arange(self.n_cells) * self.frame_step + self.frame_step // 2


def build_sequences(store: SessionStore, table: ClipTable, frame_step: int, n_classes: int,
                    class_index: dict[int, int] | None = None, multilabel: bool = False) -> list[AnimalSequence]:
    """One sequence per animal of ``table``; targets from the store's annotations when ``class_index`` is given."""
    out = []
    labels = read_segments(store) if class_index is not None else None
    negatives = read_segments(store, HARD_NEGATIVES) if class_index is not None else None
    for animal_id in np.unique(table.animal_id):
        rows = np.flatnonzero(table.animal_id == animal_id)
        rows = rows[np.argsort(table.start_frame[rows], kind="stable")]
        origin = int(table.start_frame[rows].min())
        end = int(table.stop_frame[rows].max())
        n_cells = -(-(end - origin) // frame_step)
        vectors = np.asarray(table.vectors.oindex[table.rows[rows]], dtype=np.float32)
        features, valid = _average_into_cells(vectors, table.start_frame[rows] - origin,
                                              table.stop_frame[rows] - origin, frame_step, n_cells)
        sequence = AnimalSequence(str(store.path), int(animal_id), origin, frame_step, features, valid,
                             np.full((n_cells, n_classes), -1, dtype=np.int8))
        if class_index is not None:
            frame_targets = _frame_targets(labels, negatives, int(animal_id), origin, end, n_classes, class_index,
                                           multilabel)
            sequence.targets = frame_targets[np.minimum(sequence.centre_frames() - origin, end - origin - 1)]
            sequence.targets[~valid] = -1
        out.append(sequence)
    return out


def _average_into_cells(vectors: np.ndarray, starts: np.ndarray, stops: np.ndarray, frame_step: int,
                        n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the clip vectors (n, Tc, ...) landing in each cell; covered cells with none take the nearest."""
    from scipy import sparse

    n, samples = vectors.shape[:2]
    inner = vectors.shape[2:]
    centres = starts[:, None] + (np.arange(samples)[None, :] + 0.5) * ((stops - starts)[:, None] / samples)
    cells = np.clip(np.floor(centres / frame_step).astype(np.int64), 0, n_cells - 1).ravel()
    scatter = sparse.csr_matrix((np.ones(cells.size, dtype=np.float32), (cells, np.arange(cells.size))),
                                shape=(n_cells, cells.size))
    sums = scatter @ vectors.reshape(n * samples, -1)
    counts = np.asarray(scatter.sum(axis=1)).ravel()
    covered = np.zeros(n_cells + 1, dtype=np.int64)
    np.add.at(covered, starts // frame_step, 1)
    np.add.at(covered, np.minimum(-(-stops // frame_step), n_cells), -1)
    covered = np.cumsum(covered)[:n_cells] > 0
    has = counts > 0
    nearest = _nearest_index(has)
    means = sums[nearest] / counts[nearest][:, None]
    return means.reshape(n_cells, *inner).astype(np.float16), covered


def _nearest_index(has: np.ndarray) -> np.ndarray:
    """For every position, the index of the nearest True position of ``has`` (all True positions exist)."""
    where = np.flatnonzero(has)
    positions = np.arange(has.size)
    right = np.clip(np.searchsorted(where, positions), 0, len(where) - 1)
    left = np.clip(right - 1, 0, len(where) - 1)
    pick_left = np.abs(where[left] - positions) <= np.abs(where[right] - positions)
    return np.where(pick_left, where[left], where[right])


def _frame_targets(labels: SegmentTable | None, negatives: SegmentTable | None, animal_id: int, origin: int,
                   end: int, n_classes: int, class_index: dict[int, int], multilabel: bool) -> np.ndarray:
    """(end - origin, C) int8 per frame: 1 is the class, 0 is not, -1 unknown (later segments win)."""
    targets = np.full((end - origin, n_classes), -1, dtype=np.int8)
    for table, negative in ((labels, False), (negatives, True)):
        if table is None:
            continue
        rows = zip(table.animal_id, table.start_frame, table.stop_frame, table.class_id, strict=True)
        for a, start, stop, class_id in rows:
            if a != animal_id or int(class_id) not in class_index:
                continue
            span = slice(max(int(start) - origin, 0), max(min(int(stop) - origin, end - origin), 0))
            c = class_index[int(class_id)]
            if negative:
                if not multilabel:
                    positive = targets[span, c] == 1
                    targets[span][positive] = -1
                targets[span, c] = 0
            elif multilabel:
                targets[span] = np.where(targets[span] < 0, 0, targets[span])
                targets[span, c] = 1
            else:
                targets[span] = 0
                targets[span, c] = 1
    return targets


def labels_of(targets: np.ndarray) -> np.ndarray:
    """(L,) int16 class index: the (first) class marked 1, -1 where none is."""
    positive = targets == 1
    return np.where(positive.any(axis=1), positive.argmax(axis=1), -1).astype(np.int16)
