"""Per-frame probabilities → behaviour segments: thresholds, smoothing, gap filling, minimum length, Viterbi.

Decoding is a pure function of the stored probabilities and a :class:`DecodeParams`, so the Infer
dock re-decodes live as a slider moves without re-running the model. Steps, in order:

1. per-frame choice: the most probable class, or none (-1) when its probability is below that class's
   threshold; with ``switch_penalty > 0`` the same log-scores (none scoring the log threshold) are
   decoded by Viterbi, paying ``switch_penalty`` (in log-probability) for every change of label;
2. majority smoothing over ``smooth_frames`` (odd window);
3. gap filling: runs of none no longer than ``gap_fill_frames`` between two runs of one class take it;
4. minimum segment length: shorter class runs take the neighbour whose probability there is higher.

Frames whose probabilities are NaN (the animal had no embeddings there) stay -1 and are never filled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from napari_sbl.errors import SblError
from napari_sbl.runs import runs

NONE = -1
_EPS = 1e-6


@dataclass(frozen=True)
class DecodeParams:
    """How probabilities become labels. Lengths are in frames; thresholds are probabilities.

    ``ignore_threshold`` None uses the model's calibrated per-class thresholds; ``class_overrides``
    maps a class name to ``{"threshold": p, "min_segment_frames": n}`` for that class alone.
    """

    ignore_threshold: float | None = None
    smooth_frames: int = 1
    gap_fill_frames: int = 0
    min_segment_frames: int = 1
    switch_penalty: float = 0.0
    class_overrides: dict = field(default_factory=dict)
    preset: str = "custom"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> DecodeParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


PRESETS: dict[str, DecodeParams] = {
    "none": DecodeParams(ignore_threshold=0.0, preset="none"),
    "light": DecodeParams(smooth_frames=3, gap_fill_frames=2, min_segment_frames=3, preset="light"),
    "standard": DecodeParams(smooth_frames=5, gap_fill_frames=5, min_segment_frames=8, switch_penalty=2.0,
                             preset="standard"),
    "aggressive": DecodeParams(smooth_frames=9, gap_fill_frames=15, min_segment_frames=20, switch_penalty=6.0,
                               preset="aggressive"),
}


def decode_preset(name: str, **changes) -> DecodeParams:
    """The named preset (none / light / standard / aggressive), with ``changes`` applied."""
    if name not in PRESETS:
        raise SblError(f"unknown decoding preset {name!r}; choose one of {', '.join(PRESETS)}")
    params = PRESETS[name]
    return replace(params, **changes, preset="custom" if changes else params.preset)


def class_thresholds(params: DecodeParams, class_names: Sequence[str],
                     calibrated: Sequence[float] | None = None) -> np.ndarray:
    """(C,) threshold per class: per-class override, else ``ignore_threshold``, else calibrated, else 0."""
    n = len(class_names)
    if params.ignore_threshold is not None:
        thresholds = np.full(n, float(params.ignore_threshold))
    elif calibrated is not None:
        thresholds = np.asarray(calibrated, dtype=float).copy()
    else:
        thresholds = np.zeros(n)
    for index, name in enumerate(class_names):
        override = params.class_overrides.get(name, {})
        if "threshold" in override:
            thresholds[index] = float(override["threshold"])
    return thresholds


def min_lengths(params: DecodeParams, class_names: Sequence[str]) -> np.ndarray:
    """(C,) minimum segment length per class, overrides applied."""
    lengths = np.full(len(class_names), max(1, int(params.min_segment_frames)))
    for index, name in enumerate(class_names):
        override = params.class_overrides.get(name, {})
        if "min_segment_frames" in override:
            lengths[index] = max(1, int(override["min_segment_frames"]))
    return lengths


def decode_labels(probs: np.ndarray, params: DecodeParams, class_names: Sequence[str] | None = None,
                  calibrated_thresholds: Sequence[float] | None = None) -> np.ndarray:
    """probs (T, C) float (NaN = no data) → (T,) int16 class index, -1 = none."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2:
        raise SblError(f"decoding expects probabilities of shape (frames, classes), got {probs.shape}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(probs.shape[1])]
    valid = ~np.isnan(probs).any(axis=1)
    filled = np.where(valid[:, None], probs, 0.0)
    scores = frame_scores(filled, class_thresholds(params, names, calibrated_thresholds))
    if params.switch_penalty > 0:
        labels = viterbi_labels(scores, float(params.switch_penalty), valid)
    else:
        best = scores.argmax(axis=1)
        labels = np.where(best == scores.shape[1] - 1, NONE, best)
    labels = np.where(valid, labels, NONE)
    if params.smooth_frames > 1:
        labels = majority_smooth(labels, int(params.smooth_frames), probs.shape[1], valid)
    if params.gap_fill_frames > 0:
        labels = fill_gaps(labels, int(params.gap_fill_frames), valid)
    lengths = min_lengths(params, names)
    if lengths.max() > 1:
        labels = enforce_min_length(labels, filled, lengths)
    return labels.astype(np.int16)


def decode_all(probs: np.ndarray, params: DecodeParams, class_names: Sequence[str] | None = None,
               calibrated_thresholds: Sequence[float] | None = None) -> np.ndarray:
    """probs (T, A, C) → labels (T, A) int16, each animal decoded on its own."""
    probs = np.asarray(probs)
    columns = [decode_labels(probs[:, a], params, class_names, calibrated_thresholds) for a in range(probs.shape[1])]
    return np.stack(columns, axis=1) if columns else np.zeros(probs.shape[:2], dtype=np.int16)


def frame_scores(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T, C + 1) log-scores: ``log p_c`` per class, and for none the log threshold of the frame's top class.

    The per-frame best is then the top class, or none exactly when the top class misses its threshold.
    """
    top = probs.argmax(axis=1)
    none = np.log(np.maximum(thresholds[top], _EPS))
    return np.concatenate([np.log(probs + _EPS), none[:, None]], axis=1)


def viterbi_labels(scores: np.ndarray, switch_penalty: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Best label path through per-frame scores (T, C + 1; last column = none), paying a penalty per switch."""
    n_frames, n_classes = scores.shape[0], scores.shape[1] - 1
    emissions = scores.copy()
    if valid is not None:
        emissions[~valid] = -1e3
        emissions[~valid, n_classes] = 0.0
    back = np.zeros((n_frames, n_classes + 1), dtype=np.int32)
    states = np.arange(n_classes + 1)
    best = emissions[0].copy() if n_frames else np.zeros(n_classes + 1)
    for t in range(1, n_frames):
        leader = int(best.argmax())
        switch = best[leader] - switch_penalty
        stay = best >= switch
        back[t] = np.where(stay, states, leader)
        best = np.where(stay, best, switch) + emissions[t]
    path = np.zeros(n_frames, dtype=np.int64)
    if n_frames:
        path[-1] = int(best.argmax())
        for t in range(n_frames - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
    return np.where(path == n_classes, NONE, path)


def majority_smooth(labels: np.ndarray, window: int, n_classes: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Mode filter of odd width ``window`` (ties keep the frame's own label); invalid frames stay -1."""
    window = window + 1 - window % 2
    half = window // 2
    onehot = np.zeros((labels.size, n_classes + 1), dtype=np.float32)
    onehot[np.arange(labels.size), np.where(labels < 0, n_classes, labels)] = 1.0
    padded = np.concatenate([np.zeros((1, n_classes + 1)), np.cumsum(onehot, axis=0)])
    index = np.arange(labels.size)
    counts = padded[np.minimum(index + half + 1, labels.size)] - padded[np.maximum(index - half, 0)]
    counts += 0.5 * onehot
    winner = counts.argmax(axis=1)
    smoothed = np.where(winner == n_classes, NONE, winner)
    return smoothed if valid is None else np.where(valid, smoothed, NONE)


def fill_gaps(labels: np.ndarray, max_gap: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Runs of none of at most ``max_gap`` frames, between two runs of the same class, take that class."""
    out = labels.copy()
    starts, stops, values = runs(labels)
    for i in range(1, len(values) - 1):
        if values[i] != NONE or values[i - 1] != values[i + 1] or stops[i] - starts[i] > max_gap:
            continue
        if valid is not None and not valid[starts[i]:stops[i]].all():
            continue
        out[starts[i]:stops[i]] = values[i - 1]
    return out


def enforce_min_length(labels: np.ndarray, probs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Class runs shorter than their class's minimum take the better neighbour (by mean probability).

    Passes repeat until nothing changes; each pass handles short runs shortest first, so a flicker
    inside a long bout joins the bout rather than the other way round.
    """
    out = labels.copy()
    for _ in range(64):
        starts, stops, values = runs(out)
        short = [i for i in range(len(values)) if values[i] != NONE and stops[i] - starts[i] < lengths[values[i]]]
        if not short:
            break
        for i in sorted(short, key=lambda k: stops[k] - starts[k]):
            out[starts[i]:stops[i]] = _better_neighbour(out, probs, int(starts[i]), int(stops[i]))
    return out


def _better_neighbour(labels: np.ndarray, probs: np.ndarray, start: int, stop: int) -> int:
    own = labels[start]
    options = [labels[start - 1]] if start > 0 else []
    options += [labels[stop]] if stop < labels.size else []
    options = [o for o in options if o != own]
    if not options:
        return NONE

    def support(label: int) -> float:
        span = probs[start:stop]
        return float((1.0 - span.max(axis=1)).mean()) if label == NONE else float(span[:, label].mean())

    return int(max(options, key=support))
