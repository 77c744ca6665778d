"""Scores of per-frame behaviour labels: per-class precision/recall/F1, confusion, segmental F1@50, edit score.

Truth may be sparse (few-shot labelling): frames with truth -1 are not scored per frame, and the
segment metrics are computed inside each contiguous labelled stretch, where a predicted none (-1)
counts as background, as in the action-segmentation literature (Lea et al. 2017; MS-TCN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

NONE = -1


@dataclass
class ClassScores:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ValidationReport:
    """What the validation frames say about a model; ``confusion`` rows = truth, columns = prediction + none."""

    classes: list[str]
    per_class: list[ClassScores]
    macro_f1: float
    accuracy: float
    confusion: list[list[int]]
    segmental_f1_50: float
    edit_score: float
    n_frames: int
    note: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"macro-F1 {self.macro_f1:.3f}, accuracy {self.accuracy:.3f}, segmental F1@50 "
                f"{self.segmental_f1_50:.3f}, edit {self.edit_score:.3f} on {self.n_frames} validation frames")


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C + 1) int64 counts over frames with truth >= 0; last column = predicted none."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    keep = truth >= 0
    columns = np.where(pred[keep] < 0, n_classes, pred[keep])
    flat = truth[keep].astype(np.int64) * (n_classes + 1) + columns
    return np.bincount(flat, minlength=n_classes * (n_classes + 1)).reshape(n_classes, n_classes + 1)


def class_scores(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    """(precision, recall, f1, support) arrays of shape (C,) over frames with truth >= 0."""
    confusion = confusion_matrix(truth, pred, n_classes)
    true_positive = np.diag(confusion[:, :n_classes]).astype(float)
    predicted = confusion[:, :n_classes].sum(axis=0).astype(float)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros(n_classes), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(n_classes), where=total > 0)
    return precision, recall, f1, support


def macro_f1(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in ``truth`` (0 when nothing is labelled)."""
    _, _, f1, support = class_scores(truth, pred, n_classes)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(label, start, stop) runs of a (T,) label array, none (-1) runs left out."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [labels.size]])
    return [(int(labels[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True) if labels[a] != NONE]


def segment_counts(truth: np.ndarray, pred: np.ndarray, overlap: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of predicted segments at IoU >= ``overlap``."""
    truth_segments, pred_segments = segments(truth), segments(pred)
    hit = np.zeros(len(truth_segments), dtype=bool)
    true_positive = false_positive = 0
    for label, start, stop in pred_segments:
        best, best_index = 0.0, -1
        for index, (t_label, t_start, t_stop) in enumerate(truth_segments):
            if t_label != label:
                continue
            intersection = min(stop, t_stop) - max(start, t_start)
            if intersection <= 0:
                continue
            iou = intersection / (max(stop, t_stop) - min(start, t_start))
            if iou > best:
                best, best_index = iou, index
        if best >= overlap and not hit[best_index]:
            true_positive += 1
            hit[best_index] = True
        else:
            false_positive += 1
    return true_positive, false_positive, int((~hit).sum())


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def edit_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """1 - normalised edit distance between the segment label orders (1 = same order of behaviours)."""
    a = [s[0] for s in segments(pred)]
    b = [s[0] for s in segments(truth)]
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def labelled_stretches(truth: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous [start, stop) stretches where truth >= 0."""
    mask = np.concatenate([[False], np.asarray(truth) >= 0, [False]])
    edges = np.flatnonzero(mask[1:] != mask[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def validation_report(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], class_names: Sequence[str],
                      note: str = "") -> ValidationReport:
    """Report over several validation pieces (each a (T,) truth with -1 unlabelled and its prediction)."""
    n = len(class_names)
    truth_all = np.concatenate([np.asarray(t) for t in truths]) if truths else np.zeros(0, int)
    pred_all = np.concatenate([np.asarray(p) for p in preds]) if preds else np.zeros(0, int)
    precision, recall, f1, support = class_scores(truth_all, pred_all, n)
    tp = fp = fn = 0
    edits, weights = [], []
    for truth, pred in zip(truths, preds, strict=True):
        for start, stop in labelled_stretches(truth):
            counts = segment_counts(truth[start:stop], pred[start:stop])
            tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
            edits.append(edit_score(truth[start:stop], pred[start:stop]))
            weights.append(stop - start)
    labelled = truth_all >= 0
    denominator = 2 * tp + fp + fn
    return ValidationReport(
        classes=list(class_names),
        per_class=[ClassScores(class_names[c], float(precision[c]), float(recall[c]), float(f1[c]), int(support[c]))
                   for c in range(n)],
        macro_f1=macro_f1(truth_all, pred_all, n),
        accuracy=float((pred_all[labelled] == truth_all[labelled]).mean()) if labelled.any() else 0.0,
        confusion=confusion_matrix(truth_all, pred_all, n).tolist(),
        segmental_f1_50=2 * tp / denominator if denominator else 0.0,
        edit_score=float(np.average(edits, weights=weights)) if edits else 0.0,
        n_frames=int(labelled.sum()),
        note=note,
    )
