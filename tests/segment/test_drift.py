"""Drift detection on synthetic masks with known motion: what triggers, what does not, and where
recovery prompts land."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.segment.box_motion import BoxKalman, box_iou
from napari_sbl.segment.drift import (
    AnimalObservation,
    DriftMonitor,
    DriftParams,
    MaskBank,
    RecoveryRecord,
    mask_quality,
    observe_labels,
    paste_mask,
    recovery_counts,
)

SHAPE = (120, 160)


def animals_at(positions: dict[int, tuple[float, float]], radius: dict[int, float] | None = None,
               aspect: float = 1.0) -> np.ndarray:
    """(H, W) uint16 labels with an ellipse per animal id at (x, y), ``aspect`` = width / height."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels = np.zeros(SHAPE, dtype=np.uint16)
    for animal_id, (x, y) in positions.items():
        r = (radius or {}).get(animal_id, 6.0)
        labels[((xx - x) / (r * aspect)) ** 2 + ((yy - y) / r) ** 2 <= 1] = animal_id
    return labels


def walk(monitor: DriftMonitor, frames: list[np.ndarray], ids=(1,)) -> tuple[list, list]:
    """Feed frames in order, taking every mask as it is; (requests, quality) per frame."""
    requests, quality = [], []
    for frame_index, labels in enumerate(frames):
        observations = observe_labels(labels, ids)
        requests.append(monitor.assess(observations))
        quality.append(monitor.commit(frame_index, observations, labels))
    return requests, quality


def straight_line(n: int, start=(30.0, 60.0), velocity=(2.0, 0.5)) -> list[tuple[float, float]]:
    return [(start[0] + velocity[0] * i, start[1] + velocity[1] * i) for i in range(n)]


def test_smooth_motion_never_triggers_and_scores_high():
    path = [(80 + 40 * np.cos(i / 15), 60 + 30 * np.sin(i / 15)) for i in range(80)]  # curved, ~3 px/frame
    requests, quality = walk(DriftMonitor(DriftParams(), [1], SHAPE), [animals_at({1: p}) for p in path])
    assert not any(requests)
    scores = np.array([q[1] for q in quality])
    assert scores[0] == 1.0 and np.all((scores > 0) & (scores <= 1))
    assert np.median(scores[5:]) > 0.8


def test_kalman_learns_the_velocity_of_a_straight_walk():
    kalman = BoxKalman(np.array([30.0, 60.0, 12.0, 12.0]))
    for x, y in straight_line(30)[1:]:
        kalman.predict()
        kalman.update(np.array([x, y, 12.0, 12.0]))
    np.testing.assert_allclose(kalman.x[4:], [2.0, 0.5], atol=0.05)
    np.testing.assert_allclose(kalman.predicted_state()[:2], straight_line(31)[-1], atol=0.3)


def test_jump_triggers_a_box_prompt_at_the_predicted_position():
    monitor = DriftMonitor(DriftParams(), [1], SHAPE)
    path = straight_line(20)
    walk(monitor, [animals_at({1: p}) for p in path])
    predicted = monitor.predicted_box(1)
    np.testing.assert_allclose((predicted[:2] + predicted[2:]) / 2, straight_line(21)[-1], atol=0.5)

    jumped = observe_labels(animals_at({1: (path[-1][0] + 35, path[-1][1] - 20)}), [1])
    (request,) = monitor.assess(jumped)
    assert (request.animal_id, request.reason, request.prompt) == (1, "jump", "box")
    np.testing.assert_allclose((request.box[:2] + request.box[2:]) / 2, straight_line(21)[-1], atol=0.5)
    size = request.box[2:] - request.box[:2]
    assert np.all((size > 12) & (size < 16))  # the disc's 13 px box grown by the 10 % margin
    assert monitor.score(1, jumped[1]) < 0.3  # a drifted mask is listed as doubtful
    # what a tracker's recovery would deliver: the animal where it was predicted
    assert monitor.score(1, observe_labels(animals_at({1: straight_line(21)[-1]}), [1])[1]) > 0.8


def test_area_change_beyond_the_ratio_triggers_and_within_it_does_not():
    monitor = DriftMonitor(DriftParams(area_ratio=2.0), [1], SHAPE)
    walk(monitor, [animals_at({1: (60.0, 60.0)}) for _ in range(10)])
    slightly = observe_labels(animals_at({1: (60.0, 60.0)}, radius={1: 7.0}), [1])  # area x1.36
    assert monitor.assess(slightly) == []
    doubled = observe_labels(animals_at({1: (60.0, 60.0)}, radius={1: 9.5}), [1])  # area x2.5
    (request,) = monitor.assess(doubled)
    assert request.reason == "area"
    assert monitor.score(1, doubled[1]) < monitor.score(1, slightly[1]) < 1.0


def test_empty_mask_asks_for_a_box_then_reseeds_from_the_bank_at_the_prediction():
    params = DriftParams(empty_stretch_frames=3, cooldown_frames=4)
    monitor = DriftMonitor(params, [1], SHAPE)
    path = straight_line(20, velocity=(1.5, 0.0))
    walk(monitor, [animals_at({1: p}, aspect=1.5) for p in path])
    assert len(monitor.animals[1].bank.masks) == params.bank_size
    empty = observe_labels(np.zeros(SHAPE, np.uint16), [1])

    (first,) = monitor.assess(empty)
    assert (first.reason, first.prompt) == ("empty", "box")
    monitor.commit(20, empty, attempts={1: False})  # the box found nothing: still gone
    asked = []
    for frame_index in range(21, 30):
        asked.append(monitor.assess(empty))
        if asked[-1]:
            break
        monitor.commit(frame_index, empty)
    assert [len(a) for a in asked] == [0, 0, 0, 0, 1]  # cool-down of 4 frames, then re-seed
    (reseed,) = asked[-1]
    assert (reseed.reason, reseed.prompt) == ("reseed", "mask") and reseed.box is None
    predicted = monitor.predicted_box(1)
    placed = observe_labels(reseed.mask.astype(np.uint16), [1])[1]
    np.testing.assert_allclose(placed.centroid, (predicted[:2] + predicted[2:]) / 2, atol=0.6)
    assert placed.area_px == pytest.approx(observe_labels(animals_at({1: path[-1]}, aspect=1.5), [1])[1].area_px)
    assert placed.centroid[0] > path[-1][0] + 1.5  # moved on along the walk while unseen


def test_an_animal_back_after_an_empty_stretch_starts_a_new_motion_model_there():
    monitor = DriftMonitor(DriftParams(empty_stretch_frames=3), [1], SHAPE)
    walk(monitor, [animals_at({1: p}) for p in straight_line(10, velocity=(3.0, 0.0))])
    empty = observe_labels(np.zeros(SHAPE, np.uint16), [1])
    for frame_index in range(10, 16):
        assert monitor.commit(frame_index, empty) == {1: 0.0}
    monitor.commit(16, observe_labels(animals_at({1: (100.0, 30.0)}), [1]))
    predicted = monitor.predicted_box(1)
    np.testing.assert_allclose((predicted[:2] + predicted[2:]) / 2, (100.5, 30.5), atol=0.1)  # no old velocity

def test_bank_chooses_the_mask_whose_shape_fits_the_predicted_box():
    bank = MaskBank(4)
    for frame_index, aspect in enumerate((1.0, 2.0)):
        labels = animals_at({1: (50.0, 50.0)}, aspect=aspect)
        bank.add(frame_index, labels, 1, observe_labels(labels, [1])[1])
    wide = bank.best_at(np.array([90.0, 54.0, 114.0, 66.0]), SHAPE)  # 24 x 12 box centred on (102, 60)
    round_ = bank.best_at(np.array([96.0, 54.0, 108.0, 66.0]), SHAPE)
    wide_obs, round_obs = (observe_labels(mask.astype(np.uint16), [1])[1] for mask in (wide, round_))
    assert wide_obs.box[2] - wide_obs.box[0] > 20 and round_obs.box[2] - round_obs.box[0] < 14
    np.testing.assert_allclose(wide_obs.centroid, (102, 60), atol=0.6)
    assert paste_mask(np.ones((5, 5), bool), np.array([500.0, 500.0]), SHAPE) is None
    assert MaskBank(3).best_at(np.array([0.0, 0.0, 10.0, 10.0]), SHAPE) is None


def test_no_box_prompt_for_an_animal_hidden_under_another_or_leaving_the_frame():
    monitor = DriftMonitor(DriftParams(), [1, 2], SHAPE)
    frames = [animals_at({1: (40.0 + 2 * i, 60.0), 2: (80.0, 60.0)}, radius={1: 5.0, 2: 12.0}) for i in range(15)]
    walk(monitor, frames, ids=(1, 2))
    hidden = observe_labels(animals_at({2: (80.0, 60.0)}, radius={2: 12.0}), [1, 2])  # 1 walked under 2
    assert monitor.predicted_box(1)[2] < 80 + 12 and monitor.assess(hidden) == []

    leaving = DriftMonitor(DriftParams(), [1], SHAPE)
    walk(leaving, [animals_at({1: (130.0 + 5 * i, 60.0)}) for i in range(7)])
    assert leaving.predicted_box(1)[0] > 150  # mostly outside the frame
    assert leaving.assess(observe_labels(np.zeros(SHAPE, np.uint16), [1])) == []


def test_cooldown_and_switch_off_and_prompted_animals():
    monitor = DriftMonitor(DriftParams(cooldown_frames=3), [1], SHAPE)
    walk(monitor, [animals_at({1: (60.0, 60.0)}) for _ in range(5)])
    far = observe_labels(animals_at({1: (120.0, 30.0)}), [1])
    assert monitor.assess(far)[0].reason == "jump"
    assert monitor.assess(far, prompted={1}) == []  # the user's click is the truth
    monitor.commit(5, observe_labels(animals_at({1: (60.0, 60.0)}), [1]), attempts={1: True})
    near = observe_labels(animals_at({1: (60.0, 60.0)}), [1])
    assert [monitor.assess(far) for _ in range(1)] == [[]]
    for frame_index in range(6, 9):
        monitor.commit(frame_index, near)
    assert monitor.assess(far)[0].reason == "jump"  # cool-down over

    off = DriftMonitor(DriftParams(recover=False), [1], SHAPE)
    walk(off, [animals_at({1: (60.0, 60.0)}) for _ in range(5)])
    assert off.assess(far) == []
    quality = off.commit(5, far, prompted={1})
    assert quality == {1: 1.0}  # a prompted mask scores 1 and restarts the prediction there
    np.testing.assert_allclose(off.predicted_box(1)[:2] + 6.5, (120, 30), atol=1.0)


def test_recovered_masks_are_capped_and_never_banked():
    monitor = DriftMonitor(DriftParams(recovered_quality=0.25), [1], SHAPE)
    walk(monitor, [animals_at({1: (60.0, 60.0)}) for _ in range(3)])
    banked = len(monitor.animals[1].bank.masks)
    labels = animals_at({1: (60.0, 60.0)})
    quality = monitor.commit(3, observe_labels(labels, [1]), labels, attempts={1: True})
    assert quality[1] == 0.25 and len(monitor.animals[1].bank.masks) == banked


def test_quality_stays_in_the_unit_interval():
    rng = np.random.default_rng(0)
    for _ in range(500):
        x, y, w, h = rng.uniform(0, 100, 4)
        observation = AnimalObservation(float(rng.uniform(1, 5000)), np.array([x, y]), np.array([x, y, x + w, y + h]))
        predicted = rng.uniform(0, 100, 4)
        predicted[2:] += predicted[:2]
        quality = mask_quality(observation, predicted, float(rng.uniform(0, 5000)))
        assert 1e-3 <= quality <= 1.0
    absent = AnimalObservation(0.0, np.full(2, np.nan), np.full(4, np.nan))
    assert mask_quality(absent, np.array([0.0, 0.0, 5.0, 5.0]), 20.0) == 0.0
    assert box_iou(np.array([0.0, 0, 10, 10]), np.array([5.0, 0, 15, 10])) == pytest.approx(1 / 3)


def test_recovery_counts_and_parameter_checks():
    records = [RecoveryRecord(3, 1, "jump", "box", True, 0.1, 0.7), RecoveryRecord(9, 2, "reseed", "mask", False, 0, 0)]
    assert recovery_counts(records) == {"attempted": 2, "accepted": 1, "by_reason": {"jump": 1, "reseed": 1},
                                        "by_prompt": {"box": 1, "mask": 1}}
    with pytest.raises(ValueError, match="area_ratio"):
        DriftParams(area_ratio=0.5)
    with pytest.raises(ValueError, match="cooldown_frames"):
        DriftParams(cooldown_frames=-1)
