"""Label spreading on clip embeddings: low-confidence clips take the labels of confident neighbours.

Clips the model is sure of (or that a person labelled) seed a k-nearest-neighbour graph in
embedding space; labels diffuse along it (Zhou et al. 2004, scikit-learn's ``LabelSpreading``),
so a clip the model hesitates on, sitting among confident "groom" clips, is proposed as groom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sbl.errors import SblError


@dataclass(frozen=True)
class SpreadParams:
    min_confidence: float = 0.8  # clips at or above keep their label and seed the spreading
    n_neighbors: int = 7
    alpha: float = 0.2  # how much a seed's own label may change (0 = clamped)


@dataclass
class SpreadResult:
    labels: np.ndarray  # (N,) int class index after spreading
    confidence: np.ndarray  # (N,) probability of that label
    changed: np.ndarray  # (N,) bool, low-confidence clips whose label the spreading changed


def spread_labels(embeddings: np.ndarray, probs: np.ndarray, params: SpreadParams = SpreadParams()) -> SpreadResult:
    """embeddings (N, D), per-clip class probabilities (N, C) → relabelled low-confidence clips."""
    from sklearn.semi_supervised import LabelSpreading

    embeddings = np.asarray(embeddings, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if embeddings.shape[0] != probs.shape[0]:
        raise SblError(f"{embeddings.shape[0]} clip embeddings but {probs.shape[0]} clip predictions")
    predicted = probs.argmax(axis=1)
    seeds = probs.max(axis=1) >= params.min_confidence
    if len(np.unique(predicted[seeds])) < 2:
        raise SblError("label spreading needs confident clips of at least two behaviours; lower min_confidence")
    normalised = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    model = LabelSpreading(kernel="knn", n_neighbors=min(params.n_neighbors, len(embeddings) - 1),
                           alpha=params.alpha, max_iter=100)
    model.fit(normalised, np.where(seeds, predicted, -1))
    distribution = model.label_distributions_
    labels = model.classes_[distribution.argmax(axis=1)]
    labels = np.where(seeds, predicted, labels)
    confidence = np.where(seeds, probs.max(axis=1), distribution.max(axis=1))
    return SpreadResult(labels.astype(np.int64), confidence, ~seeds & (labels != predicted))
