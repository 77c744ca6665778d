"""Sample regions decoded in spans by several readers: the right pixels and masks, in the order blocks need
them, and a reader's failure reaches whoever waits instead of hanging the step."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sbl.embed.clips import EmbedParams, build_plan, load_tracks
from napari_sbl.embed.samples import SampleRegions, spans_of
from napari_sbl.errors import VideoError
from napari_sbl.progress import Reporter
from tests.embed.test_embed_step import make_session


def test_spans_start_at_keyframes_follow_first_use_and_break_at_gaps():
    rows = np.array([0, 1, 2, 3, 4, 5, 8, 9, 10])
    groups = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4])  # keyframe intervals
    first_use = np.full(11, -1)
    first_use[rows] = [1, 1, 2, 2, 2, 2, 0, 0, 1]  # a span is needed by its first-needed sample's block
    spans = spans_of(rows, first_use, groups, 2)
    assert [(block, part.tolist()) for block, part in spans] == [(0, [8, 9]), (1, [0, 1, 2]), (1, [10]),
                                                                 (2, [3, 4]), (2, [5])]


def planned(folder):
    video, store = make_session(folder)
    tracks = load_tracks(store, video.n_frames, video.height, video.width)
    plan, geometry = build_plan(video, tracks, EmbedParams(clip_frames=4, stride=4), Reporter())
    regions = np.zeros((len(plan.sample_frames), 2, 4), np.int64)
    regions[:, 0] = (10, 5, 90, 60)
    regions[::2, 1] = (40, 30, 128, 96)  # animal 2's region on every other sample only
    return video, tracks, plan, geometry, regions


def test_readers_return_each_samples_regions_and_masks(tmp_path):
    video, tracks, plan, geometry, regions = planned(tmp_path / "session")
    first_use = np.arange(len(plan.sample_frames)) // 5  # five samples per "block"
    samples = SampleRegions(video, tracks, plan, geometry.masks, regions, first_use, readers=3, ahead=1)
    try:
        samples.release(first_use.max())
        for row in range(len(plan.sample_frames)):
            frame = video.frame(int(plan.sample_frames[row]))
            labels = tracks.labels(int(plan.sample_frames[row]))
            for column in np.flatnonzero(regions[row, :, 2] > 0):
                x0, y0, x1, y1 = regions[row, column]
                part, origin = samples.region(row, column)
                assert origin == (x0, y0) and part.shape == (y1 - y0, x1 - x0, 4)
                assert np.abs(part[..., :3].astype(int) - frame[y0:y1, x0:x1]).max() <= 1
                np.testing.assert_array_equal(part[..., 3] == 255, labels[y0:y1, x0:x1] == column + 1)
    finally:
        samples.close()


def test_a_reader_failure_reaches_the_waiting_block(tmp_path):
    video, tracks, plan, geometry, regions = planned(tmp_path / "session")
    video.path.rename(video.path.with_suffix(".gone"))  # the readers open their own decoders: they fail
    first_use = np.zeros(len(plan.sample_frames), np.int64)
    samples = SampleRegions(video, tracks, plan, geometry.masks, regions, first_use, readers=2, ahead=1)
    try:
        samples.release(0)
        with pytest.raises(VideoError):
            samples.region(0, 0)
    finally:
        samples.close()
