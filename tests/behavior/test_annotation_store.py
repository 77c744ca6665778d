"""Annotations in the session store: round trips, crash-safe saves, conflicts, foreign writers, projects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_sbl.behavior import annotation_store as annotation_store_module
from napari_sbl.behavior.annotation_store import (
    TABLE,
    AnnotationSession,
    contract_key,
    load_model,
    majority_id_in_shape,
    repair_views,
    view_keys,
)
from napari_sbl.behavior.annotations import Segment, ShapeAnnotation
from napari_sbl.behavior.classes import ClassList, Project, read_project, write_project
from napari_sbl.errors import AnnotationError
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.pipeline.session import open_session
from napari_sbl.store.session import SessionStore


def make_store(folder, n_frames=60, animal_ids=(1, 2), name="clip"):
    frames = [np.full((24, 32, 3), (7 * i) % 256, dtype=np.uint8) for i in range(n_frames)]
    write_video(folder / f"{name}.mp4", frames, VideoWriteParams(fps=10, gop=10, crf=20))
    _, store = open_session(folder / f"{name}.mp4")
    if animal_ids:
        store.write_array("tracks/animal_ids", np.array(animal_ids, dtype=np.int32))
    return store


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path)


def labelled_session(store):
    session = AnnotationSession.open(store)
    model = session.model
    groom, rear = model.add_class("groom"), model.add_class("rear", color="#00ff00", key=5)
    model.label_range(1, 5, 20, groom)
    model.label_range(1, 15, 30, rear)
    model.label_range(2, 0, 10, rear)
    model.mark_not(2, 40, 50, groom)
    box = ((1.0, 1.0), (1.0, 9.0), (9.0, 9.0), (9.0, 1.0))
    model.add_shape(ShapeAnnotation(50, 55, groom, -1, "rectangle", box))
    return session


def snapshot(model):
    return model.segments(), model.negative_segments(), model.classes, model.shapes


def test_save_load_round_trip_and_contract_arrays(store):
    session = labelled_session(store)
    assert session.dirty
    version = session.save()
    assert not session.dirty and version == 1
    loaded, loaded_version = load_model(SessionStore.open(store.path))
    assert snapshot(loaded) == snapshot(session.model) and loaded_version == 1
    animal = store.read(contract_key("animal_id"))
    assert animal.dtype == np.int32 and animal.tolist() == [1, 1, 2]
    assert store.read(contract_key("start_frame")).tolist() == [5, 15, 0]
    assert store.read(contract_key("stop_frame")).tolist() == [15, 30, 10]
    classes = store.attrs(contract_key("class_id"))["classes"]
    assert [c["name"] for c in classes] == ["groom", "rear"] and classes[1] == {
        "id": classes[1]["id"], "name": "rear", "color": "#00ff00", "key": 5}
    assert store.read("annotations/hard_negatives/start_frame").tolist() == [40]
    assert store.read("annotations/shapes/records").tolist() == [[50, 55, classes[0]["id"], -1, 0]]
    assert store.read("annotations/shapes/vertices").shape == (4, 3)
    assert {store.attrs(k)["version"] for k in view_keys()} == {1}


def test_multi_label_round_trip(store):
    session = AnnotationSession.open(store)
    model = session.model
    a, b = model.add_class("a"), model.add_class("b")
    model.set_multi_label(True)
    model.label_range(1, 0, 10, a)
    model.label_range(1, 5, 15, b)
    session.save()
    loaded, _ = load_model(store)
    assert loaded.multi_label and loaded.segments() == [Segment(1, 0, 10, a), Segment(1, 5, 15, b)]
    assert store.attrs(contract_key("animal_id"))["multi_label"] is True


@pytest.mark.parametrize("crash_at", range(11))
def test_crash_mid_save_never_mixes_two_saves(store, monkeypatch, crash_at):
    session = labelled_session(store)
    session.save()
    old = snapshot(load_model(store)[0])
    model = session.model
    model.label_range(1, 30, 45, model.classes.by_name("groom").id)
    model.unlabel_range(2, 0, 10)
    new = snapshot(model)
    writes = []
    real_write = SessionStore.write_array

    def crashing_write(self, key, data, chunks=None, attrs=None):
        if len(writes) == crash_at:
            raise OSError("simulated power cut")
        writes.append(key)
        return real_write(self, key, data, chunks, attrs)

    monkeypatch.setattr(SessionStore, "write_array", crashing_write)
    with pytest.raises(OSError, match="power cut"):
        session.save()
    monkeypatch.setattr(SessionStore, "write_array", real_write)
    reopened = SessionStore.open(store.path)
    after = AnnotationSession.open(reopened)
    assert snapshot(after.model) == (old if crash_at == 0 else new)
    starts = reopened.read(contract_key("start_frame")).tolist()
    assert starts == [s.start_frame for s in after.model.segments()]  # views repaired from the table
    assert {reopened.attrs(k)["version"] for k in view_keys()} == {reopened.attrs(TABLE)["version"]}


def test_killed_process_mid_save_recovers(store):
    session = labelled_session(store)
    session.save()
    script = textwrap.dedent(f"""
        import os
        from napari_sbl.behavior.annotation_store import AnnotationSession
        from napari_sbl.store.session import SessionStore
        store = SessionStore.open({str(store.path)!r})
        session = AnnotationSession.open(store)
        session.model.label_range(2, 20, 35, session.model.classes.by_name("rear").id)
        real, calls = SessionStore.write_array, []
        def write_then_die(self, key, data, chunks=None, attrs=None):
            calls.append(key)
            if len(calls) == 3:
                os._exit(9)  # no cleanup, no finally: like a kill -9 mid-save
            return real(self, key, data, chunks, attrs)
        SessionStore.write_array = write_then_die
        session.save()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    assert repair_views(SessionStore.open(store.path)) is True
    model, version = load_model(SessionStore.open(store.path))
    assert version == 2 and Segment(2, 20, 35, model.classes.by_name("rear").id) in model.segments()
    assert SessionStore.open(store.path).read(contract_key("stop_frame")).tolist() == [15, 30, 10, 35]


def test_save_refuses_to_overwrite_another_writers_save(store):
    first = labelled_session(store)
    first.save()
    second = AnnotationSession.open(SessionStore.open(store.path))
    second.model.label_range(2, 50, 60, second.model.classes.ids[0])
    second.save()
    first.model.unlabel_range(1, 0, 60)
    with pytest.raises(AnnotationError, match="saved by another program"):
        first.save()
    assert Segment(2, 50, 60, second.model.classes.ids[0]) in load_model(store)[0].segments()


def test_foreign_contract_arrays_load_and_bad_ones_are_named(store):
    for part, values in (("animal_id", [1, 2]), ("start_frame", [0, 5]), ("stop_frame", [4, 9]), ("class_id", [3, 0])):
        store.write_array(contract_key(part), np.array(values, dtype=np.int32),
                          attrs={"classes": [{"id": 0, "name": "walk", "color": "#112233", "key": 1}]})
    model, version = load_model(store)
    assert version is None and model.classes.get(3).name == "class 3"  # kept, never dropped
    assert model.segments() == [Segment(1, 0, 4, 3), Segment(2, 5, 9, 0)]
    store.write_array(contract_key("class_id"), np.array([0], dtype=np.int32))
    with pytest.raises(AnnotationError, match="different lengths"):
        load_model(store)
    store.write_array(contract_key("class_id"), np.array([0, 0], dtype=np.int32))
    store.write_array(contract_key("stop_frame"), np.array([4, 900], dtype=np.int32))
    with pytest.raises(AnnotationError, match="row 1 has frames 5–900"):
        load_model(store)


def test_candidates_are_read_and_decisions_saved(store):
    session = labelled_session(store)
    rear = session.model.classes.by_name("rear").id
    attrs = {"classes": ["rear", "cluster-only"], "source": "clusters/umap_leiden"}
    for part, values in (("animal_id", [1, 2]), ("start_frame", [40, 20]), ("stop_frame", [50, 30]),
                         ("class_index", [0, 1])):
        store.write_array(f"annotations/candidates/{part}", np.array(values, dtype=np.int32), attrs=attrs)
    session.save()
    session = AnnotationSession.open(SessionStore.open(store.path))
    first, second = session.model.candidates
    assert (first.class_id, first.class_name, first.source) == (rear, "rear", "clusters/umap_leiden")
    assert second.class_id is None and second.class_name == "cluster-only"
    session.model.accept_candidate(first)
    session.save()
    again = AnnotationSession.open(SessionStore.open(store.path)).model
    assert again.pending_candidates() == [second] and Segment(1, 40, 50, rear) in again.segments()


def test_project_shares_classes_across_stores(tmp_path):
    store_a = make_store(tmp_path, name="a")
    store_b = make_store(tmp_path, name="b")
    project = Project(tmp_path / "lab.sblproject.json", classes=ClassList().add("groom").add("rear"))
    project.add_store(store_a.path)
    project.add_store(store_b.path)
    write_project(project)
    session_b = AnnotationSession.open(store_b)
    own = session_b.model.add_class("dig")
    session_b.model.label_range(1, 0, 5, own)
    session_b.save()
    assert read_project(project.path).classes.names == ["groom", "rear", "dig"]
    # store A had its own numbering: 'rear' first; it is renumbered by name, labels kept
    session = AnnotationSession.open(store_a, find=False)
    rear = session.model.add_class("rear")
    session.model.label_range(2, 3, 9, rear)
    session.save()
    shared = AnnotationSession.open(SessionStore.open(store_a.path))
    assert shared.model.classes.names == ["groom", "rear", "dig"]
    assert shared.model.segments() == [Segment(2, 3, 9, shared.model.classes.by_name("rear").id)]


def test_majority_id_in_shape():
    labels = np.zeros((20, 20), dtype=np.uint16)
    labels[2:10, 2:10] = 3
    labels[8:12, 8:12] = 5
    box = np.array([[0, 0], [0, 11], [11, 11], [11, 0]], dtype=float)
    assert majority_id_in_shape(labels, box) == 3
    assert majority_id_in_shape(labels, np.array([[9, 9], [9, 12], [12, 12], [12, 9]], float)) == 5
    assert majority_id_in_shape(labels, np.array([[15, 15], [15, 19], [19, 19]], float)) == 0


def test_demo_step_labels_speed_stretches(store):
    t = np.arange(60, dtype=np.float32)
    x = np.where(t < 30, 5.0, 5.0 + 4.0 * (t - 30))  # still, then moving 4 px/frame
    centroid = np.stack([np.stack([x, np.full(60, 8.0)], axis=1)] * 2, axis=1).astype(np.float32)
    store.write_array("tracks/centroid", centroid)

    class Ctx:
        params = type("P", (), {"max_frames": None})()

    Ctx.store = store
    line = annotation_store_module.demo_step_labels(Ctx())
    model, _ = load_model(store)
    moving, still = model.classes.by_name("moving").id, model.classes.by_name("still").id
    for animal in (1, 2):
        labels = model.labels(animal)
        assert (labels[35:55] == moving).all() and (labels[5:25] == still).all()
    assert "tracks/centroid speed" in line and "moving" in line
    annotation_store_module.demo_step_labels(Ctx())  # rerunning adds nothing
    assert load_model(store)[0].segments() == model.segments()
