"""Bouts, time budgets, bins and transitions match hand-computed values exactly, at a variable frame rate."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.analysis.bouts import (
    binned_budget,
    find_bouts,
    find_runs,
    frame_edges,
    latency_s,
    time_budget,
)
from napari_sbl.analysis.sequences import load_sequences
from napari_sbl.analysis.tables import animal_transition_counts, bouts_table, time_budget_table
from napari_sbl.analysis.transitions import analyse_transitions, transition_counts, transition_pairs

from .conftest import PLANTED_TIMES


def test_runs_leave_out_unlabelled_frames():
    values, starts, stops = find_runs(np.array([-1, 2, 2, 0, -1, -1, 0, 0, 1]))
    assert values.tolist() == [2, 0, 0, 1]
    assert starts.tolist() == [1, 3, 6, 8] and stops.tolist() == [3, 4, 8, 9]
    assert [len(a) for a in find_runs(np.array([], dtype=int))] == [0, 0, 0]


def test_seconds_follow_real_frame_times_not_frame_count():
    times = np.array([0.0, 0.1, 0.2, 0.5, 0.9, 1.0])  # irregular; median step 0.1 for the last frame
    assert frame_edges(times).tolist() == pytest.approx([0.0, 0.1, 0.2, 0.5, 0.9, 1.0, 1.1])
    bouts = find_bouts(np.array([0, 0, 0, 1, 1, 1]), times, first_frame=100)
    assert bouts.start_frame.tolist() == [100, 103] and bouts.stop_frame.tolist() == [103, 106]
    assert bouts.duration_s == pytest.approx([0.5, 0.6])  # T/fps would say 0.3 and 0.3
    budget = time_budget(np.array([0, 0, 0, 1, 1, -1]), times, n_classes=3)
    assert budget.frames.tolist() == [3, 2, 0]
    assert budget.seconds == pytest.approx([0.5, 0.5, 0.0])
    assert budget.labelled_s == pytest.approx(1.0) and budget.present_s == pytest.approx(1.1)
    assert budget.fraction == pytest.approx([0.5, 0.5, 0.0])


def test_binned_budget_partitions_time_and_counts_bout_starts():
    times = np.arange(12) * 0.5  # 6 s at 2 fps, bins of 2 s = 4 frames
    labels = np.array([0, 0, 1, 1, 1, 1, -1, 0, 0, 0, 1, 1])
    binned = binned_budget(labels, times, n_classes=2, bin_s=2.0)
    assert binned.bin_start_s.tolist() == [0.0, 2.0, 4.0]
    assert binned.seconds.tolist() == [[1.0, 1.0], [0.5, 1.0], [1.0, 1.0]]
    assert binned.bouts.tolist() == [[1, 1], [1, 0], [0, 1]]
    assert binned.seconds.sum() == pytest.approx(time_budget(labels, times, 2).seconds.sum())


def test_planted_store_bouts_match_hand_computed(planted_store):
    seq = load_sequences(planted_store)
    assert seq.source == "annotations" and seq.animal_ids.tolist() == [3, 7]
    assert np.allclose(seq.frame_times, PLANTED_TIMES)
    table = bouts_table(seq)
    rows = table[["animal_id", "class", "start_frame", "stop_frame"]].values.tolist()
    assert rows == [[3, "groom", 0, 4], [3, "walk", 4, 7], [3, "groom", 9, 12],
                    [3, "rear", 12, 14], [3, "rear", 16, 20],  # rear is cut where the track is lost
                    [7, "walk", 2, 18]]
    assert table["start_s"].tolist() == pytest.approx([0.0, 0.4, 0.9, 1.5, 2.3, 0.2])
    assert table["duration_s"].tolist() == pytest.approx([0.4, 0.3, 0.6, 0.4, 0.8, 2.5])


def test_planted_store_time_budget_match_hand_computed(planted_store):
    budget = time_budget_table(load_sequences(planted_store)).set_index(["animal_id", "class"])
    three, seven = budget.loc[3], budget.loc[7]
    assert three["frames"].tolist() == [7, 3, 6]
    assert three["seconds"].tolist() == pytest.approx([1.0, 0.3, 1.2])
    assert three["fraction"].tolist() == pytest.approx([0.4, 0.12, 0.48])  # of 2.5 s labelled
    assert three["fraction_present"].tolist() == pytest.approx([1.0 / 2.7, 0.3 / 2.7, 1.2 / 2.7])
    assert three["bouts"].tolist() == [2, 1, 2]
    assert three["latency_s"].tolist() == pytest.approx([0.0, 0.4, 1.5])
    assert three["mean_bout_s"].tolist() == pytest.approx([0.5, 0.3, 0.6])
    assert seven["frames"].tolist() == [0, 16, 0] and seven["seconds"].tolist() == pytest.approx([0, 2.5, 0])
    assert np.isnan(seven.loc["groom", "latency_s"]) and seven.loc["walk", "latency_s"] == pytest.approx(0.2)


def test_planted_store_transitions_never_cross_a_lost_track(planted_store):
    seq = load_sequences(planted_store)
    groom, walk, rear = 0, 1, 2
    three = animal_transition_counts(seq, 0)
    expected = np.zeros((3, 3), dtype=int)
    expected[groom, walk] = expected[walk, groom] = expected[groom, rear] = 1  # walk→groom spans unlabelled 7-8
    assert three.tolist() == expected.tolist()  # no rear→rear across the absent frames 14-15
    assert animal_transition_counts(seq, 1).sum() == 0  # animals kept apart: 7 has one bout only


def test_transition_pairs_with_gap_limit():
    bouts = find_bouts(np.array([0, 0, 1, -1, -1, -1, 0, 2]), np.arange(8) * 0.1)
    assert transition_pairs(bouts).tolist() == [[0, 1], [1, 0], [0, 2]]
    assert transition_pairs(bouts, max_gap_frames=2).tolist() == [[0, 1], [0, 2]]
    present = np.ones(8, dtype=bool)
    present[4] = False
    assert transition_pairs(bouts, present).tolist() == [[0, 1], [0, 2]]


def test_adjusted_residuals_by_hand():
    counts = transition_counts(np.array([[0, 1]] * 8 + [[1, 0]] * 8 + [[0, 2]] * 2 + [[2, 0]] * 2), 3)
    matrix = analyse_transitions(counts)
    rows, cols, total = counts.sum(1), counts.sum(0), counts.sum()
    i, j = 0, 1
    e = rows[i] * cols[j] / total
    z = (counts[i, j] - e) / np.sqrt(e * (1 - rows[i] / total) * (1 - cols[j] / total))
    assert matrix.expected[i, j] == pytest.approx(e) and matrix.z[i, j] == pytest.approx(z)
    assert matrix.probabilities[0].tolist() == pytest.approx([0, 0.8, 0.2])
    assert matrix.z[1, 0] > 1.96 > matrix.z[0, 2]  # walk→groom every time: above chance
    assert np.isnan(analyse_transitions(np.zeros((2, 2), dtype=int)).z).all()


def test_latency_is_relative_to_analysis_start():
    bouts = find_bouts(np.array([-1, -1, 1, 1, 0]), np.arange(5) * 0.5 + 10.0)
    assert latency_s(bouts, 3, t0_s=10.0).tolist()[:2] == pytest.approx([2.0, 1.0])
    assert np.isnan(latency_s(bouts, 3, t0_s=10.0)[2])
