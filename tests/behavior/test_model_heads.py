"""The head (token attention pooling → multi-stage dilated TCN → per-frame logits, boundary head) and its losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sbl.behavior import losses
from napari_sbl.behavior.model import HeadConfig, TokenAttentionPool, build_head


@pytest.fixture(autouse=True)
def one_thread():
    """Other test files run beside these on two cores; one torch thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def test_head_gives_per_frame_logits_for_every_stage_and_masks_padding():
    config = HeadConfig(input_dim=12, n_classes=4, width=16, stages=3, layers=4, dropout=0.0)
    head = build_head(config).eval()
    x = torch.randn(2, 50, 12)
    mask = torch.ones(2, 50)
    mask[1, 40:] = 0
    out = head(x, mask)
    assert len(out.stage_logits) == 3 and all(s.shape == (2, 4, 50) for s in out.stage_logits)
    assert out.boundary_logits.shape == (2, 50) and out.features.shape == (2, 16, 50)
    assert torch.all(out.stage_logits[-1][1, :, 40:] == 0) and torch.all(out.boundary_logits[1, 40:] == 0)
    # padding does not leak into real frames far from the edge: changing it leaves frame 0 alone
    x2 = x.clone()
    x2[1, 40:] = 100.0
    assert torch.allclose(head(x2, mask).stage_logits[-1][1, :, 0], out.stage_logits[-1][1, :, 0], atol=1e-5)


def test_token_head_pools_the_spatial_grid():
    head = build_head(HeadConfig(input_dim=8, n_classes=3, n_tokens=5, width=8, stages=2, layers=3)).eval()
    out = head(torch.randn(3, 20, 5, 8), torch.ones(3, 20))
    assert out.stage_logits[-1].shape == (3, 3, 20)


def test_attention_pooling_learns_to_attend_to_the_informative_token():
    rng = np.random.default_rng(0)
    n, tokens, dim = 512, 6, 8
    labels = rng.integers(0, 2, n)
    direction = rng.normal(0, 1, dim)
    grid = rng.normal(0, 1.5, (n, tokens, dim))
    grid[:, 2] = np.where(labels[:, None] == 1, 1.0, -1.0) * direction + rng.normal(0, 0.3, (n, dim))
    x = torch.tensor(grid[:, None], dtype=torch.float32)  # (n, T=1, G, D): only grid cell 2 carries the class
    y = torch.tensor(labels)
    pool = TokenAttentionPool(dim, tokens)
    classifier = torch.nn.Linear(dim, 2)
    optimizer = torch.optim.Adam([*pool.parameters(), *classifier.parameters()], lr=0.02)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(classifier(pool(x)[:, 0]), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        weights = pool.weights(x).mean(dim=(0, 1, 3))
    assert int(weights.argmax()) == 2 and float(weights[2]) > 0.5


def test_classification_loss_smoothing_focal_and_weights():
    logits = torch.tensor([[[2.0, -1.0], [0.0, 1.0]]]).transpose(1, 2)  # (1, C=2, T=2)
    labels = torch.tensor([[0, 1]])
    targets = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.int8)
    ones = torch.ones(1, 2)
    plain = losses.classification_loss(logits, labels, targets, ones, torch.ones(2), multilabel=False)
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.isclose(plain, expected)
    smoothed = losses.classification_loss(logits, labels, targets, ones, torch.ones(2), False, label_smoothing=0.2)
    assert torch.isclose(smoothed, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2))
    focal = losses.classification_loss(logits, labels, targets, ones, torch.ones(2), False, focal_gamma=2.0)
    assert focal < plain  # confident frames count less
    unlabelled = losses.classification_loss(logits, torch.tensor([[-1, 1]]), targets, ones, torch.ones(2), False)
    assert torch.isclose(unlabelled, torch.nn.functional.cross_entropy(logits[:, :, 1:], labels[:, 1:]))
    weighted = losses.classification_loss(logits, labels, targets, ones, torch.tensor([1.0, 0.0]), False)
    assert torch.isclose(weighted, torch.nn.functional.cross_entropy(logits[:, :, :1], labels[:, :1]))


def test_hard_negatives_push_down_only_the_negated_class():
    logits = torch.zeros(1, 3, 4, requires_grad=True)
    labels = torch.full((1, 4), -1)
    targets = torch.full((1, 4, 3), -1, dtype=torch.int8)
    targets[0, :, 1] = 0  # "not walk" on every frame
    loss = losses.hard_negative_loss(logits, labels, targets, torch.ones(1, 4))
    loss.backward()
    assert logits.grad[0, 1].gt(0).all() and logits.grad[0, 0].lt(0).all()  # descent lowers walk, raises others


def test_smoothness_penalises_flicker_not_steady_predictions():
    steady = torch.zeros(1, 2, 10)
    flicker = torch.tensor([[[3.0, -3.0] * 5, [-3.0, 3.0] * 5]])
    mask = torch.ones(1, 10)
    assert float(losses.smoothness_loss(steady, mask, False)) == 0.0
    assert float(losses.smoothness_loss(flicker, mask, False)) > 1.0


def test_boundary_targets_mark_label_changes_between_known_frames():
    target, valid = losses.boundary_targets(torch.tensor([[0, 0, 1, 1, -1, 1, 2]]))
    assert target[0].tolist() == [0, 0, 1, 0, 0, 0, 1] and valid[0].tolist() == [0, 1, 1, 1, 0, 0, 1]


def test_supervised_contrastive_prefers_class_clusters():
    labels = torch.tensor([[0] * 8 + [1] * 8])
    clustered = torch.cat([torch.ones(1, 4, 8), -torch.ones(1, 4, 8)], dim=2) + 0.05 * torch.randn(1, 4, 16)
    mixed = torch.randn(1, 4, 16)
    assert losses.supervised_contrastive_loss(clustered, labels) < losses.supervised_contrastive_loss(mixed, labels)


def test_calibration_cools_overconfident_logits_and_picks_thresholds():
    from napari_sbl.behavior.train import fit_calibration

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    correct = rng.random(400) < 0.75  # 75 % right, but logits claim near certainty
    predicted = np.where(correct, truth, 1 - truth)
    logits = np.zeros((400, 2))
    logits[np.arange(400), predicted] = 8.0
    calibration = fit_calibration(logits, truth, np.full((400, 2), -1), multilabel=False)
    assert all(t > 2.0 for t in calibration["temperature"])
    from napari_sbl.behavior.infer import calibrated_probs

    probs = calibrated_probs(logits, calibration["temperature"], False)
    assert abs(float(probs.max(axis=1).mean()) - 0.75) < 0.08
    # multi-label: positives sit around logit +1, negatives around -1 with a negative offset for class 1
    targets = rng.integers(0, 2, (400, 2))
    multi = np.where(targets == 1, 1.0, -1.0) + rng.normal(0, 0.3, (400, 2))
    multi[:, 1] -= 1.0  # class 1's boundary sits at logit -1, i.e. p ≈ 0.27 before calibration
    calibration = fit_calibration(multi, np.full(400, -1), targets, multilabel=True)
    assert len(calibration["thresholds"]) == 2 and 0.05 <= calibration["thresholds"][1] <= 0.5
