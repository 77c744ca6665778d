"""Scores of per-frame labels against planted truth: F1, confusion, segmental F1@50, edit score."""

from __future__ import annotations

import numpy as np

from napari_sbl.behavior.metrics import (
    class_scores,
    confusion_matrix,
    edit_score,
    macro_f1,
    segment_counts,
    validation_report,
)


def test_per_class_scores_and_confusion_ignore_unlabelled_frames():
    truth = np.array([0, 0, 0, 1, 1, -1, -1, 2])
    pred = np.array([0, 0, 1, 1, -1, 2, 0, 2])
    confusion = confusion_matrix(truth, pred, 3)
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]  # last column: predicted none
    precision, recall, f1, support = class_scores(truth, pred, 3)
    assert support.tolist() == [3, 2, 1]
    np.testing.assert_allclose(precision, [1.0, 0.5, 1.0])
    np.testing.assert_allclose(recall, [2 / 3, 0.5, 1.0])
    assert np.isclose(macro_f1(truth, pred, 3), np.mean([0.8, 0.5, 1.0]))


def test_segmental_f1_counts_a_split_bout_as_one_hit_and_one_false_positive():
    truth = np.array([0] * 10 + [1] * 10)
    pred = np.array([0] * 10 + [1] * 6 + [0] * 1 + [1] * 3)
    assert segment_counts(truth, pred, 0.5) == (2, 2, 0)  # the 6-frame piece matches (IoU .6); 2 extra pieces
    one_long = np.array([0] * 20)  # covers the first bout with IoU 10/20
    assert segment_counts(truth, one_long, 0.5) == (1, 0, 1) and segment_counts(truth, one_long, 0.6) == (0, 1, 2)
    assert edit_score(truth, pred) == 0.5  # order 0 1 0 1 vs 0 1: two insertions over four segments
    assert edit_score(truth, truth) == 1.0


def test_validation_report_scores_only_labelled_stretches():
    truth = np.array([0] * 8 + [-1] * 4 + [1] * 8)
    pred = np.array([0] * 8 + [1] * 4 + [1] * 8)  # the unlabelled middle does not count against anything
    report = validation_report([truth], [pred], ["a", "b"])
    assert report.macro_f1 == 1.0 and report.segmental_f1_50 == 1.0 and report.edit_score == 1.0
    assert report.n_frames == 16 and report.per_class[1].support == 8
    assert report.to_json()["confusion"] == [[8, 0, 0], [0, 8, 0]]
