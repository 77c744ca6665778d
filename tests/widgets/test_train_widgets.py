"""Train, Infer and Review docks in a real viewer on a real (small) video whose store holds embeddings and labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.store import layout
from tests.behavior.test_model_synthetic import make_behavior_store

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def session(tmp_path):
    """A 400-frame video, its store with motion embeddings, labels of every bout, and masks of two animals."""
    from napari_sbl.pipeline.session import open_session

    frames = [np.full((48, 48, 3), 30 + (i % 50), dtype=np.uint8) for i in range(400)]
    video_path = write_video(tmp_path / "arena.mp4", frames, VideoWriteParams(fps=25, gop=25, crf=20))
    video, store = open_session(video_path)
    _, truth = make_behavior_store(tmp_path, "arena", seed=7, store=store)
    masks = np.zeros((400, 48, 48), dtype=np.uint16)
    masks[:, 4:20, 4:20] = 1
    masks[:, 28:44, 28:44] = 2
    store.write_array(layout.TRACKS_MASKS, masks, chunks=(1, 48, 48), attrs={"backend": "test", "complete": True})
    store.write_array(layout.TRACKS_ANIMAL_IDS, np.array([1, 2], dtype=np.int32))
    return video_path, store, truth


@pytest.fixture
def viewer(make_napari_viewer, session):
    viewer = make_napari_viewer()
    viewer.open(str(session[0]), plugin="napari-sbl")
    return viewer


def quick_model(store, folder):
    from napari_sbl.behavior.profiles import load_profile
    from napari_sbl.behavior.train import train_behavior_model

    params = replace(load_profile("quick"), epochs=3, device="cpu")
    return train_behavior_model([store], folder / "arena-model", params).model_dir


def test_train_dock_trains_the_quick_profile_and_plots_progress(qtbot, viewer, session, tmp_path):
    from napari_sbl.widgets.train import TrainWidget

    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.store_paths() == [str(session[1].path)]  # found through the open video layer
    assert widget.embedding_box.currentText() == "motion"
    widget.profile_box.setCurrentText("quick")
    widget.epochs_spin.setValue(3)
    widget.out_edit.setText(str(tmp_path / "dock-model"))
    widget.train()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=120_000)
    assert "model in" in widget.message.text(), widget.message.text()
    assert [r.epoch for r in widget.plot.records] == [1, 2, 3]
    loss_line = widget.plot.loss_axes.get_lines()[0]
    f1_line = widget.plot.f1_axes.get_lines()[0]
    assert len(loss_line.get_xdata()) == 3 and len(f1_line.get_ydata()) == 3
    assert (tmp_path / "dock-model" / "model.json").is_file()


def test_infer_dock_writes_predictions_and_redecodes_on_slider_change(qtbot, viewer, session, tmp_path):
    from napari_sbl.widgets.infer import InferWidget

    _, store, _ = session
    widget = InferWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_edit.setText(str(quick_model(store, tmp_path)))
    widget.preset_box.setCurrentText("none")
    widget.run()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=120_000)
    assert store.has("predictions/arena-model/probs"), widget.message.text()
    assert store.read("predictions/arena-model/probs").shape == (400, 2, 3)
    before = store.read("predictions/arena-model/labels")
    assert store.attrs("predictions/arena-model/labels")["decoding"]["preset"] == "none"
    # masks take the colour of each animal's predicted class on the current frame
    viewer.dims.set_current_step(0, 200)
    classes = store.attrs("predictions/arena-model/labels")["classes"]
    colormap = viewer.layers["masks"].colormap
    for column, animal_id in enumerate((1, 2)):
        expected = classes[int(before[200, column])]["color"] if before[200, column] >= 0 else "#808080"
        np.testing.assert_allclose(colormap.map(animal_id)[:3], _rgb(expected), atol=1e-3)
    widget.sliders["min length"].setValue(60)  # no model run: re-decoded from the stored probabilities
    qtbot.waitUntil(lambda: store.attrs("predictions/arena-model/labels")["decoding"]["min_segment_frames"] == 60,
                    timeout=10_000)
    after = store.read("predictions/arena-model/labels")
    assert widget.preset_box.currentText() == "custom"
    runs_after = [np.diff(after[:, c]).astype(bool).sum() for c in range(2)]
    runs_before = [np.diff(before[:, c]).astype(bool).sum() for c in range(2)]
    assert sum(runs_after) < sum(runs_before)
    for column in range(2):  # every remaining segment is at least 60 frames, except where data ends
        change = np.flatnonzero(np.diff(after[:, column])) + 1
        lengths = np.diff(np.concatenate([[0], change, [400]]))
        assert (lengths[1:-1] >= 60).all()


def _rgb(color: str) -> list[float]:
    return [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]


def test_review_dock_plays_candidates_and_writes_answers(qtbot, viewer, session, tmp_path):
    from napari_sbl.behavior.infer import infer_store
    from napari_sbl.behavior.review import read_candidates
    from napari_sbl.widgets.review import ReviewWidget

    _, store, _ = session
    keep = store.read("annotations/animal_id") == 1
    for part in ("animal_id", "start_frame", "stop_frame", "class_id"):  # keep the labels of animal 1 only
        rows = store.read(f"annotations/{part}")
        store.write_array(f"annotations/{part}", rows[keep], attrs=store.attrs(f"annotations/{part}"))
    infer_store(quick_model(store, tmp_path), store)
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.refresh_layers()
    assert widget.model_box.currentText() == "arena-model"
    widget.count_spin.setValue(6)
    widget.propose()
    assert widget.list.count() == 6 and "review round 1" in widget.message.text()
    widget.list.setCurrentRow(2)
    candidate = widget.candidates[2]
    assert int(viewer.dims.current_step[0]) == candidate.start_frame
    widget.toggle_play()
    qtbot.waitUntil(lambda: int(viewer.dims.current_step[0]) > candidate.start_frame, timeout=5_000)
    widget.toggle_play()
    qtbot.keyClick(widget, "s")
    assert read_candidates(store)[0][2].decision == "skipped" and widget.list.currentRow() == 3
    chosen = widget.candidates[3]
    widget.answer("relabel", "groom")
    rows = np.stack([store.read(f"annotations/{p}") for p in ("animal_id", "start_frame", "stop_frame", "class_id")])
    inside = (rows[0] == chosen.animal_id) & (rows[1] <= chosen.start_frame) & (rows[2] >= chosen.stop_frame)
    assert (rows[3][inside] == 2).any()  # groom's id
    assert "[relabelled]" in widget.list.item(3).text()
