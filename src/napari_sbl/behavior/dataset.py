"""Training data: every labelled sequence concatenated, with bout and class weights.

The pieces live in their own modules and are re-exported here for callers of this one:
:mod:`~napari_sbl.behavior.clip_table` (cached clip embeddings and the sampling assumption),
:mod:`~napari_sbl.behavior.segment_table` (annotation segments), :mod:`~napari_sbl.behavior.sequences`
(per-animal sequences on a frame grid) and :mod:`~napari_sbl.behavior.validation_split`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_sbl.behavior.clip_table import (
    SAMPLING_ASSUMPTION,
    ClipTable,
    EmbeddingIdentity,
    choose_frame_step,
    embed_hint,
    finished_rows,
    list_embeddings,
    pick_embedding,
    read_clip_table,
)
from napari_sbl.behavior.segment_table import (
    HARD_NEGATIVES,
    SEGMENT_PARTS,
    SegmentTable,
    annotation_attrs,
    merge_class_names,
    read_segments,
)
from napari_sbl.behavior.sequences import AnimalSequence, build_sequences, labels_of
from napari_sbl.behavior.validation_split import VIDEO_SPLIT_MIN_STORES, Split, interval_mask, split_train_val

__all__ = [
    "HARD_NEGATIVES",
    "SAMPLING_ASSUMPTION",
    "SEGMENT_PARTS",
    "VIDEO_SPLIT_MIN_STORES",
    "AnimalSequence",
    "ClipTable",
    "EmbeddingIdentity",
    "SegmentTable",
    "Split",
    "TrainingData",
    "annotation_attrs",
    "bout_weights",
    "build_sequences",
    "choose_frame_step",
    "class_weights",
    "concatenate",
    "embed_hint",
    "finished_rows",
    "interval_mask",
    "labels_of",
    "list_embeddings",
    "merge_class_names",
    "pick_embedding",
    "read_clip_table",
    "read_segments",
    "split_train_val",
]


@dataclass
class TrainingData:
    """All sequences concatenated: cell i belongs to the sequence whose ``bounds`` hold it."""

    features: np.ndarray  # (N, D) or (N, G, D) float16
    valid: np.ndarray  # (N,) bool
    targets: np.ndarray  # (N, C) int8
    bounds: list[tuple[int, int]]
    sources: list[tuple[str, int]]  # (store path, animal id) per sequence
    class_names: list[str]
    frame_step: int
    multilabel: bool = False
    clip_cells: int = 1  # cells one clip spans (the margin kept between training and validation)

    @property
    def labels(self) -> np.ndarray:
        return labels_of(self.targets)


def concatenate(sequences: Sequence[AnimalSequence], class_names: list[str], frame_step: int, multilabel: bool,
                clip_cells: int) -> TrainingData:
    bounds, cursor = [], 0
    for s in sequences:
        bounds.append((cursor, cursor + s.n_cells))
        cursor += s.n_cells
    return TrainingData(
        features=np.concatenate([s.features for s in sequences]),
        valid=np.concatenate([s.valid for s in sequences]),
        targets=np.concatenate([s.targets for s in sequences]),
        bounds=bounds, sources=[(s.store, s.animal_id) for s in sequences], class_names=list(class_names),
        frame_step=frame_step, multilabel=multilabel, clip_cells=clip_cells,
    )


def bout_weights(labels: np.ndarray, bounds: Sequence[tuple[int, int]], exponent: float) -> np.ndarray:
    """(N,) float32: labelled cells weighted (median bout / own bout length) ** exponent, others 1.

    With exponent 1 a 10-frame bout counts as much as a 500-frame one; 0 turns balancing off.
    """
    weights = np.ones(len(labels), dtype=np.float32)
    runs = []
    for lo, hi in bounds:
        values = labels[lo:hi]
        if not len(values):
            continue
        change = np.flatnonzero(values[1:] != values[:-1]) + 1
        starts, stops = np.concatenate([[0], change]) + lo, np.concatenate([change, [len(values)]]) + lo
        runs += [(a, b) for a, b in zip(starts, stops, strict=True) if labels[a] >= 0]
    if not runs or exponent == 0:
        return weights
    median = float(np.median([b - a for a, b in runs]))
    for a, b in runs:
        weights[a:b] = (median / (b - a)) ** exponent
    return weights


def class_weights(targets: np.ndarray, train_mask: np.ndarray, power: float) -> np.ndarray:
    """(C,) float32 ∝ (1 / positive training cells) ** power, mean 1 over classes with labels."""
    counts = (targets[train_mask] == 1).sum(axis=0).astype(np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    if present.any() and power > 0:
        weights[present] = (counts[present].max() / counts[present]) ** power
        weights[present] /= weights[present].mean()
    return weights.astype(np.float32)
