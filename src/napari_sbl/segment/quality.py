"""Per-frame tracking quality from the measured tracks, the same for every backend.

A frame scores low when an animal's area jumps or it moves far from where constant-velocity
motion predicts; the user can jump to such doubtful frames and correct them.
"""

from __future__ import annotations

import numpy as np


def track_quality(centroid: np.ndarray, area: np.ndarray, diagonal_px: float) -> np.ndarray:
    """Quality in [0, 1] per frame and animal; 0 where the animal is absent.

    ``centroid`` (T, A, 2) float32 with NaN where absent; ``area`` (T, A) float32.
    """
    t, a = area.shape
    quality = np.zeros((t, a), dtype=np.float32)
    present = np.isfinite(centroid[..., 0]) & (area > 0)
    if t == 0:
        return quality
    predicted = np.full_like(centroid, np.nan)
    predicted[1:] = centroid[:-1]
    predicted[2:] = 2 * centroid[1:-1] - centroid[:-2]
    fallback = np.isnan(predicted[..., 0])
    predicted[fallback] = np.roll(centroid, 1, axis=0)[fallback]
    error = np.linalg.norm(centroid - predicted, axis=-1)
    size = np.sqrt(np.maximum(area, 1.0))
    motion_score = np.exp(-np.nan_to_num(error, nan=0.0) / np.maximum(size, 0.02 * diagonal_px))
    previous_area = np.roll(area, 1, axis=0)
    previous_area[0] = area[0]
    ratio = np.where((area > 0) & (previous_area > 0), area / np.maximum(previous_area, 1e-6), 1.0)
    area_score = np.exp(-np.abs(np.log(np.clip(ratio, 1e-3, 1e3))) * 2.0)
    quality[present] = (motion_score * area_score)[present]
    return quality


def next_doubtful_frame(quality: np.ndarray, after: int, threshold: float = 0.3) -> int | None:
    """The first frame after ``after`` where any tracked animal's quality is below ``threshold``."""
    scores = quality[after + 1 :]
    if scores.size == 0:
        return None
    tracked = scores > 0
    doubtful = np.any(tracked & (scores < threshold), axis=1)
    hits = np.flatnonzero(doubtful)
    return int(after + 1 + hits[0]) if hits.size else None
