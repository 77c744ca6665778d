"""Track animals dock in a real viewer: clicks become prompts, Track fills a Labels layer from the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.store import layout

pytestmark = pytest.mark.gui


def two_blob_video(path, n_frames=40, size=(96, 128)):
    """Two dark discs on a light floor moving right and left: ground truth known per frame."""
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    truth = []
    frames = []
    for t in range(n_frames):
        centres = [(20 + t, 30), (100 - t, 66)]
        frame = np.full((height, width, 3), 200, dtype=np.uint8)
        for cx, cy in centres:
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= 8**2] = 40
        frames.append(frame)
        truth.append(centres)
    write_video(path, frames, VideoWriteParams(fps=10, gop=10, crf=10))
    return np.array(truth, dtype=float)


@pytest.fixture
def viewer_with_track_widget(make_napari_viewer, tmp_path):
    from napari_sbl.widgets.track import TrackWidget

    truth = two_blob_video(tmp_path / "blobs.mp4")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "blobs.mp4"), plugin="napari-sbl")
    widget = TrackWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget, truth


def click(widget, frame, x, y, animal_id, positive=True):
    widget.animal_spin.setValue(animal_id)
    widget.negative_check.setChecked(not positive)
    points = widget.ensure_prompts_layer()
    points.add([frame, y, x])


def test_clicks_become_prompts_with_animal_features(viewer_with_track_widget):
    viewer, widget, truth = viewer_with_track_widget
    click(widget, 0, 20, 30, 1)
    click(widget, 0, 100, 66, 2)
    click(widget, 0, 60, 10, 2, positive=False)
    points = viewer.layers["prompts"]
    assert points.features["animal_id"].tolist() == [1, 2, 2]
    assert points.features["positive"].tolist() == [True, True, False]
    prompts = widget.prompts()
    assert len(prompts) == 1 and [a.animal_id for a in prompts[0].animals] == [1, 2]
    assert prompts[0].animals[1].labels.tolist() == [1, 0]


def test_track_fills_labels_layer_and_store(qtbot, viewer_with_track_widget, tmp_path):
    viewer, widget, truth = viewer_with_track_widget
    click(widget, 0, 20, 30, 1)
    click(widget, 0, 100, 66, 2)
    widget.track()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    assert "tracked 40 frames" in widget.message.text()
    masks = viewer.layers["masks"]
    assert masks.data.shape == (40, 96, 128)
    for t in (0, 17, 39):
        labels = np.asarray(masks.data[t])
        for animal_id, (cx, cy) in zip((1, 2), truth[t], strict=True):
            assert labels[int(cy), int(cx)] == animal_id, (t, animal_id)
    widget.export_prompts(tmp_path / "exported.json")
    exported = json.loads((tmp_path / "exported.json").read_text())
    assert exported[0]["frame"] == 0 and [a["id"] for a in exported[0]["animals"]] == [1, 2]


def test_preview_shows_current_frame(qtbot, viewer_with_track_widget):
    viewer, widget, truth = viewer_with_track_widget
    viewer.dims.set_current_step(0, 12)
    click(widget, 12, *truth[12][0], 1)
    widget.preview()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    preview = np.asarray(viewer.layers["mask preview"].data)
    cx, cy = truth[12][0]
    assert preview[int(cy), int(cx)] == 1 and preview.max() == 1


def test_cancel_keeps_frames_already_written(qtbot, viewer_with_track_widget):
    viewer, widget, truth = viewer_with_track_widget
    click(widget, 0, 20, 30, 1)
    click(widget, 0, 100, 66, 2)
    cancelled = []

    def cancel_after_some(done, total, message):
        if done == 5 and not cancelled:
            cancelled.append(done)
            widget.job.cancel()

    widget.job._bridge.progressed.connect(cancel_after_some)
    widget.track()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    assert "cancelled" in widget.job.status.text()
    _, store = widget.session()
    done = store.attrs(layout.TRACKS_MASKS)["frames_done"]
    assert done and done[0][0] == 0 and 0 < done[0][1] < 40
    widget.track()  # resumes: only the missing frames are tracked
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    assert store.attrs(layout.TRACKS_MASKS)["frames_done"] == [[0, 40]]


def test_import_prompts_fills_points(viewer_with_track_widget, tmp_path):
    viewer, widget, truth = viewer_with_track_widget
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"frame": 3, "animals": [{"id": 4, "points": [[23, 30]], "labels": [1]}]}]))
    widget.import_prompts(path)
    points = viewer.layers["prompts"]
    assert points.data.tolist() == [[3.0, 30.0, 23.0]] and points.features["animal_id"].tolist() == [4]


def test_sam2_without_weights_says_where_to_put_them(qtbot, viewer_with_track_widget, cache_dir, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    viewer, widget, truth = viewer_with_track_widget
    widget.backend_box.setCurrentText("sam2")
    widget.compile_check.setChecked(True)
    assert widget.params().extra == {"compile_image_encoder": True}
    widget.compile_check.setChecked(False)
    widget.drift_check.setChecked(False)
    assert widget.params().extra == {"drift": {"recover": False}}
    click(widget, 0, 20, 30, 1)
    widget.track()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=120_000)
    status = widget.job.status.text()
    assert "sam2.1_hiera_tiny.pt" in status and "--checkpoint" in status, status
