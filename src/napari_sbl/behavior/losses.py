"""Losses of the behaviour heads, each a small function of logits and the per-frame targets.

Targets per frame come in two forms built by :mod:`napari_sbl.behavior.dataset`: ``labels`` (B, T)
long, the class index or -1 where unlabelled, and ``targets`` (B, T, C) int8, 1 = is the class,
0 = is not (another label, or a hard negative from review), -1 = unknown.

This module imports torch at the top; import it only inside functions that train.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

SMOOTHNESS_CLAMP = 4.0  # MS-TCN's truncation of the log-probability jump between frames


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                        frame_weight: torch.Tensor, class_weight: torch.Tensor, multilabel: bool,
                        label_smoothing: float = 0.0, focal_gamma: float = 0.0) -> torch.Tensor:
    """Weighted (focal) cross-entropy over labelled frames; one-vs-rest BCE when ``multilabel``.

    logits (B, C, T); frame_weight (B, T) (bout balancing, 0 outside the training frames); class_weight (C,).
    Computed densely with masks (no boolean indexing), so a GPU step never waits for the host.
    """
    if multilabel:
        return _binary_loss(logits, targets, frame_weight, class_weight, label_smoothing, focal_gamma)
    n_classes = logits.shape[1]
    labelled = (labels >= 0) & (frame_weight > 0)
    index = labels.clamp(min=0)
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, C, T)
    true_log_prob = log_probs.gather(1, index[:, None]).squeeze(1)
    loss = -(1.0 - label_smoothing) * true_log_prob - (label_smoothing / n_classes) * log_probs.sum(dim=1)
    if focal_gamma > 0:
        loss = loss * (1.0 - true_log_prob.exp()).clamp(min=0).pow(focal_gamma)
    weight = frame_weight * class_weight[index] * labelled
    return (loss * weight).sum() / weight.sum().clamp(min=1e-6)


def _binary_loss(logits: torch.Tensor, targets: torch.Tensor, frame_weight: torch.Tensor,
                 class_weight: torch.Tensor, label_smoothing: float, focal_gamma: float) -> torch.Tensor:
    logits = logits.float().transpose(1, 2)  # (B, T, C)
    known = (targets >= 0) & (frame_weight[..., None] > 0)
    truth = targets.clamp(min=0).float()
    soft = truth * (1.0 - label_smoothing) + 0.5 * label_smoothing
    loss = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    if focal_gamma > 0:
        p = torch.sigmoid(logits)
        p_true = torch.where(truth > 0, p, 1.0 - p)
        loss = loss * (1.0 - p_true).pow(focal_gamma)
    weight = frame_weight[..., None] * torch.where(truth > 0, class_weight, torch.ones_like(class_weight))
    weight = weight * known
    return (loss * weight).sum() / weight.sum().clamp(min=1e-6)


def hard_negative_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                       frame_mask: torch.Tensor) -> torch.Tensor:
    """-log(1 - p_c) where a frame without a label is marked "not class c" (softmax heads)."""
    negative = ((targets == 0) & (labels < 0)[..., None] & (frame_mask[..., None] > 0)).float()
    probs = torch.softmax(logits.float(), dim=1).transpose(1, 2)
    loss = -torch.log1p(-probs.clamp(max=1 - 1e-6))
    return (loss * negative).sum() / negative.sum().clamp(min=1.0)


def smoothness_loss(logits: torch.Tensor, mask: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Truncated MSE of log-probability changes between neighbouring frames (penalises flicker)."""
    logits = logits.float()
    log_probs = F.logsigmoid(logits) if multilabel else F.log_softmax(logits, dim=1)
    jump = (log_probs[:, :, 1:] - log_probs.detach()[:, :, :-1]).clamp(-SMOOTHNESS_CLAMP, SMOOTHNESS_CLAMP) ** 2
    pair = (mask[:, 1:] * mask[:, :-1])[:, None, :]
    return (jump * pair).sum() / (pair.sum() * logits.shape[1]).clamp(min=1.0)


def boundary_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, valid) of shape (B, T): 1 where the label differs from the frame before; valid where both known."""
    known = labels >= 0
    valid = torch.zeros_like(known)
    valid[:, 1:] = known[:, 1:] & known[:, :-1]
    target = torch.zeros_like(labels, dtype=torch.float32)
    target[:, 1:] = (labels[:, 1:] != labels[:, :-1]).float()
    return target * valid, valid


def boundary_loss(boundary_logits: torch.Tensor, labels: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """BCE of the boundary head, positives up-weighted by their rarity (at most 20×)."""
    target, valid = boundary_targets(labels)
    valid = (valid & (frame_mask > 0)).float()
    positives = (target * valid).sum()
    pos_weight = ((valid.sum() - positives) / positives.clamp(min=1.0)).clamp(1.0, 20.0)
    loss = F.binary_cross_entropy_with_logits(boundary_logits.float(), target, pos_weight=pos_weight,
                                              reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
                                max_samples: int = 256) -> torch.Tensor:
    """SupCon (Khosla et al. 2020) over up to ``max_samples`` labelled frames: same class pulls together."""
    vectors = features.transpose(1, 2)[labels >= 0]  # (N, width)
    classes = labels[labels >= 0]
    if vectors.shape[0] < 2:
        return features.sum() * 0.0
    if vectors.shape[0] > max_samples:
        pick = torch.randperm(vectors.shape[0], device=vectors.device)[:max_samples]
        vectors, classes = vectors[pick], classes[pick]
    z = F.normalize(vectors.float(), dim=1)
    similarity = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    similarity = similarity.masked_fill(self_mask, -1e9)
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive = (classes[:, None] == classes[None, :]) & ~self_mask
    n_positive = positive.sum(dim=1)
    has = n_positive > 0
    if not has.any():
        return features.sum() * 0.0
    mean_log_prob = (log_prob * positive).sum(dim=1)[has] / n_positive[has]
    return -mean_log_prob.mean()
