"""The backward pass tracked beside the forward pass (sam2_lanes): the same frames, masks, quality and
recoveries as one pass after the other; errors, cancelling and early stops end its thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

import torch

from napari_sbl.errors import Cancelled
from napari_sbl.progress import Reporter
from napari_sbl.segment.drift import DriftParams
from napari_sbl.segment.sam2_lanes import SharedAttentionBackends, frames_before_fork
from napari_sbl.segment.sam2_memory import MemoryWindow, forked_state, plan_passes, prune_state
from napari_sbl.segment.sam2_propagation import TrackRun
from napari_sbl.segment.sam2_tracker import Sam2Tracker, TrackStats

from .sam2_helpers import BlobVideo, clicks, tiny_params

EAGER = DriftParams(  # re-prompts often with random weights, before and after the fork
    jump_body_lengths=0.5, area_ratio=1.5, empty_stretch_frames=1, cooldown_frames=2, bank_quality=0.0,
    max_recovery_cond_frames=1, max_recovery_cond_age=4,
)
N_FRAMES, PROMPT_FRAME = 64, 34
LANE_THREAD = "sam2-backward-pass"


def tracked(video, mode: str, **params) -> tuple[list, TrackStats]:
    tracker = Sam2Tracker(tiny_params(concurrent_passes=mode, **params))
    frames = list(tracker.track(video, [clicks(video, PROMPT_FRAME)], 0, N_FRAMES, Reporter()))
    return frames, tracker.last_stats


def lane_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LANE_THREAD]


@pytest.mark.parametrize("params", [{"drift": DriftParams(recover=False)}, {}, {"drift": EAGER}],
                         ids=["no-recovery", "default", "eager-recovery"])
def test_passes_side_by_side_give_what_one_after_the_other_gives(params):
    video = BlobVideo(N_FRAMES)
    after, after_stats = tracked(video, "off", **params)
    beside, beside_stats = tracked(video, "on", **params)
    assert sorted(f.frame_index for f in beside) == list(range(N_FRAMES))  # each frame once
    by_frame = {f.frame_index: f for f in after}
    for frame in beside:
        assert np.array_equal(frame.labels, by_frame[frame.frame_index].labels), frame.frame_index
        assert frame.quality == by_frame[frame.frame_index].quality, frame.frame_index
    assert beside_stats.recoveries == after_stats.recoveries
    assert (beside_stats.frames_forward, beside_stats.frames_backward) == (N_FRAMES - PROMPT_FRAME, PROMPT_FRAME)
    assert beside_stats.passes_beside and not after_stats.passes_beside
    if params.get("drift") is EAGER:
        assert {r.frame_index < PROMPT_FRAME for r in beside_stats.recoveries} == {True, False}  # both lanes
    assert not lane_threads()


def test_a_backward_pass_that_ends_first_hands_over_every_frame():
    """The lane's end, taken while the forward pass still runs, ends the track once the forward pass does."""
    video = BlobVideo(N_FRAMES)
    prompt = 16  # the backward pass: 16 frames from the fork on; the forward pass 33 more
    result: dict = {}

    def track() -> None:
        tracker = Sam2Tracker(tiny_params(concurrent_passes="on", drift=DriftParams(recover=False)))
        result["frames"] = [f.frame_index for f in tracker.track(video, [clicks(video, prompt)], 0, N_FRAMES,
                                                                   Reporter())]

    caller = threading.Thread(target=track, daemon=True)
    caller.start()
    caller.join(timeout=120)
    assert not caller.is_alive(), "the track never ended"
    assert sorted(result["frames"]) == list(range(N_FRAMES))


def test_the_backward_pass_forks_once_it_reads_nothing_more_of_the_forward_pass():
    window = MemoryWindow(num_maskmem=7, max_obj_ptrs=16, num_frames=200)
    assert frames_before_fork(plan_passes([100], 0, 200, window)[0]) == 15  # pointers of frames 100..114
    assert frames_before_fork(plan_passes([195], 0, 200, window)[0]) == 5  # the forward pass ends first
    no_pointers = MemoryWindow(num_maskmem=7, max_obj_ptrs=0, num_frames=200)
    assert frames_before_fork(plan_passes([100], 0, 200, no_pointers)[0]) == 6  # memories of 100..105


def test_a_forked_state_prunes_without_touching_the_original():
    outputs = {t: {"maskmem_features": torch.zeros(1), "obj_ptr": torch.ones(1)} for t in range(5)}
    state = {
        "output_dict_per_obj": {0: {"cond_frame_outputs": {0: outputs[0]},
                                    "non_cond_frame_outputs": {t: outputs[t] for t in range(1, 5)}}},
        "temp_output_dict_per_obj": {0: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}},
        "frames_tracked_per_obj": {0: {t: {"reverse": False} for t in range(5)}},
        "point_inputs_per_obj": {0: {0: {"point_coords": torch.zeros(1, 1, 2)}}}, "mask_inputs_per_obj": {0: {}},
        "obj_id_to_idx": {1: 0}, "obj_idx_to_id": {0: 1}, "obj_ids": [1], "constants": {},
    }
    fork = {**state, **forked_state(state)}
    window = MemoryWindow(num_maskmem=3, max_obj_ptrs=3, num_frames=5)
    prune_state(fork, window.frames_read_by(5, reverse=False))  # reads frames 3 and 4 only
    assert sorted(fork["output_dict_per_obj"][0]["non_cond_frame_outputs"]) == [3, 4]
    assert sorted(state["output_dict_per_obj"][0]["non_cond_frame_outputs"]) == [1, 2, 3, 4]
    assert sorted(state["frames_tracked_per_obj"][0]) == [0, 1, 2, 3, 4]
    assert fork["output_dict_per_obj"][0]["non_cond_frame_outputs"][3] is outputs[3]  # the same tensors


def test_an_error_in_the_backward_pass_reaches_the_caller(monkeypatch):
    video = BlobVideo(N_FRAMES)
    launch = TrackRun._launch

    def failing(run, frame_index, reverse, download=True):
        if reverse and frame_index == PROMPT_FRAME - 10:
            raise RuntimeError("the GPU fell over")
        return launch(run, frame_index, reverse, download)

    monkeypatch.setattr(TrackRun, "_launch", failing)
    tracker = Sam2Tracker(tiny_params(concurrent_passes="on"))
    seen = []
    with pytest.raises(RuntimeError, match="fell over"):
        for frame in tracker.track(video, [clicks(video, PROMPT_FRAME)], 0, N_FRAMES, Reporter()):
            seen.append(frame.frame_index)
    assert PROMPT_FRAME - 10 not in seen and not lane_threads()


def test_cancelling_or_stopping_early_ends_the_backward_lane():
    video = BlobVideo(N_FRAMES)
    reporter = Reporter()
    tracker = Sam2Tracker(tiny_params(concurrent_passes="on"))
    with pytest.raises(Cancelled):
        for frame in tracker.track(video, [clicks(video, PROMPT_FRAME)], 0, N_FRAMES, reporter):
            if frame.frame_index < PROMPT_FRAME:  # the backward lane runs
                reporter.cancel()
    assert not lane_threads()
    frames = tracker.track(video, [clicks(video, PROMPT_FRAME)], 0, N_FRAMES, Reporter())
    for frame in frames:
        if frame.frame_index < PROMPT_FRAME:
            break
    assert lane_threads()  # still running while the caller holds the generator
    frames.close()
    assert not lane_threads()


def test_progress_counts_both_lanes_on_the_callers_thread():
    video = BlobVideo(N_FRAMES)
    calls = []
    reporter = Reporter(listener=lambda done, total, message: calls.append((done, threading.current_thread())))
    tracker = Sam2Tracker(tiny_params(concurrent_passes="on"))
    list(tracker.track(video, [clicks(video, PROMPT_FRAME)], 0, N_FRAMES, reporter))
    assert reporter.done == N_FRAMES
    assert {thread for _, thread in calls} == {threading.current_thread()}


def test_shared_attention_backends_are_restored_by_the_last_run_out():
    from torch.nn.attention import SDPBackend

    before = torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()
    shared = SharedAttentionBackends([SDPBackend.MATH])
    first, second = shared.entered(), shared.entered()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the other run is still inside: its settings stay
    assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    second.__exit__(None, None, None)
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()) == before


def test_stats_of_the_backward_lane_add_up():
    mine = TrackStats(frames_forward=30, peak_non_cond_outputs=20, frames_yielded=30)
    other = TrackStats(frames_backward=34, peak_non_cond_outputs=22, frames_yielded=34)
    mine.absorb(other)
    assert (mine.frames_forward, mine.frames_backward, mine.frames_yielded) == (30, 34, 64)
    assert mine.peak_non_cond_outputs == 22
