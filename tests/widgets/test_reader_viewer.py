"""Real napari viewers (under Xvfb): videos and stores open as layers; the Session dock reads them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.plugin.reader import get_reader
from napari_sbl.segment.prompts import prompts_from_json, prompts_to_json
from napari_sbl.store import layout

pytestmark = pytest.mark.gui


def make_store_with_tracks(tmp_path, flies_video):
    from napari_sbl.pipeline.session import open_session

    video_path = tmp_path / "flies.mp4"
    video_path.write_bytes(flies_video.read_bytes())
    video, store = open_session(video_path)
    masks = np.zeros((video.n_frames, video.height, video.width), dtype=np.uint16)
    masks[:, 10:20, 30:40] = 1
    prompts = prompts_from_json([{"frame": 5, "animals": [{"id": 1, "points": [[35, 15]], "labels": [1]}]}])
    store.write_array(layout.TRACKS_MASKS, masks, chunks=(1, video.height, video.width),
                      attrs={"backend": "test", "prompts": prompts_to_json(prompts), "complete": True})
    return video_path, store


def test_reader_claims_videos_and_stores_only(tmp_path, flies_video):
    assert get_reader(str(flies_video)) is not None
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None


def test_viewer_opens_video_lazily(make_napari_viewer, flies_video):
    viewer = make_napari_viewer()
    layers = viewer.open(str(flies_video), plugin="napari-sbl")
    layer = layers[0]
    assert layer.rgb and layer.data.shape == (1100, 384, 384, 3)
    assert type(layer.data).__module__.startswith("dask")
    viewer.dims.set_point(0, 733)
    from napari_sbl.io.video import VideoReader

    shown = np.asarray(layer._slice.image.raw)
    assert np.array_equal(shown, VideoReader(flies_video).frame(733))


def test_viewer_restores_session_layers(make_napari_viewer, tmp_path, flies_video):
    _video_path, store = make_store_with_tracks(tmp_path, flies_video)
    viewer = make_napari_viewer()
    viewer.open(str(store.path), plugin="napari-sbl")
    names = [layer.name for layer in viewer.layers]
    assert names == ["flies", "masks", "prompts"]
    masks = viewer.layers["masks"]
    assert masks.data.shape == (1100, 384, 384) and int(np.asarray(masks.data[3])[15, 35]) == 1
    prompts = viewer.layers["prompts"]
    assert prompts.data.tolist() == [[5.0, 15.0, 35.0]]
    assert prompts.features["animal_id"].tolist() == [1]


def test_session_widget_summarises_store(make_napari_viewer, tmp_path, flies_video):
    from napari_sbl.widgets.session import SessionWidget

    _video_path, store = make_store_with_tracks(tmp_path, flies_video)
    viewer = make_napari_viewer()
    viewer.open(str(store.path), plugin="napari-sbl")
    widget = SessionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    text = widget.summary.text()
    assert "1100 frames" in text and "tracks: test" in text and "embeddings: none yet" in text


def test_session_widget_creates_store_for_plain_video(make_napari_viewer, tmp_path, flies_video):
    from napari_sbl.widgets.session import SessionWidget

    video_path = tmp_path / "plain.mp4"
    video_path.write_bytes(flies_video.read_bytes())
    viewer = make_napari_viewer()
    viewer.open(str(video_path), plugin="napari-sbl")
    widget = SessionWidget(viewer)
    assert "no session store yet" in widget.summary.text() and widget.create_button.isEnabled()
    widget.create_button.click()
    assert (tmp_path / "plain.sbl.zarr" / "zarr.json").is_file()
    assert "tracks: none yet" in widget.summary.text()


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sbl", "flies_pair")
    assert viewer.layers[0].data.shape == (1100, 384, 384, 3)


def test_store_with_annotations_shows_behaviour_coloured_masks(make_napari_viewer, tmp_path, flies_video):
    _, store = make_store_with_tracks(tmp_path, flies_video)
    store.write_array(layout.TRACKS_ANIMAL_IDS, np.array([1], dtype=np.int32))
    classes = [{"id": 0, "name": "groom", "color": "#ff0000", "key": 1},
               {"id": 1, "name": "walk", "color": "#00ff00", "key": 2}]
    rows = {"animal_id": [1, 1], "start_frame": [10, 50], "stop_frame": [20, 60], "class_id": [1, 0]}
    for part, values in rows.items():
        store.write_array(f"annotations/{part}", np.array(values, dtype=np.int32), attrs={"classes": classes})
    viewer = make_napari_viewer()
    viewer.open(str(store.path), plugin="napari-sbl")
    layer = viewer.layers["behaviour (annotations)"]
    assert int(np.asarray(layer.data[15])[15, 35]) == 2  # walk = class index 1 → value 2
    assert int(np.asarray(layer.data[55])[15, 35]) == 1  # groom
    assert int(np.asarray(layer.data[30])[15, 35]) == 0  # unlabelled
    assert int(np.asarray(layer.data[15])[0, 0]) == 0  # background
