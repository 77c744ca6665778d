"""Runs of equal values in per-frame sequences: the one place bouts, segments and decoding get them from."""

from __future__ import annotations

import numpy as np


def runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run of equal values in a (T,) array: (starts, stops, values), stops exclusive, int64 bounds."""
    values = np.asarray(values).ravel()
    if values.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, values[:0]
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    stops = np.concatenate([change, [values.size]]).astype(np.int64)
    return starts, stops, values[starts]
