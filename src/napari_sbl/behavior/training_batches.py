"""Training batches: windows around labelled training cells, gathered and augmented on the device.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math

import numpy as np

from napari_sbl.behavior.dataset import TrainingData, bout_weights, class_weights
from napari_sbl.behavior.profiles import TrainParams
from napari_sbl.behavior.validation import validation_loss, validation_truth
from napari_sbl.behavior.validation_split import Split, interval_mask
from napari_sbl.errors import AnnotationError

MIN_STEPS_PER_EPOCH = 10  # few labels still get enough updates per validation


def _feature_spread(features, valid: np.ndarray):
    """Per-dimension standard deviation of (a sample of) the valid cells' features, on their device."""
    import torch

    rows = np.flatnonzero(valid)[:: max(1, int(valid.sum()) // 4096)]
    if not len(rows):
        return torch.ones(features.shape[-1], device=features.device)
    sample = features[torch.as_tensor(rows, device=features.device)].float()
    return sample.reshape(-1, sample.shape[-1]).std(dim=0).clamp(min=1e-6)


class BatchMaker:
    """Windows of ``params.window`` cells around labelled training cells, gathered on the device."""

    def __init__(self, data: TrainingData, split: Split, params: TrainParams, device: str, rng) -> None:
        import torch

        self.data, self.split, self.params, self.device, self.rng = data, split, params, device, rng
        n = len(data.valid)
        train_mask = interval_mask(split.train, n)
        labels = data.labels
        self.features = torch.as_tensor(data.features, device=device)
        self.feature_scale = _feature_spread(self.features, data.valid)
        self.valid = torch.as_tensor(data.valid, device=device)
        self.labels = torch.as_tensor(labels.astype(np.int64), device=device)
        self.targets = torch.as_tensor(data.targets, device=device)
        weight = bout_weights(labels, data.bounds, params.bout_balance) * train_mask
        self.weight = torch.as_tensor(weight, device=device)
        self.class_weight = torch.as_tensor(class_weights(data.targets, train_mask, params.class_weight_power),
                                            device=device)
        known = (data.targets >= 0).any(axis=1) & train_mask & data.valid
        anchors = np.flatnonzero(known)
        if not len(anchors):
            raise AnnotationError("no labelled frames are left for training after the validation split; label more "
                                  "bouts or set val_fraction to 0")
        pieces = np.array(split.train, dtype=np.int64).reshape(-1, 2)
        which = np.searchsorted(pieces[:, 0], anchors, side="right") - 1
        self.anchors = torch.as_tensor(anchors, device=device)
        self.piece_lo = torch.as_tensor(pieces[which, 0], device=device)
        self.piece_hi = torch.as_tensor(pieces[which, 1], device=device)
        self.generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**31)))
        window = params.window
        # an epoch shows every labelled training cell about once (windows land around random labelled cells)
        self.steps_per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(len(anchors) / window / params.batch_size))

    def sample(self) -> dict:
        """A batch of windows, drawn with torch's generator on the device (no host round trip per step)."""
        import torch

        window, count = self.params.window, self.params.batch_size
        pick = torch.randint(len(self.anchors), (count,), generator=self.generator, device=self.device)
        anchor, lo, hi = self.anchors[pick], self.piece_lo[pick], self.piece_hi[pick]
        start = anchor - torch.randint(window, (count,), generator=self.generator, device=self.device)
        start = torch.maximum(torch.minimum(start, hi - window), lo)
        index = start[:, None] + torch.arange(window, device=self.device)[None, :]
        inside = index < hi[:, None]
        index = torch.minimum(index, hi[:, None] - 1)
        mask = self.valid[index] & inside
        return {"x": self._augment(self.features[index]), "mask": mask,
                "labels": torch.where(mask, self.labels[index], -1),
                "targets": torch.where(mask[..., None], self.targets[index], -1),
                "weight": self.weight[index] * mask}

    def _augment(self, x):
        """Per-window random offsets (slow drift) and per-frame noise, in units of each feature's spread."""
        import torch

        params = self.params
        if params.augment_offset <= 0 and params.augment_noise <= 0:
            return x
        x = x.float()
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        offset = torch.randn(shape, device=x.device) * params.augment_offset
        noise = torch.randn_like(x) * params.augment_noise
        return x + (offset + noise) * self.feature_scale

    def validate(self, module) -> tuple[float | None, float | None]:
        """(loss, macro-F1) of ``module`` on the validation intervals, or (None, None) without validation."""
        from napari_sbl.behavior.infer import interval_logits
        from napari_sbl.behavior.metrics import macro_f1

        if not self.split.val:
            return None, None
        logits = np.concatenate(interval_logits(module, self.features, self.valid, self.split.val))
        truth, targets = validation_truth(self.data, self.split.val)
        if self.data.multilabel:
            pred = np.where(logits.max(axis=1) > 0, logits.argmax(axis=1), -1)
        else:
            pred = logits.argmax(axis=1)
        return validation_loss(logits, truth, targets, self.data.multilabel), macro_f1(truth, pred, logits.shape[1])
