"""Judging a trained head on the validation cells: truth, loss, per-class calibration and the report."""

from __future__ import annotations

import numpy as np

from napari_sbl.behavior.dataset import TrainingData
from napari_sbl.behavior.validation_split import Split


def validation_truth(data: TrainingData, intervals) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and targets (N, C) of the validation cells, unknown (-1) where a cell has no data."""
    index = np.concatenate([np.arange(a, b) for a, b in intervals])
    known = data.valid[index]
    return np.where(known, data.labels[index], -1), np.where(known[:, None], data.targets[index], -1)


def validation_loss(logits: np.ndarray, truth: np.ndarray, targets: np.ndarray, multilabel: bool) -> float:
    if multilabel:
        known = targets >= 0
        if not known.any():
            return 0.0
        p = 1.0 / (1.0 + np.exp(-logits[known]))
        y = targets[known]
        return float(-(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)).mean())
    labelled = truth >= 0
    if not labelled.any():
        return 0.0
    shifted = logits[labelled] - logits[labelled].max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(labelled.sum()), truth[labelled]].mean())


def fit_calibration(logits: np.ndarray, truth: np.ndarray, targets: np.ndarray, multilabel: bool) -> dict:
    """Per-class temperature (vector scaling, NLL on validation) and the threshold maximising each class's F1.

    Softmax models get threshold 0 where lowering confidence never helps on labelled frames (the
    usual case: validation frames all carry some class); multi-label models need real thresholds.
    """
    import torch
    from scipy.optimize import minimize

    n_classes = logits.shape[1]
    default = 0.5 if multilabel else 0.0
    known = (targets >= 0) if multilabel else (truth >= 0)
    if not known.any():
        return {"temperature": [1.0] * n_classes, "thresholds": [default] * n_classes, "n_frames": 0}
    x = torch.as_tensor(logits, dtype=torch.float64)
    if multilabel:
        mask = torch.as_tensor(known)
        y = torch.as_tensor(targets.clip(min=0), dtype=torch.float64)
    else:
        rows = torch.as_tensor(np.flatnonzero(known))
        classes = torch.as_tensor(truth[known].astype(np.int64))

    def loss_and_grad(values: np.ndarray) -> tuple[float, np.ndarray]:
        log_t = torch.tensor(values, dtype=torch.float64, requires_grad=True)
        scaled = x / log_t.exp()
        if multilabel:
            nll = torch.nn.functional.binary_cross_entropy_with_logits(scaled[mask], y[mask])
        else:
            nll = torch.nn.functional.cross_entropy(scaled[rows], classes)
        loss = nll + 0.01 * (log_t**2).sum()
        loss.backward()
        return float(loss.detach()), log_t.grad.numpy().copy()

    fitted = minimize(loss_and_grad, np.zeros(n_classes), jac=True, method="L-BFGS-B",
                      bounds=[(-3.0, 3.0)] * n_classes, options={"maxiter": 100})
    temperature = np.exp(fitted.x)
    from napari_sbl.behavior.infer import calibrated_probs

    probs = calibrated_probs(logits, temperature, multilabel)
    thresholds = [_best_threshold(probs, truth, targets, c, multilabel, default) for c in range(n_classes)]
    return {"temperature": temperature.tolist(), "thresholds": thresholds, "n_frames": int(known.sum())}


def _best_threshold(probs, truth, targets, c: int, multilabel: bool, default: float) -> float:
    if multilabel:
        keep = targets[:, c] >= 0
        actual, chosen = targets[keep, c] == 1, np.ones(keep.sum(), dtype=bool)
        p = probs[keep, c]
    else:
        keep = truth >= 0
        actual, chosen = truth[keep] == c, probs[keep].argmax(axis=1) == c
        p = probs[keep, c]
    if not actual.any():
        return default
    best, best_f1 = default, -1.0
    for threshold in ([0.0] if not multilabel else []) + list(np.round(np.arange(0.05, 0.96, 0.05), 2)):
        predicted = chosen & (p >= threshold)
        tp = float((predicted & actual).sum())
        f1 = 2 * tp / max(float(predicted.sum() + actual.sum()), 1.0)
        if f1 > best_f1 + 1e-9:
            best, best_f1 = float(threshold), f1
    return best


def evaluate(module, data: TrainingData, split: Split, calibration: dict) -> dict:
    """The validation report (per-class P/R/F1, confusion, segmental F1@50, edit) with calibrated decisions."""
    from napari_sbl.behavior.decode import DecodeParams, decode_labels
    from napari_sbl.behavior.infer import calibrated_probs, interval_logits
    from napari_sbl.behavior.metrics import validation_report

    if not split.val:
        return {"classes": data.class_names, "note": split.note or "no validation data", "macro_f1": None}
    truths, preds = [], []
    for (a, b), logits in zip(split.val, interval_logits(module, data.features, data.valid, split.val), strict=True):
        probs = calibrated_probs(logits, calibration.get("temperature"), data.multilabel)
        preds.append(decode_labels(probs, DecodeParams(), data.class_names, calibration.get("thresholds")))
        truths.append(validation_truth(data, [(a, b)])[0])
    note = (f"{split.note}; per cell of {data.frame_step} frame(s), calibrated thresholds, no smoothing")
    report = validation_report(truths, preds, data.class_names, note=note).to_json()
    report["split"] = split.how
    return report
