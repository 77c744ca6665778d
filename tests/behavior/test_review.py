"""Active-learning review on planted predictions: uncertain and diverse picks, confident spread, transitions,
decisions written back as per-frame truth; and label spreading."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.behavior.dataset import HARD_NEGATIVES, build_sequences, read_clip_table, read_segments
from napari_sbl.behavior.decode import decode_all, decode_preset
from napari_sbl.behavior.infer import write_predictions
from napari_sbl.behavior.review import (
    ReviewParams,
    decide,
    k_center_greedy,
    propose_candidates,
    read_candidates,
    uncertainty,
    write_candidates,
)
from napari_sbl.behavior.spreading import spread_labels
from napari_sbl.errors import AnnotationError
from napari_sbl.store.session import SessionStore
from tests.behavior.test_model_synthetic import CLASSES

N_FRAMES, CLIP, STRIDE = 1000, 20, 10
DUPLICATES = (1, 100, 300)  # animal 1, frames [100, 300): very uncertain clips with one and the same embedding
SCATTERED = [(2, 500, 520), (1, 700, 720), (2, 100, 120)]  # uncertain clips with distinct embeddings


def review_store(folder, name: str, seed: int) -> SessionStore:
    """Clips every 10 frames for animals 1 and 2; predictions confident except at planted uncertain places."""
    rng = np.random.default_rng(seed)
    store = SessionStore.create(folder / f"{name}.sbl.zarr", {"path": str(folder / f"{name}.mp4"),
                                                              "n_frames": N_FRAMES, "height": 8, "width": 8,
                                                              "fps": 25.0, "size_bytes": seed})
    starts = np.arange(0, N_FRAMES - CLIP + 1, STRIDE)
    animal_id = np.repeat([1, 2], len(starts)).astype(np.int32)
    start = np.tile(starts, 2).astype(np.int32)
    embedding = rng.normal(0, 1, (len(start), 16)).astype(np.float32)
    block = (animal_id == DUPLICATES[0]) & (start >= DUPLICATES[1]) & (start + CLIP <= DUPLICATES[2])
    embedding[block] = embedding[np.flatnonzero(block)[0]] + rng.normal(0, 1e-3, (block.sum(), 16))
    frames = np.repeat(embedding[:, None, :], 4, axis=1).astype(np.float16)
    attrs = {"encoder": "motion", "checkpoint_sha256": "sha-motion-1"}
    for part, values in (("clips", embedding), ("frames", frames), ("animal_id", animal_id), ("start_frame", start),
                         ("stop_frame", start + CLIP)):
        store.write_array(f"embeddings/motion/{part}", values, attrs=attrs)
    truth = np.repeat(rng.integers(0, 3, 10), 100)  # ten 100-frame bouts
    probs = np.full((N_FRAMES, 2, 3), 0.025, np.float32)
    for column in range(2):
        probs[np.arange(N_FRAMES), column, truth] = 0.95
    probs[DUPLICATES[1]:DUPLICATES[2], 0] = [0.36, 0.34, 0.30]
    for animal, lo, hi in SCATTERED:
        probs[lo:hi, animal - 1] = [0.40, 0.35, 0.25]
    labels = decode_all(probs, decode_preset("none"), [c["name"] for c in CLASSES])
    write_predictions(store, "model", probs, labels, {"classes": CLASSES, "encoder": "motion", "animal_ids": [1, 2],
                                                      "calibration": {}, "multilabel": False})
    labelled = np.array([[2, 800, 1000, 1]], dtype=np.int32)  # animal 2 is labelled at the end already
    for column, part in enumerate(("animal_id", "start_frame", "stop_frame", "class_id")):
        store.write_array(f"annotations/{part}", labelled[:, column], attrs={"classes": CLASSES, "multi_label": False})
    return store


@pytest.fixture
def stores(tmp_path):
    return [review_store(tmp_path, "a", 1), review_store(tmp_path, "b", 2)]


def test_uncertain_picks_are_diverse_not_near_duplicates(stores):
    params = ReviewParams(n_candidates=8, uncertain_share=1.0, confident_share=0.0, transition_share=0.0)
    picks = propose_candidates(stores[:1], "model", params)
    uncertain = [c for c in picks if c.reason == "uncertain"]
    assert len(uncertain) == 8
    in_block = [c for c in uncertain if c.animal_id == 1 and DUPLICATES[1] <= c.start_frame < DUPLICATES[2]]
    assert 1 <= len(in_block) <= 2  # the 18 duplicates of the block are shown once (or twice), not 8 times
    for animal, lo, hi in SCATTERED:  # every distinct uncertain place is in the round
        assert any(c.animal_id == animal and c.start_frame < hi and c.stop_frame > lo for c in uncertain)
    scores = uncertainty(np.array([[0.36, 0.34, 0.30], [0.9, 0.05, 0.05]]))
    assert scores[0] > 0.9 and scores[1] < 0.2
    # ranking by uncertainty alone would have filled the round from the block
    assert k_center_greedy(np.ones((5, 3)) + np.arange(5)[:, None] * 1e-6, 3) == [0]


def test_confident_picks_spread_over_videos_and_classes_and_skip_labelled_clips(stores):
    params = ReviewParams(n_candidates=6, uncertain_share=0.0, confident_share=1.0, transition_share=0.0)
    picks = propose_candidates(stores, "model", params)
    assert len(picks) == 6 and all(c.reason == "confident" and c.score >= 0.9 for c in picks)
    assert {c.store for c in picks} == {str(s.path) for s in stores}
    assert len({c.class_index for c in picks}) >= 2
    assert not any(c.animal_id == 2 and c.start_frame >= 800 for c in picks)  # already labelled there


def test_transition_windows_propose_the_predicted_labels(stores):
    params = ReviewParams(n_candidates=4, uncertain_share=0.0, confident_share=0.0, transition_share=1.0,
                          transition_half_frames=10)
    picks = propose_candidates(stores[:1], "model", params)
    labels = stores[0].read("predictions/model/labels")
    assert picks and all(c.reason == "transition" and c.stop_frame - c.start_frame == 20 for c in picks)
    for c in picks:
        column = labels[c.start_frame:c.stop_frame, c.animal_id - 1]
        np.testing.assert_array_equal(c.proposed_labels, column)
        assert len(set(column.tolist())) == 2 and c.class_index == column[-1]


def test_candidates_round_trip_and_rounds_are_recorded(stores):
    store = stores[0]
    picks = propose_candidates([store], "model", ReviewParams(n_candidates=6))
    assert write_candidates(store, picks, CLASSES, "model") == 1
    back, attrs = read_candidates(store)
    assert attrs["source"] == "review" and [c["name"] for c in attrs["classes"]] == ["rest", "walk", "groom"]
    assert [(c.animal_id, c.start_frame, c.stop_frame, c.class_index, c.reason) for c in back] == [
        (c.animal_id, c.start_frame, c.stop_frame, c.class_index, c.reason) for c in picks]
    transitions = [(a, b) for a, b in zip(back, picks, strict=True) if b.reason == "transition"]
    assert all(np.array_equal(a.proposed_labels, b.proposed_labels) for a, b in transitions)
    assert store.read("annotations/candidates/class_index").dtype == np.int32
    assert write_candidates(store, picks[:2], CLASSES, "model") == 2
    assert [r["round"] for r in read_candidates(store)[1]["rounds"]] == [1, 2]


def test_decisions_write_per_frame_truth_through_the_contract_arrays(stores):
    store = stores[0]
    picks = propose_candidates([store], "model", ReviewParams(n_candidates=6))
    write_candidates(store, picks, CLASSES, "model")
    confident = next(i for i, c in enumerate(picks) if c.reason == "confident" and c.animal_id == 1)
    chosen = picks[confident]
    decide(store, confident, "accept")
    labels = read_segments(store)
    assert (1, chosen.start_frame, chosen.stop_frame, CLASSES[chosen.class_index]["id"]) in zip(
        labels.animal_id, labels.start_frame, labels.stop_frame, labels.class_id, strict=True)
    # relabelling the same frames replaces the label there (per-frame truth, no overlap kept)
    other = next(c["name"] for c in CLASSES if c["id"] != CLASSES[chosen.class_index]["id"])
    decide(store, confident, "relabel", other)
    labels = read_segments(store)
    mine = labels.animal_id == 1
    assert list(zip(labels.start_frame[mine], labels.stop_frame[mine], labels.class_id[mine], strict=True)) == [
        (chosen.start_frame, chosen.stop_frame, next(c["id"] for c in CLASSES if c["name"] == other))]
    # a hard negative removes that class's label there and is kept as "not this class"
    decide(store, confident, "negative")
    negatives = read_segments(store, HARD_NEGATIVES)
    assert (negatives.animal_id.tolist(), negatives.start_frame.tolist()) == ([1], [chosen.start_frame])
    assert store.attrs("annotations/class_id")["classes"] == CLASSES  # classes attrs kept
    assert read_candidates(store)[0][confident].decision == "hard negative"
    skipped = next(i for i, c in enumerate(picks) if i != confident)
    before = read_segments(store)
    decide(store, skipped, "skip")
    assert read_segments(store).start_frame.tolist() == before.start_frame.tolist()
    with pytest.raises(AnnotationError, match="unknown review decision"):
        decide(store, skipped, "maybe")


def test_hard_negatives_reach_the_training_targets(stores):
    store = stores[0]
    picks = propose_candidates([store], "model", ReviewParams(n_candidates=4, uncertain_share=0.0,
                                                              confident_share=1.0, transition_share=0.0))
    write_candidates(store, picks, CLASSES, "model")
    index = next(i for i, c in enumerate(picks) if c.animal_id == 1)
    decide(store, index, "negative")
    chosen = picks[index]
    (sequence, _) = build_sequences(store, read_clip_table(store, "motion"), 5, 3, {c["id"]: i for i, c in
                                                                                     enumerate(CLASSES)})
    inside = (sequence.centre_frames() >= chosen.start_frame) & (sequence.centre_frames() < chosen.stop_frame)
    assert (sequence.targets[inside, chosen.class_index] == 0).all()
    assert (sequence.targets[inside].max(axis=1) <= 0).all()  # "not walk" says nothing about the other classes


def test_accepting_a_transition_writes_both_sides_and_updates_the_labelling_table(stores):
    store = stores[0]
    table = np.array([[1, 0, 50, 0, 0]], dtype=np.int32)  # the labelling dock's truth table, version 3
    store.write_array("annotations/segment_table", table, attrs={
        "classes": CLASSES, "version": 3, "multi_label": False,
        "columns": ["animal_id", "start_frame", "stop_frame", "class_id", "kind"]})
    params = ReviewParams(n_candidates=2, uncertain_share=0.0, confident_share=0.0, transition_share=1.0)
    picks = propose_candidates([store], "model", params)
    write_candidates(store, picks, CLASSES, "model")
    decide(store, 0, "accept")
    proposal = picks[0].proposed_labels
    cut = int(np.flatnonzero(np.diff(proposal))[0]) + 1
    labels = read_segments(store)
    rows = set(zip(labels.animal_id, labels.start_frame, labels.stop_frame, labels.class_id, strict=True))
    start = picks[0].start_frame
    assert (picks[0].animal_id, start, start + cut, CLASSES[proposal[0]]["id"]) in rows
    assert (picks[0].animal_id, start + cut, picks[0].stop_frame, CLASSES[proposal[-1]]["id"]) in rows
    table_attrs = store.attrs("annotations/segment_table")
    assert table_attrs["version"] == 4 and store.attrs("annotations/class_id")["version"] == 4
    assert len(store.read("annotations/segment_table")) == len(labels)
    assert list(table_attrs["candidate_decisions"].values()) == ["accepted"]


def test_label_spreading_relabels_unsure_clips_from_confident_neighbours():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0]])
    cluster = np.repeat([0, 1], 40)
    embeddings = centres[cluster] + rng.normal(0, 0.5, (80, 3))
    probs = np.where(cluster[:, None] == np.arange(2), 0.95, 0.05)
    unsure = rng.choice(80, 16, replace=False)
    probs[unsure] = [[0.45, 0.55] if c == 0 else [0.55, 0.45] for c in cluster[unsure]]  # wrong and unsure
    result = spread_labels(embeddings, probs)
    assert (result.labels == cluster).all()
    assert result.changed.sum() == 16 and (result.confidence[unsure] > 0.5).all()
