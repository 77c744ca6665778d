"""Training/validation split of concatenated sequences: whole videos or whole runs of bouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_sbl.errors import AnnotationError

if TYPE_CHECKING:
    from napari_sbl.behavior.dataset import TrainingData

VIDEO_SPLIT_MIN_STORES = 3  # with fewer labelled videos, holding one out costs too much: split by bouts


@dataclass
class Split:
    """Global cell intervals for training and validation, and how they were chosen."""

    train: list[tuple[int, int]]
    val: list[tuple[int, int]]
    how: str  # "video", "bouts" or "none"
    note: str = ""


def split_train_val(data: TrainingData, val_fraction: float, how: str = "auto", seed: int = 0,
                    trials: int = 30) -> Split:
    """Hold out whole videos (labels in three or more stores) or whole runs of bouts, never parts of clips.

    Between a validation stretch and the training cells of the same sequence lies a gap of one clip,
    so no clip feeds both sides. Among ``trials`` seeded draws, the split keeping the most classes on
    both sides, then nearest ``val_fraction`` of the labelled cells, wins.
    """
    labels = data.labels
    if val_fraction <= 0 or how == "none":
        return Split(list(data.bounds), [], "none", "no validation split requested")
    labelled_stores = sorted({store for (store, _), (lo, hi) in zip(data.sources, data.bounds, strict=True)
                              if (labels[lo:hi] >= 0).any()})
    if how == "video" or (how == "auto" and len(labelled_stores) >= VIDEO_SPLIT_MIN_STORES):
        if len(labelled_stores) < 2:
            raise AnnotationError("a split by video needs labels in at least two stores; use the split by bouts")
        draw = _video_draw(data, labelled_stores)
        kind = "video"
    else:
        draw = _bout_draw(data, labels)
        kind = "bouts"
        if draw is None:
            return Split(list(data.bounds), [], "none", "fewer than two labelled bouts: no validation")
    rng = np.random.default_rng(seed)
    total = int((labels >= 0).sum())
    best, best_score = None, None
    for _ in range(trials):
        val = draw(rng, val_fraction * total)
        train = _subtract(data.bounds, val, data.clip_cells)
        score = _split_score(labels, train, val, val_fraction * total)
        if best_score is None or score > best_score:
            best, best_score = (train, val), score
    train, val = best
    n_val = sum(int((labels[a:b] >= 0).sum()) for a, b in val)
    return Split(train, val, kind, f"{n_val} of {total} labelled cells held out by {kind}")


def _video_draw(data: TrainingData, stores: list[str]):
    labels = data.labels

    def draw(rng, target):
        val, got = [], 0
        for store in rng.permutation(stores)[: len(stores) - 1]:
            if got >= target:
                break
            for (source, _), (lo, hi) in zip(data.sources, data.bounds, strict=True):
                if source == store:
                    val.append((lo, hi))
                    got += int((labels[lo:hi] >= 0).sum())
        return val

    return draw


def _bout_draw(data: TrainingData, labels: np.ndarray):
    bouts = []  # (sequence, start, stop)
    for number, (lo, hi) in enumerate(data.bounds):
        values = labels[lo:hi]
        if not len(values):
            continue
        change = np.flatnonzero(values[1:] != values[:-1]) + 1
        starts, stops = np.concatenate([[0], change]) + lo, np.concatenate([change, [len(values)]]) + lo
        bouts += [(number, int(a), int(b)) for a, b in zip(starts, stops, strict=True) if labels[a] >= 0]
    if len(bouts) < 2:
        return None

    def draw(rng, target):
        used = np.zeros(len(bouts), dtype=bool)
        val, got = [], 0
        for first in rng.permutation(len(bouts)):
            if got >= target or used[first]:
                continue
            last = first
            while True:
                got += bouts[last][2] - bouts[last][1]
                used[last] = True
                nxt = last + 1
                if got >= target or nxt >= len(bouts) or used[nxt] or bouts[nxt][0] != bouts[first][0]:
                    break
                last = nxt
            val.append((bouts[first][1], bouts[last][2]))
        return sorted(val)

    return draw


def _subtract(bounds: Sequence[tuple[int, int]], val: Sequence[tuple[int, int]], margin: int) -> list[tuple[int, int]]:
    from napari_sbl.store.intervals import subtract_interval

    train = [list(b) for b in bounds]
    for start, stop in val:
        train = subtract_interval(train, start - margin, stop + margin)
    return [(int(a), int(b)) for a, b in train]


def _split_score(labels: np.ndarray, train, val, target: float) -> tuple:
    def classes(intervals):
        return {int(c) for a, b in intervals for c in np.unique(labels[a:b]) if c >= 0}

    both = len(classes(train) & classes(val))
    n_val = sum(int((labels[a:b] >= 0).sum()) for a, b in val)
    return both, -abs(n_val - target), -len(val)


def interval_mask(intervals: Sequence[tuple[int, int]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a, b in intervals:
        mask[a:b] = True
    return mask
