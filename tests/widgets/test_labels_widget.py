"""Label behaviour dock in a real viewer: keys label ranges, the timeline seeks and edits, shapes find animals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

from napari_sbl.behavior.annotation_store import contract_key, load_model
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.pipeline.session import open_session
from napari_sbl.progress import Reporter
from napari_sbl.segment.backends import TrackParams
from napari_sbl.segment.run import track_video
from napari_sbl.store import layout

pytestmark = pytest.mark.gui
N_FRAMES = 40


@pytest.fixture(scope="module")
def tracked_video(tmp_path_factory):
    """Two dark discs moving right and left, tracked by the classical tracker (real masks)."""
    folder = tmp_path_factory.mktemp("labels")
    height, width = 96, 128
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in range(N_FRAMES):
        frame = np.full((height, width, 3), 200, dtype=np.uint8)
        for cx, cy in ((20 + t, 30), (100 - t, 66)):
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= 8**2] = 40
        frames.append(frame)
    path = folder / "blobs.mp4"
    write_video(path, frames, VideoWriteParams(fps=10, gop=10, crf=10))
    video, store = open_session(path)
    track_video(video, store, [], TrackParams(backend="classical", n_animals=2), Reporter())
    return path


@pytest.fixture
def labelling(make_napari_viewer, tracked_video, tmp_path):
    from napari_sbl.widgets.labels import LabelsWidget

    work = tmp_path / "blobs.mp4"
    work.write_bytes(tracked_video.read_bytes())
    shutil.copytree(tracked_video.with_name("blobs.sbl.zarr"), tmp_path / "blobs.sbl.zarr")
    _, store = open_session(work)
    assert store.has(layout.TRACKS_MASKS)
    viewer = make_napari_viewer()
    viewer.open(str(work), plugin="napari-sbl")
    widget = LabelsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.add_class("groom")
    widget.add_class("rear")
    viewer.layers.selection.active = viewer.layers["blobs"]
    return viewer, widget, store


def press(viewer, key, modifiers=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(viewer.window._qt_viewer, key, modifiers)


def test_keys_label_the_selected_range_undo_redo_and_autosave(qtbot, labelling):
    viewer, widget, store = labelling
    model = widget.model
    rear = model.classes.by_name("rear").id
    assert model.classes.get(rear).key == 2
    viewer.dims.set_current_step(0, 5)
    press(viewer, Qt.Key.Key_I)
    for _ in range(7):
        press(viewer, Qt.Key.Key_BracketRight)
    assert int(viewer.dims.current_step[0]) == 12
    press(viewer, Qt.Key.Key_O)
    assert widget.shared.selection == (5, 13)
    press(viewer, Qt.Key.Key_2)
    animal = widget.shared.active_animal
    assert [(s.animal_id, s.start_frame, s.stop_frame, s.class_id) for s in model.segments()] == [
        (animal, 5, 13, rear)]
    press(viewer, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert model.segments() == []
    press(viewer, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert len(model.segments()) == 1
    qtbot.waitUntil(lambda: store.has(contract_key("start_frame")) and
                    store.read(contract_key("start_frame")).tolist() == [5], timeout=5000)
    press(viewer, Qt.Key.Key_Escape)
    press(viewer, Qt.Key.Key_Q)
    assert int(viewer.dims.current_step[0]) == 11 and widget.shared.selection is None
    press(viewer, Qt.Key.Key_1)  # no selection: the current clip (1 frame) gets groom
    assert model.classes_at(animal, 11) == [model.classes.by_name("groom").id]
    press(viewer, Qt.Key.Key_N)
    assert widget.shared.selection == (13, N_FRAMES) and int(viewer.dims.current_step[0]) == 13
    press(viewer, Qt.Key.Key_Space)
    assert widget._play_timer.isActive()
    qtbot.waitUntil(lambda: int(viewer.dims.current_step[0]) > 13, timeout=5000)  # plays at the video's 10 fps
    press(viewer, Qt.Key.Key_Space)
    assert not widget._play_timer.isActive()
    press(viewer, Qt.Key.Key_H)
    assert widget.help_dialog is not None and "Ctrl+Z" in widget.help_dialog.findChild(type(widget.status)).text()


def test_keys_are_unbound_when_the_dock_closes(labelling):
    viewer, widget, store = labelling
    assert any(str(k) == "2" for k in viewer.keymap)
    assert any(str(k) == "O" for k in viewer.layers["blobs"].keymap)  # the video layer's own 'O' is overridden
    viewer.window.remove_dock_widget(widget)
    assert not any(str(k) in ("2", "Space", "Ctrl+Z") for k in viewer.keymap)
    assert not any(str(k) == "O" for k in viewer.layers["blobs"].keymap)


def test_timeline_click_seeks_drag_selects_and_edges_move(qtbot, labelling):
    viewer, widget, store = labelling
    canvas = widget.timeline.canvas
    canvas.resize(800, canvas.height())
    axis, rows = canvas.axis(), canvas.rows()
    y, height = rows.lane_span(1, "labels")
    row_y = int(y + height / 2)
    QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(int(axis.frame_to_x(30)) + 2, row_y))
    assert int(viewer.dims.current_step[0]) == 30
    assert widget.shared.active_animal == widget.model.animal_ids[1]
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(int(axis.frame_to_x(10)) + 2, row_y))
    QTest.mouseMove(canvas, QPoint(int(axis.frame_to_x(19)) + 2, row_y))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(int(axis.frame_to_x(19)) + 2, row_y))
    assert widget.shared.selection == (10, 20)
    press(viewer, Qt.Key.Key_1)
    animal, groom = widget.shared.active_animal, widget.model.classes.by_name("groom").id
    assert [(s.start_frame, s.stop_frame) for s in widget.model.segments(animal)] == [(10, 20)]
    edge_x = int(axis.frame_to_x(20))
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(edge_x, row_y))
    QTest.mouseMove(canvas, QPoint(int(axis.frame_to_x(26)), row_y))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(int(axis.frame_to_x(26)), row_y))
    assert [(s.start_frame, s.stop_frame, s.class_id) for s in widget.model.segments(animal)] == [(10, 26, groom)]
    canvas.grab()  # paints every lane without error


def test_label_shapes_assign_the_mask_id_under_them_and_reload(qtbot, labelling, make_napari_viewer):
    from napari_sbl.widgets.labels import LabelsWidget

    viewer, widget, store = labelling
    frame = 12
    masks = store.read(layout.TRACKS_MASKS)[frame]
    expected = int(masks[66, 100 - frame])
    assert expected > 0
    viewer.dims.set_current_step(0, frame)
    shapes = widget.ensure_shapes_layer()
    cx, cy = 100 - frame, 66
    y0, y1, x0, x1 = cy - 12, cy + 12, cx - 12, cx + 12
    shapes.add_rectangles(np.array([[frame, y0, x0], [frame, y0, x1], [frame, y1, x1], [frame, y1, x0]]))
    shapes.add_polygons([np.array([[frame, 80, 5], [frame, 90, 5], [frame, 90, 20]])])  # floor: no animal
    press(viewer, Qt.Key.Key_2)
    rear = widget.model.classes.by_name("rear").id
    animals = [s.animal_id for s in widget.model.shapes]
    assert animals == [expected, -1]
    assert widget.model.classes_at(expected, frame) == [rear]
    assert shapes.features["class_id"].tolist() == [rear, rear]
    qtbot.waitUntil(lambda: len(load_model(store)[0].shapes) == 2, timeout=5000)
    other = make_napari_viewer()
    other.open(str(store.video_path()), plugin="napari-sbl")
    reopened = LabelsWidget(other)
    layer = reopened.ensure_shapes_layer()
    assert len(layer.data) == 2 and layer.shape_type == ["rectangle", "polygon"]
    assert np.allclose(np.asarray(layer.data[0])[:, 0], frame)
    assert layer.features["animal_id"].tolist() == [expected, -1]
    reopened.release()


def test_import_export_and_unknown_classes(labelling, tmp_path):
    from napari_sbl.behavior.annotation_io import UnknownClassesError

    viewer, widget, store = labelling
    source = tmp_path / "in.csv"
    source.write_text("animal_id,class,start_frame,stop_frame\n1,groom,0,5\n2,dig,3,9\n")
    with pytest.raises(UnknownClassesError):
        widget.import_annotations(source, add_unknown=False)
    assert widget.model.segments() == []
    widget.import_annotations(source, add_unknown=True)
    assert "added dig" in widget.status.text()
    widget.export_annotations(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().splitlines()[1:] == ["1,groom,0,5", "2,dig,3,9"]
    widget._guarded(lambda: widget.model.label_range(1, 30, 99, 0))
    assert "past the video's end" in widget.status.text()


def test_standalone_timeline_shares_the_session_and_shows_predictions(qtbot, labelling):
    from napari_sbl.widgets.timeline import TimelineWidget

    viewer, widget, store = labelling
    predicted = np.full((N_FRAMES, 2), -1, dtype=np.int16)
    predicted[5:20, 0] = widget.model.classes.by_name("groom").id
    store.write_array("predictions/b_older/labels", np.zeros_like(predicted), attrs={"created": "2026-01-01T00:00:00"})
    store.write_array("predictions/demo_model/labels", predicted, attrs={"created": "2026-02-01T00:00:00"})
    timeline = TimelineWidget(viewer)
    assert timeline.shared is widget.shared

    def listed() -> list[str]:
        return [timeline.prediction_box.itemText(i) for i in range(timeline.prediction_box.count())]

    assert listed() == ["(none)", "b_older", "demo_model"]
    assert timeline.prediction_box.currentText() == "demo_model"  # the most recent model shows at once
    assert timeline.canvas.predictions.shape == (N_FRAMES, 2)
    store.write_array("predictions/later/labels", predicted)  # e.g. the Infer dock, after the timeline opened
    timeline.prediction_box.refresh()  # what opening the list does
    assert listed() == ["(none)", "b_older", "demo_model", "later"]
    assert timeline.prediction_box.currentText() == "demo_model"
    timeline.canvas.resize(600, timeline.canvas.height())
    image = timeline.canvas.grab().toImage()
    y, height = timeline.canvas.rows().lane_span(0, "predictions")
    x = int(timeline.canvas.axis().frame_to_x(12))
    assert image.pixelColor(x, int(y + height / 2)).name() == widget.model.classes.by_name("groom").color


def test_edits_are_never_lost_when_another_program_saved(qtbot, labelling, tmp_path):
    from napari_sbl.behavior.annotation_store import AnnotationSession

    viewer, widget, store = labelling
    qtbot.waitUntil(lambda: not widget.shared.session.dirty, timeout=5000)
    other = AnnotationSession.open(store)  # e.g. `napari-sbl labels --import` while napari is open
    other.model.label_range(2, 0, 3, other.model.classes.by_name("groom").id)
    other.save()
    widget.model.label_range(1, 30, 35, widget.model.classes.by_name("rear").id)
    qtbot.waitUntil(lambda: "not saved" in widget.status.text(), timeout=5000)
    assert "saved by another program" in widget.status.text()
    assert [(s.animal_id, s.start_frame) for s in load_model(store)[0].segments()] == [(2, 0)]
    assert widget.shared.session.dirty  # the edit is still in memory, to export
    widget.export_annotations(tmp_path / "mine.csv")
    widget.reload(confirmed=True)
    widget.import_annotations(tmp_path / "mine.csv")
    qtbot.waitUntil(lambda: len(load_model(store)[0].segments()) == 2, timeout=5000)


def test_candidates_are_accepted_into_the_truth_or_rejected(labelling):
    from napari_sbl.behavior.annotations import Candidate

    viewer, widget, store = labelling
    rear = widget.model.classes.by_name("rear").id
    widget.model.set_candidates([Candidate(1, 20, 30, rear, "rear", "clusters/test"),
                                 Candidate(2, 5, 9, None, "cluster 7", "clusters/test")])
    assert widget.candidate_list.count() == 2
    widget.candidate_list.setCurrentRow(0)
    widget.go_to_candidate()
    assert widget.shared.selection == (20, 30) and int(viewer.dims.current_step[0]) == 20
    widget.accept_candidate()
    assert [(s.animal_id, s.start_frame, s.stop_frame, s.class_id) for s in widget.model.segments()] == [
        (1, 20, 30, rear)]
    assert widget.candidate_list.count() == 1
    widget.candidate_list.setCurrentRow(0)
    widget.reject_candidate()
    assert widget.candidate_list.count() == 0 and len(widget.model.segments()) == 1


def test_dock_opened_before_the_video_attaches_when_it_arrives(make_napari_viewer, tracked_video):
    from napari_sbl.widgets.labels import LabelsWidget

    viewer = make_napari_viewer()
    widget = LabelsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    QTest.keyClick(viewer.window._qt_viewer, Qt.Key.Key_1)
    assert "open a video first" in widget.status.text()
    viewer.open(str(tracked_video), plugin="napari-sbl")
    assert widget.shared is not None and widget.timeline is not None
    assert widget.model.animal_ids == (1, 2)
    widget.release()
