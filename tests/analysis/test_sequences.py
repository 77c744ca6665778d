"""Annotations and predictions become per-frame labels per animal; empty or unlabelled stores say so."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_sbl.analysis.run import demo_step_analyze
from napari_sbl.analysis.sequences import available_sources, load_sequences, unify_classes
from napari_sbl.errors import AnnotationError, StoreError
from napari_sbl.progress import Reporter

from .conftest import CLASSES, make_store, planted_centres, write_annotations


def still_centres(n_frames=12, n_animals=2) -> np.ndarray:
    centres = np.zeros((n_frames, n_animals, 2))
    centres[:] = [[20.0 + 30 * a, 30.0] for a in range(n_animals)]
    return centres


def write_predictions(store, model, labels, n_classes=3, classes=CLASSES):
    probs = np.full((*labels.shape, n_classes), 0.1, dtype=np.float16)
    for (t, a), label in np.ndenumerate(labels):
        if label >= 0 and label < n_classes:
            probs[t, a, label] = 0.8
    attrs = {"classes": classes} if classes else {}
    store.write_array(f"predictions/{model}/labels", labels.astype(np.int16), attrs=attrs)
    store.write_array(f"predictions/{model}/probs", probs, attrs=attrs)


def test_overlapping_annotations_later_row_wins_and_untracked_animal_gets_a_column(tmp_path):
    store = make_store(tmp_path, "s", still_centres(), [1, 2])
    write_annotations(store, [(1, 0, 6, 1), (1, 4, 8, 2), (9, 2, 5, 7)],
                      classes=CLASSES[:2])  # class 7 is undeclared; animal 9 is not tracked
    seq = load_sequences(store)
    assert seq.animal_ids.tolist() == [1, 2, 9]
    assert seq.class_names == ["groom", "walk", "class 7"]
    assert seq.labels[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1]
    assert (seq.labels[:, 1] == -1).all()
    assert seq.labels[:, 2].tolist() == [-1, -1, 2, 2, 2] + [-1] * 7
    assert seq.present[:, 2].all()


def test_predictions_map_columns_to_animal_ids_and_hide_absent_frames(tmp_path):
    centres = still_centres()
    centres[5, 1] = np.nan
    store = make_store(tmp_path, "s", centres, [4, 8])
    labels = np.array([[0, 2]] * 6 + [[1, 2]] * 6)
    labels[3, 0] = -1
    write_predictions(store, "mlp", labels)
    seq = load_sequences(store)  # auto: predictions
    assert seq.source == "predictions/mlp" and seq.animal_ids.tolist() == [4, 8]
    assert seq.class_names == ["groom", "walk", "rear"]
    assert seq.labels[:, 0].tolist() == [0, 0, 0, -1, 0, 0, 1, 1, 1, 1, 1, 1]
    assert seq.labels[5, 1] == -1 and (np.delete(seq.labels[:, 1], 5) == 2).all()
    assert seq.probs.shape == (12, 2, 3) and seq.probs[0, 1, 2] == pytest.approx(0.8, abs=1e-3)


def test_predictions_animal_ids_attr_names_the_columns(tmp_path):
    centres = still_centres()
    centres[:4, 0] = np.nan  # tracks column 0 is animal 8, absent on frames 0-3
    store = make_store(tmp_path, "s", centres, [8, 4])
    labels = np.array([[1, 0]] * 12)
    write_predictions(store, "m", labels)
    store.update_attrs("predictions/m/labels", animal_ids=[4, 8])  # the classifier sorted the animals
    seq = load_sequences(store)
    assert seq.animal_ids.tolist() == [4, 8]
    assert (seq.labels[:, 0] == 1).all()  # animal 4 is always tracked
    assert seq.labels[:, 1].tolist() == [-1] * 4 + [0] * 8
    assert np.allclose(seq.centroid[5, 1], centres[5, 0])


def test_predictions_without_classes_and_with_class_id_labels(tmp_path):
    store = make_store(tmp_path, "s", still_centres(), [1, 2])
    write_predictions(store, "bare", np.array([[0, 1]] * 12), n_classes=2, classes=None)
    assert load_sequences(store, "predictions", "bare").class_names == ["class 0", "class 1"]
    ids = np.array([[5, 1]] * 12)  # written as class ids (5 cannot be a column of 3)
    write_predictions(store, "by_id", ids, n_classes=3)
    seq = load_sequences(store, "predictions", "by_id")
    assert seq.labels[0].tolist() == [2, 0]  # rear, groom


def test_several_models_need_a_choice(tmp_path):
    store = make_store(tmp_path, "s", still_centres(), [1, 2])
    for model in ("a", "b"):
        write_predictions(store, model, np.zeros((12, 2), dtype=int))
    with pytest.raises(StoreError, match=r"several models .*a, b.*--model"):
        load_sequences(store)
    assert load_sequences(store, model="b").source == "predictions/b"
    with pytest.raises(StoreError, match="no predictions of model 'c'"):
        load_sequences(store, model="c")


def test_unify_classes_matches_names_across_stores(tmp_path):
    first = make_store(tmp_path / "a", "a", still_centres(), [1, 2], annotations=[(1, 0, 4, 2)])
    second = make_store(tmp_path / "b", "b", still_centres(), [1, 2])
    write_annotations(second, [(2, 0, 3, 9), (2, 3, 6, 1)],
                      classes=[{"id": 9, "name": "rear", "color": "#0000ff"}, CLASSES[0]])
    a, b = unify_classes([load_sequences(first), load_sequences(second)])
    assert a.class_names == b.class_names == ["groom", "walk", "rear"]
    assert a.labels[:4, 0].tolist() == [1] * 4
    assert b.labels[:6, 1].tolist() == [2, 2, 2, 0, 0, 0]


def test_window_keeps_absolute_frames(tmp_path):
    store = make_store(tmp_path, "s", still_centres(), [1, 2], annotations=[(1, 2, 10, 1)])
    part = load_sequences(store).window(4, 8)
    assert part.first_frame == 4 and part.n_frames == 4 and (part.labels[:, 0] == 0).all()
    with pytest.raises(StoreError, match="holds no frame"):
        load_sequences(store).window(20, 30)


def test_empty_and_unlabelled_stores_give_clear_messages(tmp_path):
    store = make_store(tmp_path, "s", still_centres(), [1, 2])
    assert available_sources(store) == {"annotations": [], "predictions": []}
    with pytest.raises(StoreError, match="no annotations; label some behaviour"):
        load_sequences(store)
    with pytest.raises(StoreError, match="no predictions; train a classifier"):
        load_sequences(store, "predictions")
    write_annotations(store, np.zeros((0, 4)))
    with pytest.raises(AnnotationError, match="empty annotations table: nothing is labelled"):
        load_sequences(store, "annotations")
    write_predictions(store, "m", np.full((12, 2), -1))
    with pytest.raises(StoreError, match="label no frame"):
        load_sequences(store, "predictions")


def test_demo_step_skips_unlabelled_and_analyses_labelled(tmp_path):
    empty = make_store(tmp_path / "e", "empty", still_centres(), [1, 2])
    ctx = SimpleNamespace(store=empty, reporter=Reporter(), params=SimpleNamespace(max_frames=None))
    line = demo_step_analyze(ctx)
    assert line.startswith("analysis skipped") and "nothing is labelled" in line
    assert not (empty.path.parent / "empty-analysis").exists()
    labelled = make_store(tmp_path / "l", "labelled", planted_centres(), [3, 7], annotations=[(3, 0, 8, 1)])
    ctx = SimpleNamespace(store=labelled, reporter=Reporter(), params=SimpleNamespace(max_frames=15))
    line = demo_step_analyze(ctx)
    out = labelled.path.parent / "labelled-analysis"
    assert str(out) in line and (out / "bouts.csv").is_file() and (out / "figures" / "ethogram.png").is_file()
