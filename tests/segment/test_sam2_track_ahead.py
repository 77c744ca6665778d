"""Tracking the next frame before this frame's drift check: the same masks, quality and recoveries as
waiting for the check, whether the check re-prompts (the frame ahead is undone) or not."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sbl.progress import Reporter
from napari_sbl.segment.drift import DriftParams
from napari_sbl.segment.sam2_memory import forget_frame, untouched
from napari_sbl.segment.sam2_tracker import Sam2Tracker

from .sam2_helpers import BlobVideo, clicks, tiny_params

EAGER = DriftParams(  # re-prompts often with random weights: many frames ahead are undone
    jump_body_lengths=0.5, area_ratio=1.5, empty_stretch_frames=1, cooldown_frames=2, bank_quality=0.0,
    max_recovery_cond_frames=1, max_recovery_cond_age=4,
)
N_FRAMES, PROMPT_FRAME = 60, 30


def run(video, drift: DriftParams, ahead: bool) -> tuple[dict, object]:
    tracker = Sam2Tracker(tiny_params(drift=drift, track_ahead=ahead))
    frames = {t.frame_index: t for t in tracker.track(video, [clicks(video, PROMPT_FRAME)], 0, N_FRAMES, Reporter())}
    return frames, tracker.last_stats


@pytest.mark.parametrize("drift", [DriftParams(), EAGER], ids=["default", "eager"])
def test_tracking_ahead_gives_what_waiting_gives(drift):
    video = BlobVideo(N_FRAMES)
    waited, waited_stats = run(video, drift, ahead=False)
    ahead, ahead_stats = run(video, drift, ahead=True)
    assert sorted(ahead) == sorted(waited) == list(range(N_FRAMES))
    for frame_index, frame in waited.items():
        assert np.array_equal(ahead[frame_index].labels, frame.labels), frame_index
        assert ahead[frame_index].quality == frame.quality, frame_index
    assert ahead_stats.recoveries == waited_stats.recoveries
    assert waited_stats.frames_tracked_ahead == 0
    assert ahead_stats.frames_tracked_ahead > N_FRAMES // 2
    if drift is EAGER:
        assert len(ahead_stats.recoveries) >= 5
        assert 0 < ahead_stats.frames_undone <= len({r.frame_index for r in ahead_stats.recoveries})


def test_a_frame_tracked_ahead_is_forgotten_exactly():
    state = {
        "frames_tracked_per_obj": {0: {4: {"reverse": False}}, 1: {}},
        "output_dict_per_obj": {
            0: {"cond_frame_outputs": {2: "c"}, "non_cond_frame_outputs": {4: "a"}},
            1: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
        },
    }
    assert not untouched(state, 4) and not untouched(state, 2) and untouched(state, 5)
    state["output_dict_per_obj"][1]["non_cond_frame_outputs"][5] = "b"
    state["frames_tracked_per_obj"][1][5] = {"reverse": False}
    state["sbl_output_dict_per_group"] = {0: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {5: "ab"}}}
    forget_frame(state, 5)
    assert untouched(state, 5)
    assert state["output_dict_per_obj"][0]["non_cond_frame_outputs"] == {4: "a"}  # others untouched
