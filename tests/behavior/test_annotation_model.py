"""The annotation model: per-frame truth, segments as runs, later edits win, undo/redo, hard negatives, candidates."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.behavior.annotations import AnnotationModel, Candidate, Segment, ShapeAnnotation, value_runs
from napari_sbl.behavior.classes import ClassList
from napari_sbl.errors import AnnotationError


@pytest.fixture
def model() -> AnnotationModel:
    model = AnnotationModel.empty(100, [1, 2], ClassList())
    for name in ("groom", "rear", "walk"):
        model.add_class(name)
    model.clear_history()
    return model


def ids(model):
    return {c.name: c.id for c in model.classes}


def test_value_runs_skip_background():
    starts, stops, values = value_runs(np.array([-1, 0, 0, 2, 2, -1, -1, 0]))
    assert starts.tolist() == [1, 3, 7] and stops.tolist() == [3, 5, 8] and values.tolist() == [0, 2, 0]


def test_overlap_resolved_by_later_edit(model):
    c = ids(model)
    model.label_range(1, 10, 30, c["groom"])
    model.label_range(1, 20, 40, c["rear"])
    model.label_range(2, 0, 5, c["walk"])
    assert model.segments(1) == [Segment(1, 10, 20, c["groom"]), Segment(1, 20, 40, c["rear"])]
    assert model.segments() == [*model.segments(1), Segment(2, 0, 5, c["walk"])]
    labels = model.labels(1)
    assert labels[19] == c["groom"] and labels[20] == c["rear"] and labels[40] == -1 and labels.dtype == np.int16
    with pytest.raises(ValueError):
        labels[0] = 3  # the truth is read-only from outside


def test_undo_redo_sequence_restores_every_state(model):
    c = ids(model)
    states = []
    edits = [lambda: model.label_range(1, 10, 30, c["groom"]), lambda: model.label_range(1, 20, 40, c["rear"]),
             lambda: model.unlabel_range(1, 25, 28), lambda: model.mark_not(1, 12, 15, c["groom"]),
             lambda: model.merge_classes(c["rear"], c["walk"]), lambda: model.delete_class(c["groom"])]
    for edit in edits:
        assert edit() is True
        states.append((model.segments(), model.negative_segments(), model.classes))
    for expected in reversed(states[:-1]):
        model.undo()
        assert (model.segments(), model.negative_segments(), model.classes) == expected
    model.undo()
    assert model.segments() == [] and model.negative_segments() == [] and not model.can_undo
    for expected in states:
        model.redo()
        assert (model.segments(), model.negative_segments(), model.classes) == expected
    assert not model.can_redo
    model.undo()
    model.label_range(2, 0, 3, c["walk"])  # a new edit drops the redo branch
    assert not model.can_redo


def test_no_op_edit_is_not_an_undo_step(model):
    c = ids(model)
    assert model.label_range(1, 0, 10, c["groom"]) is True
    assert model.label_range(1, 0, 10, c["groom"]) is False
    model.undo()
    assert model.segments() == [] and not model.can_undo


def test_hard_negatives_and_labels_exclude_each_other(model):
    c = ids(model)
    model.label_range(1, 0, 20, c["groom"])
    model.mark_not(1, 5, 10, c["groom"])
    assert model.segments(1) == [Segment(1, 0, 5, c["groom"]), Segment(1, 10, 20, c["groom"])]
    assert model.negative_segments() == [Segment(1, 5, 10, c["groom"])]
    model.mark_not(1, 5, 10, c["rear"])
    model.label_range(1, 8, 12, c["groom"])  # labelling clears "not groom" there, keeps "not rear"
    assert model.negative_segments() == [Segment(1, 5, 8, c["groom"]), Segment(1, 5, 10, c["rear"])]


def test_move_edge_extends_and_shrinks(model):
    c = ids(model)
    model.label_range(1, 10, 20, c["groom"])
    model.label_range(1, 20, 30, c["rear"])
    segment = model.segments(1)[0]
    model.move_edge(segment, "stop", 25)  # extending over the neighbour: later edit wins
    assert model.segments(1) == [Segment(1, 10, 25, c["groom"]), Segment(1, 25, 30, c["rear"])]
    model.move_edge(model.segments(1)[0], "start", 15)
    assert model.segments(1)[0] == Segment(1, 15, 25, c["groom"]) and model.labels(1)[12] == -1
    model.undo()
    model.undo()
    assert model.segments(1)[0] == Segment(1, 10, 20, c["groom"])


def test_multi_label_keeps_overlapping_classes(model):
    c = ids(model)
    model.label_range(1, 0, 10, c["groom"])
    model.set_multi_label(True)
    model.label_range(1, 5, 15, c["rear"])
    assert model.labels(1).shape == (100, max(c.values()) + 1)
    assert model.segments(1) == [Segment(1, 0, 10, c["groom"]), Segment(1, 5, 15, c["rear"])]
    assert model.classes_at(1, 7) == sorted([c["groom"], c["rear"]])
    with pytest.raises(AnnotationError, match="5 frames with several classes"):
        model.set_multi_label(False)
    model.unlabel_range(1, 5, 10, c["rear"])
    model.set_multi_label(False)
    assert model.segments(1) == [Segment(1, 0, 10, c["groom"]), Segment(1, 10, 15, c["rear"])]


def test_class_ids_are_not_reused_while_undo_can_bring_them_back(model):
    c = ids(model)
    model.label_range(1, 0, 5, c["walk"])
    model.delete_class(c["walk"])
    new_id = model.add_class("sniff")
    assert new_id != c["walk"]
    model.undo()
    model.undo()
    assert model.segments(1) == [Segment(1, 0, 5, c["walk"])] and model.classes.get(c["walk"]).name == "walk"


def test_next_unlabelled_stretch(model):
    c = ids(model)
    model.label_range(1, 0, 10, c["groom"])
    model.label_range(1, 20, 100, c["rear"])
    assert model.next_unlabelled(1, 0) == (10, 20)
    assert model.next_unlabelled(1, 12) == (10, 20)  # wraps to the only stretch
    model.label_range(1, 10, 20, c["rear"])
    assert model.next_unlabelled(1, 0) is None


def test_candidates_accept_and_reject_are_undoable(model):
    c = ids(model)
    good = Candidate(1, 30, 40, c["rear"], "rear", "clusters/umap")
    bad = Candidate(2, 0, 10, c["groom"], "groom", "clusters/umap")
    unnamed = Candidate(2, 50, 60, None, "cluster 4", "clusters/umap")
    model.set_candidates([good, bad, unnamed])
    model.accept_candidate(good)
    model.reject_candidate(bad, hard_negative=True)
    assert model.segments() == [Segment(1, 30, 40, c["rear"])]
    assert model.negative_segments() == [Segment(2, 0, 10, c["groom"])]
    assert model.pending_candidates() == [unnamed]
    with pytest.raises(AnnotationError, match="no behaviour class yet"):
        model.accept_candidate(unnamed)
    model.accept_candidate(unnamed, class_id=c["walk"])
    model.undo()
    model.undo()
    assert model.pending_candidates() == [bad, unnamed] and model.negative_segments() == []


def test_label_shape_labels_its_animal_and_region_shapes_only_record(model):
    c = ids(model)
    box = ((0.0, 0.0), (0.0, 5.0), (5.0, 5.0), (5.0, 0.0))
    model.add_shape(ShapeAnnotation(3, 6, c["groom"], 2, "rectangle", box))
    model.add_shape(ShapeAnnotation(7, 8, c["rear"], -1, "polygon", box[:3]))
    assert model.segments() == [Segment(2, 3, 6, c["groom"])] and len(model.shapes) == 2
    model.undo()
    assert len(model.shapes) == 1


@pytest.mark.parametrize(("animal", "start", "stop", "message"), [
    (1, 10, 5, "reversed"), (1, -3, 5, "negative"), (1, 90, 120, "past the video's end"), (7, 0, 5, "animal 7"),
    (1, 5, 5, "empty"),
])
def test_bad_ranges_raise_and_change_nothing(model, animal, start, stop, message):
    c = ids(model)
    model.label_range(1, 0, 3, c["groom"])
    with pytest.raises(AnnotationError, match=message):
        model.label_range(animal, start, stop, c["rear"])
    assert model.segments() == [Segment(1, 0, 3, c["groom"])]
    with pytest.raises(AnnotationError, match="no behaviour class with id 99"):
        model.label_range(1, 0, 3, 99)


def test_listeners_hear_every_change(model):
    heard = []
    model.subscribe(lambda: heard.append(model.revision))
    model.label_range(1, 0, 3, ids(model)["groom"])
    model.undo()
    model.redo()
    assert len(heard) == 3 and heard == sorted(heard)
