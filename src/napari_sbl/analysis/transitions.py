"""Transitions between consecutive bouts, and which of them happen more often than chance.

Consecutive bouts of one animal form a transition, also across unlabelled frames, but never across
frames where the animal is absent from its track (what happened there is unknown). Self-transitions
only arise across an unlabelled gap. Chance is independence of the current and the next behaviour:
the adjusted (Haberman) residual ``z = (n - e) / sqrt(e (1 - r/N) (1 - c/N))`` is approximately
standard normal under it, so ``z > 1.96`` marks a transition more frequent than chance at 5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sbl.analysis.bouts import Bouts


@dataclass(frozen=True)
class TransitionMatrix:
    """(C, C) transitions from row class to column class."""

    counts: np.ndarray  # int
    probabilities: np.ndarray  # row-normalised, NaN for classes never followed by a bout
    expected: np.ndarray  # counts expected under independence
    z: np.ndarray  # adjusted residuals, NaN where undefined

    @property
    def n_transitions(self) -> int:
        return int(self.counts.sum())


def transition_pairs(bouts: Bouts, present: np.ndarray | None = None, first_frame: int = 0,
                     max_gap_frames: int | None = None) -> np.ndarray:
    """(P, 2) (from, to) class pairs of consecutive bouts not separated by absent frames.

    ``present`` (T,) bool covers frames ``[first_frame, first_frame + T)``; ``max_gap_frames`` (optional)
    also drops pairs separated by more unlabelled frames than that.
    """
    if len(bouts) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    gap_start, gap_stop = bouts.stop_frame[:-1], bouts.start_frame[1:]
    keep = np.ones(len(gap_start), dtype=bool)
    if present is not None:
        absent_before = np.concatenate([[0], np.cumsum(~np.asarray(present, dtype=bool))])
        keep &= absent_before[gap_stop - first_frame] == absent_before[gap_start - first_frame]
    if max_gap_frames is not None:
        keep &= (gap_stop - gap_start) <= max_gap_frames
    return np.stack([bouts.class_index[:-1][keep], bouts.class_index[1:][keep]], axis=1).astype(np.int64)


def transition_counts(pairs: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int counts of (from, to) ``pairs``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    flat = pairs[:, 0] * n_classes + pairs[:, 1]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def analyse_transitions(counts: np.ndarray) -> TransitionMatrix:
    """Probabilities, expected counts and adjusted residuals of a (C, C) count matrix."""
    counts = np.asarray(counts, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True).astype(np.float64)
    cols = counts.sum(axis=0, keepdims=True).astype(np.float64)
    total = float(counts.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        probabilities = np.where(rows > 0, counts / rows, np.nan)
        expected = rows * cols / total if total > 0 else np.zeros(counts.shape)
        variance = expected * (1 - rows / total) * (1 - cols / total) if total > 0 else np.zeros(counts.shape)
        z = np.where(variance > 0, (counts - expected) / np.sqrt(variance), np.nan)
    return TransitionMatrix(counts=counts, probabilities=probabilities, expected=expected, z=z)


def transition_matrix(bouts: Bouts, n_classes: int, present: np.ndarray | None = None,
                      first_frame: int = 0) -> TransitionMatrix:
    """Transitions of one animal's bouts (see :func:`transition_pairs`)."""
    return analyse_transitions(transition_counts(transition_pairs(bouts, present, first_frame), n_classes))
