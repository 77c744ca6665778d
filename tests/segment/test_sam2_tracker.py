"""The SAM2 tracker on CPU with a shrunken, randomly initialised SAM2.1 (spec §9).

Random weights give arbitrary masks, so these tests check what does not depend on them: every frame
comes out exactly once with the right shape and ids, both directions run, the memory SAM2 holds
stays bounded over hundreds of frames, our loop reproduces SAM2's own propagation, cancelling
stops early, and missing weights give a helpful error. Arbitrary masks also drift all the time,
which exercises drift recovery: re-prompts happen, are recorded, and keep the state bounded.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sbl.errors import Cancelled, PromptError, WeightsMissingError  # noqa: E402
from napari_sbl.progress import Reporter  # noqa: E402
from napari_sbl.segment import sam2_frames  # noqa: E402
from napari_sbl.segment.backends import TrackParams, make_tracker  # noqa: E402
from napari_sbl.segment.drift import REASONS, DriftParams, Recovery, recovery_counts  # noqa: E402
from napari_sbl.segment.prompts import AnimalPrompt, FramePrompts  # noqa: E402
from napari_sbl.segment.sam2_frames import LazySam2Images, labels_from_logits, normalise_frames  # noqa: E402
from napari_sbl.segment.sam2_memory import GROUP_OUTPUTS_KEY, MemoryWindow, held_frames  # noqa: E402
from napari_sbl.segment.sam2_propagation import TrackRun  # noqa: E402
from napari_sbl.segment.sam2_recovery import RecoveryFrames, finish_reprompts, regroup, reprompt, revert  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Params, Sam2TrackedFrame, Sam2Tracker, TrackStats  # noqa: E402
from napari_sbl.segment.tracker import Tracker  # noqa: E402
from napari_sbl.weights import load_manifest  # noqa: E402

from ..conftest import REPO, real_video  # noqa: E402
from .sam2_helpers import (  # noqa: E402
    ENCODER_BATCH,
    HEIGHT,
    LRU,
    N_FRAMES,
    READ_AHEAD,
    WIDTH,
    BlobVideo,
    clicks,
    tiny_params,
    upstream_logits,
)

POINTER_WINDOW, MASKMEM_WINDOW = 15, 6  # SAM2.1: max_obj_ptrs_in_encoder - 1, num_maskmem - 1
OFF = DriftParams(recover=False)
EAGER = DriftParams(  # re-prompts at the slightest doubt, so random weights trigger every kind of recovery
    jump_body_lengths=0.5, area_ratio=1.5, empty_stretch_frames=1, cooldown_frames=2, bank_quality=0.0,
    max_recovery_cond_frames=1, max_recovery_cond_age=4,
)


@pytest.fixture(scope="module")
def video() -> BlobVideo:
    return BlobVideo()


@pytest.fixture(scope="module")
def tracker() -> Sam2Tracker:
    return Sam2Tracker(tiny_params())


# ---------------------------------------------------------------------------- whole runs
def test_tracks_every_frame_once_both_ways_with_bounded_memory(tracker, video):
    assert isinstance(tracker, Tracker)
    reporter = Reporter()
    order, state_bytes = [], []
    for tracked in tracker.track(video, [clicks(video, 120)], 0, N_FRAMES, reporter):
        order.append(tracked.frame_index)
        assert tracked.labels.dtype == np.uint16 and tracked.labels.shape == (HEIGHT, WIDTH)
        assert set(np.unique(tracked.labels)) <= {0, 1, 2}
        assert isinstance(tracked, Sam2TrackedFrame) and set(tracked.quality) == {1, 2}
        assert all(0.0 <= q <= 1.0 for q in tracked.quality.values())
        present = {int(i) for i in np.unique(tracked.labels) if i}
        assert {i for i, q in tracked.quality.items() if q > 0} == present  # 0 exactly where absent
        held = held_frames(tracker.current_state)
        assert held.cond_outputs <= 1 + DriftParams().max_recovery_cond_frames
        assert held.non_cond_outputs <= 2 * POINTER_WINDOW  # own window + what the backward pass starts from
        assert held.maskmem_outputs <= 2 * MASKMEM_WINDOW
        assert held.frames_tracked <= 2 * POINTER_WINDOW + 1 + DriftParams().max_recovery_cond_frames
        assert held.cached_features <= ENCODER_BATCH
        assert tracker.current_images.held_frames <= LRU + READ_AHEAD
        state_bytes.append(held.tensor_bytes)

    assert order == list(range(120, N_FRAMES)) + list(range(119, -1, -1))
    stats = tracker.last_stats
    assert (stats.frames_forward, stats.frames_backward, stats.frames_yielded) == (120, 120, 240)
    assert stats.peak_lru_frames <= LRU and stats.peak_buffered_frames <= READ_AHEAD
    assert stats.encoder_batches == pytest.approx(239 / ENCODER_BATCH, abs=2)
    assert reporter.done == reporter.total == N_FRAMES
    assert video.most_readers == 1
    # flat: after the first 40 frames the state never grows, whatever the length
    assert max(state_bytes[40:]) <= 1.05 * max(state_bytes[:40])
    assert tracker.current_state is None


def test_recovery_reprompts_drifting_animals_and_keeps_conditioning_frames_bounded(video):
    tracker = Sam2Tracker(tiny_params(drift=EAGER))
    order, state_bytes, batched_after_recovery = [], [], 0
    for tracked in tracker.track(video, [clicks(video, 120)], 0, N_FRAMES, Reporter()):
        order.append(tracked.frame_index)
        assert set(tracked.quality) == {1, 2} and all(0.0 <= q <= 1.0 for q in tracked.quality.values())
        state = tracker.current_state
        held = held_frames(state)
        assert held.cond_outputs <= 1 + EAGER.max_recovery_cond_frames  # the click + the newest recovery
        assert held.non_cond_outputs <= 2 * POINTER_WINDOW and held.maskmem_outputs <= 2 * MASKMEM_WINDOW
        assert held.frames_tracked <= 2 * POINTER_WINDOW + 1 + EAGER.max_recovery_cond_frames
        assert all(not inputs for obj, inputs in state["mask_inputs_per_obj"].items())  # 4 MiB each at S=1024
        for record in tracker.last_stats.recoveries:
            cond_frames = state["output_dict_per_obj"][state["obj_id_to_idx"][record.animal_id]]["cond_frame_outputs"]
            if record.frame_index == tracked.frame_index and record.accepted:
                assert record.frame_index in cond_frames  # a real SAM2 conditioning frame now
                assert tracked.quality[record.animal_id] <= EAGER.recovered_quality  # listed for review
            if abs(tracked.frame_index - record.frame_index) > EAGER.max_recovery_cond_age + 1:  # +1: one frame late
                assert record.frame_index not in cond_frames  # demoted once old
        if any(r.accepted for r in tracker.last_stats.recoveries) and state[GROUP_OUTPUTS_KEY]:
            batched_after_recovery += 1  # the recovered animal joined its batch again
        state_bytes.append(held.tensor_bytes)

    assert order == list(range(120, N_FRAMES)) + list(range(119, -1, -1))
    stats = tracker.last_stats
    records = stats.recoveries
    kept = [r for r in records if r.accepted]
    assert {r.prompt for r in records} == {"box", "mask"} and len(kept) >= 5
    assert {r.reason for r in records} <= set(REASONS) and any(not r.accepted for r in records)
    assert all(r.quality_after > r.quality_before for r in kept)
    assert len({(r.frame_index, r.animal_id) for r in records}) == len(records)  # once per frame and animal
    for animal_id in (1, 2):
        for in_pass in (lambda f: f >= 120, lambda f: f < 120):
            frames = sorted(r.frame_index for r in records if r.animal_id == animal_id and in_pass(r.frame_index))
            assert all(b - a > EAGER.cooldown_frames for a, b in itertools.pairwise(frames))
    assert stats.peak_recovery_cond_frames == EAGER.max_recovery_cond_frames and batched_after_recovery > 10
    assert max(state_bytes[40:]) <= 1.05 * max(state_bytes[:40])
    description = tracker.describe()
    assert description["recoveries"] == recovery_counts(records) and description["drift"]["cooldown_frames"] == 2


def test_reprompt_with_a_mask_makes_it_a_conditioning_frame_and_can_be_undone(video):
    """SAM2.1 takes a mask prompt as the frame's output: the re-seeded animal is exactly there, its
    batch is split off with its history, and demoting the frame lets the batch form again."""
    tracker = Sam2Tracker(tiny_params(drift=OFF))
    run = TrackRun(tracker.load(), tracker.params, video, TrackStats())
    try:
        run.add_prompts([clicks(video, 10)])
        with run.compute():
            for frame_index in (10, 11, 12):
                run.track_frame(frame_index, reverse=False)
        state, per_obj = run.state, run.state["output_dict_per_obj"]
        assert [g.obj_indices for g in run.groups] == [[0, 1]]  # prompted together: one batch
        tracked = per_obj[1]["non_cond_frame_outputs"][12]
        yy, xx = np.mgrid[:HEIGHT, :WIDTH]
        disc = (xx - 60) ** 2 + (yy - 30) ** 2 < 15**2
        with run.compute():
            run.features.ensure(12)
            replaced = reprompt(run.predictor, state, 12, Recovery(2, "reseed", mask=disc))
            logits = finish_reprompts(run.predictor, state, 12, False, [replaced.obj_idx])
        labels = labels_from_logits(logits[1], torch.tensor([2], dtype=torch.uint8), HEIGHT, WIDTH).numpy()
        assert np.sum((labels == 2) & disc) / np.sum((labels == 2) | disc) > 0.8
        assert 12 in per_obj[1]["cond_frame_outputs"] and 12 not in per_obj[1]["non_cond_frame_outputs"]
        assert not state["mask_inputs_per_obj"][1] and state["frames_tracked_per_obj"][1][12] == {"reverse": False}
        assert 12 not in per_obj[0]["cond_frame_outputs"]  # the other animal is untouched

        run.groups = regroup(state, batch_animals=True)
        assert sorted(g.obj_indices for g in run.groups) == [[0], [1]] and state[GROUP_OUTPUTS_KEY] == {}
        assert {10, 11} <= set(per_obj[0]["non_cond_frame_outputs"]) | set(per_obj[0]["cond_frame_outputs"])
        with run.compute():
            run.track_frame(13, reverse=False)  # tracks on from the re-seeded memory

        revert(state, replaced)
        assert 12 not in per_obj[1]["cond_frame_outputs"] and per_obj[1]["non_cond_frame_outputs"][12] is tracked
        frames = RecoveryFrames()
        frames.add(0, 13)
        per_obj[0]["cond_frame_outputs"][13] = per_obj[0]["non_cond_frame_outputs"].pop(13)
        assert frames.demote_beyond(state, 1) is False and frames.demote_older_than(state, 15, 2) is False
        assert frames.demote_older_than(state, 16, 2) is True and frames.most_held == 0
        assert 13 in per_obj[0]["non_cond_frame_outputs"] and 13 not in per_obj[0]["cond_frame_outputs"]
        run.groups = regroup(state, batch_animals=True)
        assert [g.obj_indices for g in run.groups] == [[0, 1]]  # same prompt frames again: one batch
        batch = run.groups[0].outputs["non_cond_frame_outputs"]
        assert {11, 12, 13} <= set(batch) and batch[13]["obj_ptr"].shape[0] == 2
        with run.compute():
            assert run.track_frame(14, reverse=False).download.result().labels.shape == (HEIGHT, WIDTH)
    finally:
        run.close()


def test_recovery_settings_pass_through_track_params():
    """The CLI and the widget build trackers from TrackParams; drift settings ride in ``extra``."""
    tracker = make_tracker(TrackParams(backend="sam2", weights="random", extra={"drift": {"recover": False}}))
    assert tracker.params.drift == DriftParams(recover=False)
    assert tracker.describe()["drift"]["recover"] is False and "recoveries" not in tracker.describe()
    assert make_tracker(TrackParams(backend="sam2")).params.drift.recover
    with pytest.raises(ValueError, match="area_ratio"):
        Sam2Params(drift={"area_ratio": 1.0})


@pytest.mark.parametrize("batch_animals", [False, True])
def test_matches_sam2_propagation(monkeypatch, batch_animals):
    """With recovery off our loop is SAM2's own propagation; frames are still scored."""
    video = BlobVideo(40)
    tracker = Sam2Tracker(tiny_params(batch_animals=batch_animals, drift=OFF))
    ours = {}

    def keep_logits(logits, label_of_row, height, width):
        resized = torch.nn.functional.interpolate(
            logits.float(), size=(height, width), mode="bilinear", align_corners=False
        )
        ours[len(ours)] = resized.clone()
        return labels_from_logits(logits, label_of_row, height, width)

    monkeypatch.setattr(sam2_frames, "labels_from_logits", keep_logits)
    frames = list(tracker.track(video, [clicks(video, 20)], 0, 40, Reporter()))
    assert all(set(tracked.quality) == {1, 2} for tracked in frames)
    assert tracker.last_stats.recoveries == [] and tracker.describe()["recoveries"]["attempted"] == 0
    order = [tracked.frame_index for tracked in frames]
    ours = {frame_index: ours[n] for n, frame_index in enumerate(order)}
    reference = upstream_logits(tracker.load(), video, clicks(video, 20))
    for frame_index in range(40):
        if batch_animals:  # one batched matmul rounds differently in bf16 than two single ones
            scale = float(reference[frame_index].abs().max())
            assert torch.allclose(ours[frame_index], reference[frame_index], atol=0.05 * scale + 1e-3)
        else:  # same arithmetic, same order: pruning, lazy frames and encoder batching change nothing
            assert torch.equal(ours[frame_index], reference[frame_index]), frame_index


def test_correction_on_later_frame_keeps_both_animals(tracker, video):
    prompts = [clicks(video, 40), clicks(video, 70, ids=(2,))]
    order = []
    for tracked in tracker.track(video, prompts, 70, 100, Reporter()):
        order.append(tracked.frame_index)
        state = tracker.current_state
        assert state["obj_ids"] == [1, 2]
        for obj_idx in (0, 1):
            assert tracked.frame_index in state["frames_tracked_per_obj"][obj_idx]
            outputs = state["output_dict_per_obj"][obj_idx]
            held = {**outputs["cond_frame_outputs"], **outputs["non_cond_frame_outputs"]}
            assert tracked.frame_index in held  # delivered one frame late, still in the window
        assert set(np.unique(tracked.labels)) <= {0, 1, 2}
        assert state[GROUP_OUTPUTS_KEY] == {}  # prompted on different frames: tracked one at a time
    assert order == list(range(70, 100))
    stats = tracker.last_stats
    assert (stats.frames_forward, stats.frames_backward) == (60, 0)  # 40..69 seed animal 1, not yielded
    assert stats.animal_ids == [1, 2]


def test_cancel_stops_early(tracker, video):
    reporter = Reporter()
    reporter.listener = lambda done, total, message: reporter.cancel() if done >= 10 else None
    received = []
    with pytest.raises(Cancelled):
        for tracked in tracker.track(video, [clicks(video, 120)], 0, N_FRAMES, reporter):
            received.append(tracked.frame_index)
    assert len(received) < 12
    assert tracker.current_state is None
    assert not [t for t in threading.enumerate() if t.name == "sam2-frame-read-ahead"]


def test_tracks_a_real_video_through_the_video_reader():
    from napari_sbl.io.video import VideoReader

    with VideoReader(real_video("flies_pair_sleap.mp4")) as reader:
        prompts = [FramePrompts(20, (AnimalPrompt(1, np.array([[150.0, 190.0]]), np.array([1], np.int8)),))]
        tracked = list(Sam2Tracker(tiny_params()).track(reader, prompts, 0, 40, Reporter()))
    assert sorted(t.frame_index for t in tracked) == list(range(40))
    assert all(t.labels.shape == (reader.height, reader.width) for t in tracked)


# ---------------------------------------------------------------------------- parts
def test_lazy_images_hold_at_most_lru_and_read_ahead(video):
    with LazySam2Images(video, 64, lru_frames=2, read_ahead_frames=3) as images:
        assert len(images) == N_FRAMES
        images.plan(range(30))
        for i in range(30):
            expected = normalise_frames(torch.from_numpy(video.frame(i))[None], 64)[0]
            assert torch.equal(images[i], expected)
            assert images.held_frames <= 2 + 3
        assert images.peak_lru_frames <= 2 and images.peak_buffered_frames <= 3
        assert images[200].shape == (3, 64, 64)  # outside the plan: decoded on the spot
        with pytest.raises(IndexError):
            images[N_FRAMES]


def test_labels_from_logits_thresholds_and_lets_the_highest_logit_win():
    logits = torch.tensor([[1.0, 3.0, -1.0, 0.0], [2.0, -5.0, -2.0, 0.0]]).reshape(2, 1, 1, 4)
    labels = labels_from_logits(logits, torch.tensor([7, 300], dtype=torch.int32), 1, 4)
    assert labels.tolist() == [[300, 7, 0, 0]]


def test_memory_window_mirrors_what_sam2_reads():
    window = MemoryWindow(num_frames=1000)
    forward = window.frames_read_by(50, reverse=False)
    assert forward.maskmem == set(range(44, 50)) and forward.pointer == set(range(35, 50))
    backward = window.frames_read_by(50, reverse=True)
    assert backward.maskmem == set(range(51, 57)) and backward.pointer == set(range(51, 66))
    assert window.frames_read_by(3, reverse=False).pointer == {0, 1, 2}


def test_bad_requests_fail_before_any_model_is_built(video):
    tracker = Sam2Tracker(tiny_params())
    with pytest.raises(PromptError, match="at least one prompt"):
        tracker.track(video, [], 0, 10, Reporter())
    outside = FramePrompts(5, (AnimalPrompt(1, np.array([[500.0, 10.0]]), np.array([1], np.int8)),))
    with pytest.raises(PromptError, match="outside"):
        tracker.track(video, [outside], 0, 10, Reporter())
    with pytest.raises(ValueError, match="frame range"):
        tracker.track(video, [clicks(video, 5)], 10, 5, Reporter())
    assert tracker._predictor is None


def test_missing_weights_say_what_to_download_and_where(cache_dir, monkeypatch, video):
    monkeypatch.delenv("NAPARI_SBL_SAM2_TINY", raising=False)
    tracker = Sam2Tracker(Sam2Params(model="tiny", download=False, device="cpu"))
    with pytest.raises(WeightsMissingError) as raised:
        tracker.track(video, [clicks(video, 5)], 0, 10, Reporter())
    message = str(raised.value)
    for expected in ("sam2.1_hiera_tiny.pt", "dl.fbaipublicfiles.com", str(cache_dir), "NAPARI_SBL_SAM2_TINY"):
        assert expected in message


def test_describe_names_model_weights_and_size(tracker):
    tracker.load()
    description = tracker.describe()
    assert description["backend"] == "sam2" and description["model"] == "sam2.1_hiera_tiny"
    assert description["weights"] == "random" and description["image_size"] == 64
    assert description["dtype"] == "bfloat16"


def test_manifest_lists_the_four_sam21_checkpoints():
    specs = load_manifest("sam2")
    assert sorted(specs) == [f"sam2.1_hiera_{m}" for m in ("base_plus", "large", "small", "tiny")]
    for spec in specs.values():
        assert len(spec.sha256) == 64 and spec.size_bytes > 100_000_000 and spec.licence == "Apache-2.0"
        assert spec.urls[0].startswith("https://dl.fbaipublicfiles.com/segment_anything_2/092824/")
        assert spec.urls[1].startswith("https://huggingface.co/facebook/sam2.1-hiera-")
    assert specs["sam2.1_hiera_large"].sha256.startswith("2647878d")
    packaged = json.loads((REPO / "src/napari_sbl/manifests/sam2.json").read_text())
    assert json.loads((REPO / "third_party/weights/sam2.json").read_text()) == packaged


def test_importing_the_tracker_does_not_import_torch():
    code = "import sys, napari_sbl.segment.sam2_tracker; print('torch' in sys.modules, 'sam2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
