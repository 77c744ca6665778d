"""Embed dock in a real viewer: preview registered clips, extract into the store, cancel and resume."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.store import layout
from tests.embed.test_motion import behaviour_video, tracked_session

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_embed_widget(make_napari_viewer, tmp_path):
    from napari_sbl.widgets.embed import EmbedWidget

    path = tmp_path / "animal.mp4"
    _, store, _ = tracked_session(path, ["run", "turn", "still", "groom"])
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-sbl")
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.clip_spin.setValue(8)
    widget.stride_spin.setValue(4)
    return viewer, widget, store


def test_form_becomes_params_and_videoprism_options_follow_the_encoder(viewer_with_embed_widget):
    _, widget, _ = viewer_with_embed_widget
    assert widget.video_box.currentText() == "animal" and not widget.model_box.isEnabled()
    widget.encoder_box.setCurrentText("videoprism")
    widget.model_box.setCurrentText("large")
    widget.background_box.setCurrentText("blur")
    widget.box_spin.setValue(120)
    widget.grey_check.setChecked(True)
    widget.flip_check.setChecked(True)
    params = widget.params()
    assert widget.model_box.isEnabled() and params.encoder == "videoprism" and params.videoprism.model == "large"
    assert params.registration.background == "blur" and params.registration.box_px == 120
    assert params.registration.grey and params.flip_average and params.clip_frames == 8 and params.stride == 4
    assert widget.params().registration.size_px is None  # 0 in the form = the encoder's own size


def test_preview_then_extract_fills_the_store(qtbot, viewer_with_embed_widget):
    _, widget, store = viewer_with_embed_widget
    widget.size_spin.setValue(48)
    widget.preview()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    montage = widget.preview_montage
    assert montage is not None and montage.ndim == 3 and montage.shape[0] >= 4 * 96
    assert not widget.preview_label.pixmap().isNull() and "animal 1" in widget.message.text()
    widget.extract()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    assert "embedded" in widget.message.text(), widget.job.status.text()
    clips = store.read(layout.embedding_key("motion", "clips"))
    assert clips.shape[1] == 74 and np.isfinite(clips).all()
    assert store.attrs(layout.embedding_key("motion", "clips"))["complete"] is True


def test_cancel_then_extract_resumes(qtbot, viewer_with_embed_widget):
    _, widget, store = viewer_with_embed_widget

    def cancel_early(done, total, message):
        if message.startswith("motion features") and done >= 2:
            widget.job.cancel()

    widget.job._bridge.progressed.connect(cancel_early)
    widget.extract()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    widget.job._bridge.progressed.disconnect(cancel_early)
    assert "cancelled" in widget.job.status.text()
    assert store.attrs(layout.embedding_key("motion", "clips"))["complete"] is False
    widget.extract()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    assert store.attrs(layout.embedding_key("motion", "clips"))["complete"] is True


def test_untracked_video_says_track_first(qtbot, make_napari_viewer, tmp_path):
    from napari_sbl.widgets.embed import EmbedWidget

    behaviour_video(tmp_path / "raw.mp4", ["still"])
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "raw.mp4"), plugin="napari-sbl")
    widget = EmbedWidget(viewer)
    widget.extract()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    assert "track the animals first" in widget.job.status.text()
    empty = EmbedWidget(make_napari_viewer())
    empty.extract()
    assert "open a video first" in empty.message.text()
