"""Decoding presets on planted probability sequences: thresholds, smoothing, gap fill, minimum length, Viterbi."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.behavior.decode import (
    PRESETS,
    DecodeParams,
    decode_all,
    decode_labels,
    decode_preset,
    runs,
)
from napari_sbl.errors import SblError

NAMES = ["rest", "walk", "groom"]


def planted(labels: list[int], confidence: float = 0.8, n_classes: int = 3) -> np.ndarray:
    """(T, C) probabilities whose argmax is ``labels`` (-1 → all classes equal, i.e. below any threshold)."""
    probs = np.full((len(labels), n_classes), (1 - confidence) / (n_classes - 1), dtype=np.float32)
    for t, label in enumerate(labels):
        if label < 0:
            probs[t] = 1.0 / n_classes
        else:
            probs[t, label] = confidence
    return probs


def test_none_preset_is_the_per_frame_argmax_and_nan_frames_stay_none():
    probs = planted([0, 0, 1, 2, 2, 1])
    probs[4] = np.nan
    labels = decode_labels(probs, decode_preset("none"), NAMES)
    assert labels.dtype == np.int16
    assert labels.tolist() == [0, 0, 1, 2, -1, 1]


def test_ignore_threshold_and_per_class_override():
    probs = planted([0, 0, 1, 1, 2, 2], confidence=0.8)
    probs[1] = [0.5, 0.3, 0.2]  # rest at 0.5
    probs[3] = [0.2, 0.45, 0.35]  # walk at 0.45
    params = DecodeParams(ignore_threshold=0.6)
    assert decode_labels(probs, params, NAMES).tolist() == [0, -1, 1, -1, 2, 2]
    lenient_walk = DecodeParams(ignore_threshold=0.6, class_overrides={"walk": {"threshold": 0.4}})
    assert decode_labels(probs, lenient_walk, NAMES).tolist() == [0, -1, 1, 1, 2, 2]
    # calibrated thresholds are used when no ignore threshold is given
    assert decode_labels(probs, DecodeParams(), NAMES, calibrated_thresholds=[0.55, 0.0, 0.0]).tolist() == [
        0, -1, 1, 1, 2, 2]


def test_gap_fill_joins_short_gaps_within_one_behaviour_only():
    sequence = [1] * 5 + [-1] * 2 + [1] * 5 + [-1] * 4 + [1] * 5 + [-1] * 2 + [2] * 5
    params = DecodeParams(ignore_threshold=0.5, gap_fill_frames=2)
    labels = decode_labels(planted(sequence), params, NAMES)
    expected = [1] * 12 + [-1] * 4 + [1] * 5 + [-1] * 2 + [2] * 5  # long gap and the gap between classes stay
    assert labels.tolist() == expected
    probs = planted(sequence)
    probs[5:7] = np.nan  # no data is never filled
    assert decode_labels(probs, params, NAMES)[5:7].tolist() == [-1, -1]


def test_min_length_folds_flickers_into_the_surrounding_bout():
    sequence = [0] * 10 + [1] * 3 + [0] * 10 + [2] * 12
    probs = planted(sequence)
    probs[10:13] = [0.4, 0.45, 0.15]  # the flicker is weak walk, strong-ish rest
    labels = decode_labels(probs, DecodeParams(ignore_threshold=0.0, min_segment_frames=5), NAMES)
    assert labels.tolist() == [0] * 23 + [2] * 12
    keep_walk = DecodeParams(ignore_threshold=0.0, min_segment_frames=5,
                             class_overrides={"walk": {"min_segment_frames": 1}})
    assert decode_labels(probs, keep_walk, NAMES).tolist() == sequence
    # a short bout at the start takes its only neighbour
    assert decode_labels(planted([1, 1] + [0] * 8), DecodeParams(min_segment_frames=3), NAMES).tolist() == [0] * 10


def test_viterbi_switch_penalty_removes_flicker_and_finds_the_change():
    rng = np.random.default_rng(0)
    truth = np.array([0] * 60 + [1] * 60)
    p_true = np.clip(rng.normal(0.62, 0.12, len(truth)), 0.3, 0.95)  # often below 0.5: per-frame flicker
    probs = np.zeros((len(truth), 2), np.float32)
    probs[np.arange(len(truth)), truth] = p_true
    probs[np.arange(len(truth)), 1 - truth] = 1 - p_true
    names = ["a", "b"]
    raw = decode_labels(probs, DecodeParams(ignore_threshold=0.0), names)
    assert len(runs(raw)[0]) > 6  # argmax flickers
    smooth = decode_labels(probs, DecodeParams(ignore_threshold=0.0, switch_penalty=4.0), names)
    assert len(runs(smooth)[0]) == 2
    assert abs(int(np.flatnonzero(np.diff(smooth))[0]) + 1 - 60) <= 3
    frozen = decode_labels(probs, DecodeParams(ignore_threshold=0.0, switch_penalty=1e4), names)
    assert len(runs(frozen)[0]) == 1


def test_viterbi_keeps_none_where_nothing_reaches_its_threshold():
    sequence = [0] * 20 + [-1] * 15 + [0] * 20
    labels = decode_labels(planted(sequence), DecodeParams(ignore_threshold=0.5, switch_penalty=2.0), NAMES)
    assert labels.tolist() == sequence


def test_presets_smooth_progressively_and_are_json_round_trippable():
    rng = np.random.default_rng(3)
    truth = np.repeat(rng.integers(0, 3, 12), 40)
    probs = rng.dirichlet(np.ones(3) * 0.7, len(truth)).astype(np.float32)
    probs[np.arange(len(truth)), truth] += 0.6
    probs /= probs.sum(axis=1, keepdims=True)
    segments = [len(runs(decode_labels(probs, PRESETS[name], NAMES))[0])
                for name in ("none", "light", "standard", "aggressive")]
    assert segments == sorted(segments, reverse=True) and segments[0] > 2 * segments[2]
    assert segments[-1] <= 20  # about the 12 planted bouts
    params = decode_preset("standard", min_segment_frames=12)
    assert params.preset == "custom" and DecodeParams.from_json(params.to_json()) == params
    with pytest.raises(SblError, match="unknown decoding preset"):
        decode_preset("extreme")


def test_decode_all_decodes_each_animal():
    first, second = planted([0, 0, 1, 1]), planted([2, 2, 2, 0])
    labels = decode_all(np.stack([first, second], axis=1), decode_preset("none"), NAMES)
    assert labels.shape == (4, 2) and labels[:, 0].tolist() == [0, 0, 1, 1] and labels[:, 1].tolist() == [2, 2, 2, 0]
