"""The tracking step: store contract, resume after a kill, re-track from a correction, new animals."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.errors import Cancelled, PromptError, StoreError
from napari_sbl.pipeline.session import open_session
from napari_sbl.progress import Reporter
from napari_sbl.segment.backends import TrackParams
from napari_sbl.segment.prompts import prompts_from_json
from napari_sbl.segment.run import retrack_from, track_video
from napari_sbl.store import layout
from tests.widgets.test_track_widget import two_blob_video

PROMPTS = [{"frame": 0, "animals": [{"id": 1, "points": [[20, 30]]}, {"id": 2, "points": [[100, 66]]}]}]


@pytest.fixture
def session(tmp_path):
    truth = two_blob_video(tmp_path / "blobs.mp4", n_frames=60)
    video, store = open_session(tmp_path / "blobs.mp4")
    return video, store, truth


def assert_identities(store, truth, frames):
    centroid = store.read(layout.TRACKS_CENTROID)
    for t in frames:
        for a in range(2):
            assert np.allclose(centroid[t, a], truth[t][a], atol=2.0), (t, a, centroid[t, a], truth[t][a])


def test_contract_arrays(session):
    video, store, truth = session
    summary = track_video(video, store, prompts_from_json(PROMPTS), TrackParams())
    assert summary.complete and summary.frames_tracked == 60 and summary.frames_present == {1: 60, 2: 60}
    masks = store.array(layout.TRACKS_MASKS)
    assert masks.shape == (60, 96, 128) and masks.dtype == np.uint16 and masks.chunks == (1, 96, 128)
    attrs = store.attrs(layout.TRACKS_MASKS)
    assert attrs["backend"] == "classical" and attrs["complete"] is True and attrs["frames_done"] == [[0, 60]]
    assert attrs["prompts"][0]["animals"][1]["id"] == 2 and "params" in attrs
    assert store.read(layout.TRACKS_ANIMAL_IDS).tolist() == [1, 2]
    for key, shape in ((layout.TRACKS_CENTROID, (60, 2, 2)), (layout.TRACKS_BBOX, (60, 2, 4)),
                       (layout.TRACKS_AREA, (60, 2)), (layout.TRACKS_QUALITY, (60, 2))):
        array = store.read(key)
        assert array.shape == shape and array.dtype == np.float32, key
    quality = store.read(layout.TRACKS_QUALITY)
    assert np.all((quality > 0) & (quality <= 1))
    area = store.read(layout.TRACKS_AREA)
    assert np.allclose(area, np.pi * 8**2, rtol=0.25)
    assert_identities(store, truth, range(0, 60, 7))


def test_killed_run_resumes_without_redoing_frames(session):
    video, store, truth = session
    reporter = Reporter(listener=lambda done, total, message: reporter.cancel() if done == 20 else None)
    with pytest.raises(Cancelled):
        track_video(video, store, prompts_from_json(PROMPTS), TrackParams(), reporter)
    done = store.attrs(layout.TRACKS_MASKS)["frames_done"]
    assert done[0][0] == 0 and 0 < done[0][1] < 60 and store.attrs(layout.TRACKS_MASKS)["complete"] is False
    summary = track_video(video, store, prompts_from_json(PROMPTS), TrackParams())
    assert summary.frames_tracked == 60 - done[0][1] and summary.complete
    assert_identities(store, truth, range(0, 60, 5))


def test_retrack_from_correction_keeps_other_animals(session):
    video, store, truth = session
    track_video(video, store, prompts_from_json(PROMPTS), TrackParams())
    correction = [*PROMPTS, {"frame": 30, "animals": [{"id": 2, "points": [truth[30][1].tolist()]}]}]
    summary = retrack_from(video, store, prompts_from_json(correction), 30, TrackParams())
    assert summary.frames_tracked == 30 and summary.complete
    assert_identities(store, truth, range(30, 60, 3))
    assert store.attrs(layout.TRACKS_MASKS)["prompts"][-1]["frame"] == 30


def test_new_animal_gets_a_new_column(session):
    video, store, truth = session
    one = [{"frame": 0, "animals": [{"id": 1, "points": [[20, 30]]}]}]
    track_video(video, store, prompts_from_json(one), TrackParams())
    assert store.read(layout.TRACKS_CENTROID).shape == (60, 1, 2)
    retrack_from(video, store, prompts_from_json(PROMPTS), 0, TrackParams())
    assert store.read(layout.TRACKS_ANIMAL_IDS).tolist() == [1, 2]
    assert store.read(layout.TRACKS_CENTROID).shape == (60, 2, 2)
    assert_identities(store, truth, range(0, 60, 9))


def test_bad_requests(session):
    video, store, truth = session
    with pytest.raises(PromptError, match="no prompts and no animal count"):
        track_video(video, store, [], TrackParams())
    with pytest.raises(PromptError, match="empty frame range"):
        track_video(video, store, prompts_from_json(PROMPTS), TrackParams(start=10, stop=5))
    track_video(video, store, prompts_from_json(PROMPTS), TrackParams(stop=10))
    with pytest.raises(StoreError, match="--overwrite"):
        track_video(video, store, prompts_from_json(PROMPTS), TrackParams(backend="sam2", weights="random"))
