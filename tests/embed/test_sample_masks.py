"""Planning reads each sampled mask once: the bodies it measures inside the store's boxes equal whole-frame
measurements, stale boxes are caught, and the masks it keeps are the masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.embed.clips import load_tracks, track_geometry
from napari_sbl.embed.masks import BoxHints, measure_samples
from napari_sbl.embed.registration import mask_moments
from napari_sbl.progress import Reporter
from tests.embed.test_embed_step import make_session


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    video, store = make_session(tmp_path_factory.mktemp("masks"))
    return video, load_tracks(store, video.n_frames, video.height, video.width)


def assert_same_bodies(measured, expected):
    for got, want in zip(measured, expected, strict=True):
        for key in ("area", "centre", "axis", "major", "minor"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-9, equal_nan=True)


def test_boxes_from_the_store_give_whole_frame_measurements(tracked):
    video, tracks = tracked
    samples = np.arange(0, video.n_frames, 2)
    assert tracks.hints is not None and tracks.read.direct
    labels = [np.asarray(tracks.masks[int(i)]) for i in samples]
    expected = [mask_moments(image, tracks.animal_ids) for image in labels]
    for hints in (tracks.hints, None):
        measured, masks = measure_samples(tracks.labels, tracks.animal_ids, samples, hints, 2, Reporter())
        assert_same_bodies(measured, expected)
    for row in (0, 20, 30):  # animal 2 is absent at frame 40 (sample 20)
        for column, animal_id in enumerate(tracks.animal_ids):
            np.testing.assert_array_equal(masks.region(row, column, (0, 0, video.width, video.height)),
                                          labels[row] == animal_id)
            np.testing.assert_array_equal(masks.region(row, column, (50, 10, 100, 70)),
                                          labels[row][10:70, 50:100] == animal_id)
    geometry = track_geometry(labels, tracks.animal_ids, video.frame_times()[samples])
    assert len(masks.packed) == int(geometry.present.sum())  # a cut mask for every present animal, no more


def test_stale_boxes_are_not_trusted(tracked):
    video, tracks = tracked
    samples = np.arange(0, 24, 3)
    bbox, area = tracks.hints.bbox.copy(), tracks.hints.area.copy()
    bbox[3, 0] = (0, 0, 5, 5)  # a box that misses animal 1
    area[6, 1] = 0  # calls animal 2 absent where it is not
    stale = BoxHints(bbox, area)
    expected = [mask_moments(np.asarray(tracks.masks[int(i)]), tracks.animal_ids) for i in samples]
    measured, _ = measure_samples(tracks.labels, tracks.animal_ids, samples, stale, 1, Reporter())
    assert_same_bodies(measured, expected)
