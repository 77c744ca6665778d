"""The per-frame loop of one SAM2 track: propagate, score, recover, prune, deliver.

Each frame, every group of animals is tracked from SAM2's memory (animals prompted on the same
frames as one batch), the logits are merged into one label image, and the memory bank is cut to
what the next frame reads (:mod:`.sam2_memory`). A :class:`~.drift.DriftMonitor` scores every
animal's mask against a motion prediction; with recovery on, a drifted or lost animal is prompted
again on the same frame (:mod:`.sam2_recovery`) before the tracker moves on, so the next frame
already tracks from the corrected memory. With recovery off, labels go to the host while the next
frame is computed and are scored on the way out.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend

from napari_sbl.progress import Reporter
from napari_sbl.segment.drift import DriftMonitor, Recovery, RecoveryRecord, observations_from
from napari_sbl.segment.prompts import FramePrompts, animal_ids
from napari_sbl.segment.sam2_encoder_steps import ATTRIBUTE as ENCODER_STEPS
from napari_sbl.segment.sam2_features import BackboneFeatureCache
from napari_sbl.segment.sam2_frames import LabelDownload, LazySam2Images
from napari_sbl.segment.sam2_lanes import SharedAttentionBackends, lane_streams
from napari_sbl.segment.sam2_memory import (
    FramesRead,
    MemoryWindow,
    TrackPass,
    forget_frame,
    forked_groups,
    forked_state,
    group_animals,
    held_frames,
    mark_tracked,
    new_inference_state,
    prune_state,
    record_output,
    shared_tensors,
    untouched,
)
from napari_sbl.segment.sam2_recovery import RecoveryFrames, finish_reprompts, regroup, reprompt, revert
from napari_sbl.segment.sam2_tracker import ATTENTION_BACKENDS, Sam2Params, Sam2TrackedFrame, TrackStats
from napari_sbl.segment.tracker import FrameSource, TrackedFrame


@dataclass(frozen=True)
class PendingFrame:
    """A tracked frame on its way out: labels still downloading (scored on delivery), or done."""

    frame_index: int
    prompted: frozenset[int]
    download: LabelDownload | None = None
    frame: Sam2TrackedFrame | None = None


@dataclass(frozen=True)
class Launched:
    """A frame whose tracking is queued: mask logits per object (on the device), the animals prompted
    on it, and its labels on their way to the host (None when nobody will read them)."""

    frame_index: int
    rows: list[Any]
    prompted: frozenset[int]
    download: LabelDownload | None


def received(download: LabelDownload) -> tuple[TrackedFrame, dict]:
    """A frame's measured labels, once on the host, and each animal's observation."""
    tracked = download.result()
    return tracked, observations_from(tracked.measurements)


class TrackRun:
    """One :meth:`Sam2Tracker.track` call: lazy frames, SAM2 state, animal groups, the per-frame step."""

    def __init__(self, predictor: Any, params: Sam2Params, frames: FrameSource, stats: TrackStats, lane: int = 0,
                 source_lock: threading.Lock | None = None) -> None:
        self.predictor, self.params, self.stats, self.frames = predictor, params, stats, frames
        self.owns_frames = False  # a source reopened for this run: closed with it
        self.device = predictor.device
        self.images = LazySam2Images(frames, predictor.image_size, self.device, params.lru_frames,
                                     params.read_ahead_frames, source_lock)
        self.state = new_inference_state(self.images, frames.height, frames.width, self.device)
        overlap = params.encoder_overlap and self.device.type == "cuda"
        streams = lane_streams(predictor, self.device, lane) if overlap else None
        self.track_stream = streams.track if streams else None
        self.label_stream = streams.label if streams else None  # labels off the tracking chain
        fixed_batch = params.compile or params.compile_image_encoder
        steps = None if fixed_batch else streams.encoder_steps if streams else getattr(predictor, ENCODER_STEPS, None)
        self.features = BackboneFeatureCache(predictor, self.images, self.state, params.encoder_batch_frames,
                                             fixed_batch=fixed_batch, stream=streams.encoder if streams else None,
                                             steps=steps)
        self.window = MemoryWindow.of_model(predictor, frames.n_frames)
        self.frame_shape = (int(frames.height), int(frames.width))
        self.groups: list[Any] = []
        self.animal_ids: list[int] = []  # in SAM2's object order: row i of the logits is animal_ids[i]
        self.label_of_row: torch.Tensor | None = None
        self.prompt_frames: dict[int, set[int]] = {}  # animal id → frames the user prompted it on
        self.recovery_frames = RecoveryFrames()
        self.monitor = DriftMonitor(params.drift, [], self.frame_shape)
        backends = [getattr(SDPBackend, ATTENTION_BACKENDS[name]) for name in params.attention_backends]
        self.attention_backends = SharedAttentionBackends(backends)
        self.anchor: tuple[int, DriftMonitor | None] = (-1, None)  # first prompt frame, monitor there

    def compute(self) -> contextlib.ExitStack:
        """Inference mode and bf16 autocast, entered per step so no caller code runs under them."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        if self.track_stream is not None:
            stack.enter_context(torch.cuda.stream(self.track_stream))
        stack.enter_context(self.attention_backends.entered())
        return stack

    def add_prompts(self, prompts: Sequence[FramePrompts]) -> None:
        """Give SAM2 every click, encode the prompted frames' memory, group the animals."""
        self.animal_ids = animal_ids(prompts)
        for animal_id in self.animal_ids:  # SAM2 numbers objects as it meets them: ascending ids
            self.predictor._obj_id_to_idx(self.state, animal_id)
        with self.compute():
            for frame_index in sorted({fp.frame_index for fp in prompts}):
                self.features.ensure(frame_index)  # our batch shape, not SAM2's single frame
            for fp in prompts:
                for animal in fp.animals:
                    self.predictor.add_new_points_or_box(
                        self.state,
                        frame_idx=fp.frame_index,
                        obj_id=animal.animal_id,
                        points=np.asarray(animal.points, dtype=np.float32),
                        labels=np.asarray(animal.labels, dtype=np.int32),
                    )
                    self.prompt_frames.setdefault(animal.animal_id, set()).add(fp.frame_index)
            self.predictor.propagate_in_video_preflight(self.state)
            self.groups = group_animals(self.state, self.params.batch_animals)
            dtype = torch.uint8 if max(self.animal_ids) < 256 else torch.int32
            self.label_of_row = torch.tensor(self.animal_ids, dtype=dtype, device=self.device)
        self.features.clear()
        self.anchor = (min(fp.frame_index for fp in prompts), None)

    def propagate(self, track_pass: TrackPass, start: int, stop: int, reporter: Reporter,
                  after_frame: Callable[[int], None] | None = None) -> Iterator[Sam2TrackedFrame]:
        """Track every frame of the pass; yield those in ``[start, stop)`` one frame late. ``after_frame`` is
        called with each frame's position in the pass once it is tracked and the memory pruned."""
        needs_features = [t for t in track_pass.order if any(t not in g.cond_frames for g in self.groups)]
        self.features.plan(needs_features)
        anchor_monitor = self.anchor[1]
        if track_pass.reverse and anchor_monitor is not None:  # start where the forward pass started
            self.monitor = anchor_monitor.copy()
        else:
            self.monitor = DriftMonitor(self.params.drift, self.animal_ids, self.frame_shape)
        pending: PendingFrame | None = None
        ahead: Launched | None = None  # the next frame, tracked before this one's drift check
        order = track_pass.order
        for position, frame_index in enumerate(order):
            reporter.check()
            wanted = start <= frame_index < stop
            following = order[position + 1] if position + 1 < len(order) else None
            with self.compute():
                if self.speculate:
                    tracked, ahead = self.track_frame_ahead(frame_index, following, track_pass.reverse, wanted, ahead)
                else:
                    tracked = self.track_frame(frame_index, track_pass.reverse, wanted)
            self.prune(frame_index, track_pass, ahead.frame_index if ahead is not None else None)
            if after_frame is not None:
                after_frame(position)
            reporter.advance()
            self.stats.count_frame(track_pass.reverse)
            if tracked is not None:
                if pending is not None:
                    yield from self._deliver(pending)
                pending = tracked
        if pending is not None:
            yield from self._deliver(pending)
        if self.recovery_frames.demote_all(self.state):
            self.groups = regroup(self.state, self.params.batch_animals)

    @property
    def speculate(self) -> bool:
        """Whether the next frame is tracked before this one's drift check (the check needs this
        frame's masks on the host; waiting for them idles a GPU)."""
        return self.params.drift.recover and self.params.track_ahead

    def track_frame(self, frame_index: int, reverse: bool, wanted: bool = True) -> PendingFrame | None:
        """Track all animals on one frame, recovering drifted ones; the frame to deliver if ``wanted``."""
        recover = self.params.drift.recover
        launched = self._launch(frame_index, reverse, download=recover or wanted)
        if not recover:
            self.features.release(frame_index)
            return PendingFrame(frame_index, launched.prompted, launched.download) if wanted else None
        return self._finish(launched, reverse, wanted)[0]

    def track_frame_ahead(self, frame_index: int, following: int | None, reverse: bool, wanted: bool,
                          ahead: Launched | None) -> tuple[PendingFrame | None, Launched | None]:
        """:meth:`track_frame` with recovery, the ``following`` frame tracked before this one's masks are
        checked; undone (and tracked again next time) if this frame's check re-prompts an animal.
        Returns this frame to deliver and the following frame as tracked ahead, or None."""
        launched = ahead or self._launch(frame_index, reverse)  # ahead is always this frame when given
        next_launch = None
        if following is not None and self._can_track_ahead(following):
            next_launch = self._launch(following, reverse)
            self.stats.frames_tracked_ahead += 1
        tracked, recovered = self._finish(launched, reverse, wanted)
        if recovered and next_launch is not None:  # it tracked from the memory before the recovery
            forget_frame(self.state, next_launch.frame_index)
            self.stats.frames_undone += 1
            next_launch = None
        return tracked, next_launch

    def _can_track_ahead(self, frame_index: int) -> bool:
        """Only frames whose tracking can be undone exactly, and before which nothing is demoted (a
        demotion before this frame's re-prompting would change what the re-prompt reads)."""
        age = self.params.drift.max_recovery_cond_age
        return untouched(self.state, frame_index) and not self.recovery_frames.would_demote(frame_index, age)

    def _launch(self, frame_index: int, reverse: bool, download: bool = True) -> Launched:
        """Queue one frame's tracking (all animals); its masks stay on the device, copied to the host
        in the background if ``download``."""
        if self.recovery_frames.demote_older_than(self.state, frame_index, self.params.drift.max_recovery_cond_age):
            self.groups = regroup(self.state, self.params.batch_animals)
        rows = self._track_animals(frame_index, reverse)
        prompted = frozenset(i for i, frames in self.prompt_frames.items() if frame_index in frames)
        return Launched(frame_index, rows, prompted, self._download(frame_index, rows) if download else None)

    def _finish(self, launched: Launched, reverse: bool, wanted: bool) -> tuple[PendingFrame | None, bool]:
        """Check a launched frame's masks, re-prompt drifted animals, commit its quality; returns the frame
        to deliver and whether any animal was re-prompted."""
        frame_index, rows, prompted = launched.frame_index, launched.rows, launched.prompted
        measured, observations = received(launched.download)
        attempts: dict[int, bool] = {}
        requests = self.monitor.assess(observations, prompted)
        if requests:
            measured, observations, attempts = self._recover(frame_index, reverse, requests, rows, observations)
        self.features.release(frame_index)
        quality = self._commit(frame_index, observations, measured.labels, prompted, attempts)
        frame = Sam2TrackedFrame(frame_index, measured.labels, quality, measurements=measured.measurements)
        return (PendingFrame(frame_index, prompted, frame=frame) if wanted else None), bool(requests)

    def prune(self, frame_index: int, track_pass: TrackPass, tracked_ahead: int | None = None) -> None:
        next_frame = frame_index - 1 if track_pass.reverse else frame_index + 1
        keep = self.window.frames_read_by(next_frame, track_pass.reverse) | track_pass.keep_for_later
        if tracked_ahead is not None:  # tracked before its turn: its output stays
            keep = keep | FramesRead(frozenset({tracked_ahead}), frozenset({tracked_ahead}))
        prune_state(self.state, keep)
        held = held_frames(self.state, with_bytes=False)
        stats = self.stats
        stats.peak_non_cond_outputs = max(stats.peak_non_cond_outputs, held.non_cond_outputs)
        stats.peak_maskmem_outputs = max(stats.peak_maskmem_outputs, held.maskmem_outputs)
        stats.peak_frames_tracked = max(stats.peak_frames_tracked, held.frames_tracked)
        stats.peak_cond_outputs = max(stats.peak_cond_outputs, held.cond_outputs)

    def fork(self) -> TrackRun:
        """A run that goes on from this one's state now, for the other pass (:mod:`.sam2_lanes`): lane 1's
        streams, waiting for everything queued on this run's; its own state dicts over the same tensors; its
        own decoder where the frame source can reopen (else the same source, read under the same lock)."""
        reopen = getattr(self.frames, "reopened", None)
        frames = reopen() if callable(reopen) else self.frames
        lock = None if frames is not self.frames else self.images.source_lock
        fork = TrackRun(self.predictor, self.params, frames, TrackStats(animal_ids=list(self.stats.animal_ids)),
                        lane=1, source_lock=lock)
        fork.owns_frames = frames is not self.frames
        fork.attention_backends = self.attention_backends  # process-wide switches: one holder for both
        fork.state.update(forked_state(self.state))
        fork.recovery_frames = RecoveryFrames({i: list(f) for i, f in self.recovery_frames.frames.items()})
        fork.animal_ids, fork.label_of_row, fork.anchor = list(self.animal_ids), self.label_of_row, self.anchor
        fork.prompt_frames = {i: set(frames) for i, frames in self.prompt_frames.items()}
        if fork.track_stream is not None:
            fork.track_stream.wait_stream(self.track_stream)
            for tensor in shared_tensors(fork.state):  # freed by either run: not reused before the fork read them
                tensor.record_stream(fork.track_stream)
        with fork.compute():
            if fork.recovery_frames.demote_all(fork.state):  # as at the end of this pass, before the next
                fork.groups = regroup(fork.state, self.params.batch_animals)
            else:
                fork.groups = forked_groups(self.groups, fork.state)
        return fork

    def join(self, fork: TrackRun) -> None:
        """Take a finished fork's counts into this run's, and close it."""
        self.stats.absorb(fork.stats)
        fork.close()
        if fork.owns_frames:
            close = getattr(fork.frames, "close", None)
            if callable(close):
                close()

    def close(self) -> None:
        self.stats.encoder_batches = self.features.encoder_batches
        self.stats.peak_cached_features = self.features.peak_cached_frames
        self.stats.peak_lru_frames = self.images.peak_lru_frames
        self.stats.peak_buffered_frames = self.images.peak_buffered_frames
        self.images.close()
        self.features.clear()
        self.groups = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _recover(
        self, frame_index: int, reverse: bool, requests: list[Recovery], rows: list[torch.Tensor], observations: dict
    ) -> tuple[TrackedFrame, dict, dict[int, bool]]:
        """Re-prompt the requested animals on this frame; keep each new mask only if it scores better
        than the tracked one. Returns the frame's labels (measured), observations and attempts."""
        self.features.ensure(frame_index)
        replaced = {r.animal_id: reprompt(self.predictor, self.state, frame_index, r) for r in requests}
        new_logits = finish_reprompts(self.predictor, self.state, frame_index, reverse,
                                      [r.obj_idx for r in replaced.values()])
        kept = list(rows)
        for obj_idx, logits in new_logits.items():
            kept[obj_idx] = logits
        measured, after = self._observed(frame_index, kept)
        attempts = {}
        for request in requests:
            animal_id, obj_idx = request.animal_id, replaced[request.animal_id].obj_idx
            before_score, after_score = (self.monitor.score(animal_id, o[animal_id]) for o in (observations, after))
            accepted = after[animal_id].present and after_score > before_score
            if accepted:
                self.recovery_frames.add(obj_idx, frame_index)
            else:
                revert(self.state, replaced[animal_id])
                kept[obj_idx] = rows[obj_idx]
            attempts[animal_id] = accepted
            self.stats.recoveries.append(RecoveryRecord(
                frame_index, animal_id, request.reason, request.prompt, accepted, before_score, after_score))
        self.recovery_frames.demote_beyond(self.state, self.params.drift.max_recovery_cond_frames)
        self.stats.peak_recovery_cond_frames = max(self.stats.peak_recovery_cond_frames, self.recovery_frames.most_held)
        self.groups = regroup(self.state, self.params.batch_animals)
        if all(attempts.values()):
            return measured, after, attempts
        measured, observations = self._observed(frame_index, kept)  # some animals keep their tracked mask
        return measured, observations, attempts

    def _commit(self, frame_index: int, observations: dict, labels: np.ndarray | None, prompted: frozenset[int],
                attempts: dict[int, bool] | None = None) -> dict[int, float]:
        quality = self.monitor.commit(frame_index, observations, labels, prompted, attempts)
        if frame_index == self.anchor[0] and self.anchor[1] is None:
            self.anchor = (frame_index, self.monitor.copy())
        return quality

    def _track_animals(self, frame_index: int, reverse: bool) -> list[torch.Tensor]:
        """(1, 1, h, w) mask logits per object, in SAM2's object order."""
        rows: list[Any] = [None] * len(self.animal_ids)
        for group in self.groups:
            logits = self._track_group(group, frame_index, reverse)
            for row, obj_idx in enumerate(group.obj_indices):
                rows[obj_idx] = logits[row : row + 1]
        return rows

    def _download(self, frame_index: int, rows: list[torch.Tensor]) -> LabelDownload:
        """The frame's labels, merged from the animals' logits and measured on the device, on their way out."""
        from napari_sbl.segment import sam2_frames  # looked up per call: tests watch the logits

        return sam2_frames.download_labels(frame_index, rows, self.label_of_row, self.animal_ids, self.frame_shape,
                                           self.label_stream)

    def _observed(self, frame_index: int, rows: list[torch.Tensor]) -> tuple[TrackedFrame, dict]:
        """The measured labels on the host now, and each animal's observation."""
        return received(self._download(frame_index, rows))

    def _track_group(self, group: Any, frame_index: int, reverse: bool) -> torch.Tensor:
        cond = group.cond_frames.get(frame_index)
        if cond is not None:
            mark_tracked(self.state, group, frame_index, reverse)
            return cond["pred_masks"].to(self.device, non_blocking=True)
        self.features.ensure(frame_index)
        output, pred_masks = self.predictor._run_single_frame_inference(
            inference_state=self.state,
            output_dict=group.outputs,
            frame_idx=frame_index,
            batch_size=len(group.obj_indices),
            is_init_cond_frame=False,
            point_inputs=None,
            mask_inputs=None,
            reverse=reverse,
            run_mem_encoder=True,
        )
        record_output(self.state, group, frame_index, output, reverse)
        return pred_masks

    def _deliver(self, pending: PendingFrame) -> Iterator[Sam2TrackedFrame]:
        frame = pending.frame
        if frame is None:  # recovery off: scored here, in frame order, one frame late
            tracked, observations = received(pending.download)
            quality = self._commit(pending.frame_index, observations, None, pending.prompted)
            frame = Sam2TrackedFrame(pending.frame_index, tracked.labels, quality, measurements=tracked.measurements)
        self.stats.frames_yielded += 1
        with self.images.decoding_paused():  # the caller may read the frame source meanwhile
            yield frame
