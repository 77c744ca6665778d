"""Image-encoder features computed ahead of the tracker, in batches, where SAM2 looks first.

SAM2 runs its image encoder on one frame at a time, when the frame is tracked. The encoder does not
depend on tracking state, so :class:`BackboneFeatureCache` encodes several upcoming frames in one
batch (and, on a GPU, on a second stream beside the tracking work) and leaves the results in
``inference_state["cached_features"]``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from napari_sbl.segment.sam2_encoder_steps import EncoderJob, EncoderSteps
from napari_sbl.segment.sam2_frames import LazySam2Images


@dataclass(eq=False)
class _PendingBatch:
    """A batch whose encoder steps are still being launched."""

    frame_indices: list[int]
    images: torch.Tensor
    job: EncoderJob


class BackboneFeatureCache:
    """Image-encoder features for the next ``batch_frames`` frames of a pass, computed in one batch.

    SAM2's ``_get_image_feature`` looks in ``inference_state["cached_features"]`` before running the
    encoder on a single frame, so filling that dict ahead is enough. The position encodings are the
    same for every frame; one copy is shared instead of one per frame (44 MiB each at S=1024).
    ``fixed_batch`` pads short batches (a pass's last frames) by repeating the last frame, so a
    compiled encoder sees one shape and never recompiles mid-video.

    With a CUDA ``stream``, batches are encoded there, one batch ahead of the frame being tracked, so
    the encoder can fill what the small per-frame tracking kernels leave of the GPU. The tracking
    stream waits on an event per batch, never on the host. On an H100 this measured within noise of
    the serial order (large +3.5 %, tiny -3 %; benchmarks/results/track.md): once tracking replays
    from CUDA graphs, its kernels leave little of the GPU idle.

    With ``steps`` (:class:`~.sam2_encoder_steps.EncoderSteps`), a batch ahead is launched a few steps per
    tracked frame (all of it within the first half of the current batch's frames) instead of at once,
    so the tracking thread keeps the tracking stream fed; a frame needed before its batch is fully
    launched has the rest launched on the spot.
    """

    def __init__(self, predictor: torch.nn.Module, images: LazySam2Images, state: dict, batch_frames: int,
                 fixed_batch: bool = False, stream: torch.cuda.Stream | None = None,
                 steps: EncoderSteps | None = None) -> None:
        self.predictor = predictor
        self.fixed_batch = fixed_batch
        self.images = images
        self.state = state  # never keep state["cached_features"] itself: SAM2 replaces it on a miss
        self.batch_frames = max(int(batch_frames), 1)
        self.stream = stream
        if steps is not None and fixed_batch:
            raise ValueError("the encoder steps record the batch shapes they see; a fixed batch is for compiling")
        self.steps = steps
        # the batch ahead fully launched within half a batch of tracked frames
        self.steps_per_frame = math.ceil(steps.steps / max(self.batch_frames // 2, 1)) if steps else 0
        self._pending: list[_PendingBatch] = []
        self._order: list[int] = []
        self._position: dict[int, int] = {}
        self._ready: dict[int, torch.cuda.Event] = {}  # frame → its batch's event, until first used
        self._shared_pos_enc: list[torch.Tensor] | None = None
        self.encoder_batches = 0
        self.peak_cached_frames = 0

    def plan(self, frame_indices: Sequence[int]) -> None:
        """The frames of the coming pass that need features, in processing order."""
        self._order = list(frame_indices)
        self._position = {index: pos for pos, index in enumerate(self._order)}
        self._pending.clear()  # a batch of another pass, whose frames may not come: its launched steps do no harm
        self.images.plan(self._order)

    def ensure(self, frame_index: int) -> None:
        """Make sure ``frame_index`` is cached, encoding it with the frames that follow it."""
        pos = self._position.get(frame_index)
        if frame_index not in self.state["cached_features"]:
            pending = next((p for p in self._pending if frame_index in p.frame_indices), None)
            if pending is not None:
                self._complete(pending)
            else:
                batch = [frame_index] if pos is None else self._order[pos : pos + self.batch_frames]
                self._encode(self._missing(batch))
        if self.stream is None and self.steps is None:
            return
        event = self._ready.pop(frame_index, None)
        if event is not None:
            torch.cuda.current_stream().wait_event(event)
        if pos is not None:
            self._encode_next_batch(pos)
        if self._pending:
            self._launch_steps(self._pending[0], self.steps_per_frame)

    def release(self, frame_index: int) -> None:
        self.state["cached_features"].pop(frame_index, None)
        self._ready.pop(frame_index, None)

    def clear(self) -> None:
        self.state["cached_features"] = {}
        self._ready.clear()
        self._pending.clear()

    def _missing(self, frame_indices: Sequence[int]) -> list[int]:
        """Those of ``frame_indices`` neither cached nor in a batch on its way."""
        skip = self.state["cached_features"].keys() | {index for p in self._pending for index in p.frame_indices}
        return [index for index in frame_indices if index not in skip]

    def _encode_next_batch(self, pos: int) -> None:
        """Start the batch after ``pos`` unless the next ``batch_frames`` frames are cached or on their way."""
        missing = self._missing(self._order[pos + 1 : pos + 1 + self.batch_frames])
        if not missing:
            return
        start = self._position[missing[0]]
        frames = self._missing(self._order[start : start + self.batch_frames])
        if self.steps is not None and len(frames) == self.batch_frames:
            self._start(frames)  # launched a few steps per frame from now on
        else:
            self._encode(frames)

    def _encode(self, frame_indices: list[int]) -> None:
        """Encode ``frame_indices`` now, in one go."""
        if self.steps is not None:
            self._complete(self._start(frame_indices))
            return
        with self._on_encoder_stream():
            batch, levels = self._run_encoder(frame_indices)
        self._finish(frame_indices, batch, levels)

    def _start(self, frame_indices: list[int]) -> _PendingBatch:
        """A batch for the encoder steps, none launched yet. Batches before it are launched in full first: the
        steps' recorded graphs hold one batch at a time."""
        for pending in list(self._pending):
            self._complete(pending)
        with self._on_encoder_stream():  # the steps record their graphs on the stream that replays them
            images = self.images.batch(frame_indices)
            pending = _PendingBatch(frame_indices, images, self.steps.start(images))
        self._pending.append(pending)
        return pending

    def _launch_steps(self, pending: _PendingBatch, steps: int) -> None:
        with self._on_encoder_stream():
            done = pending.job.advance(steps)
            if done:
                self._share_positions(pending.job.result[1])
        if done:
            self._pending.remove(pending)
            self._finish(pending.frame_indices, pending.images, pending.job.result[0])

    def _complete(self, pending: _PendingBatch) -> None:
        self._launch_steps(pending, self.steps.steps)

    def _share_positions(self, positions: list[torch.Tensor]) -> None:
        """Keep one frame's position encodings for every frame (copied on the stream that made them)."""
        if self._shared_pos_enc is None:
            self._shared_pos_enc = [pos[0:1].clone() for pos in positions]

    def _finish(self, frame_indices: list[int], batch: torch.Tensor, levels: list[torch.Tensor]) -> None:
        """Cache a batch's features; on a stream, the tracker waits for them by an event."""
        if self.stream is None:
            self._store(frame_indices, batch, levels)
            return
        event = torch.cuda.Event()
        event.record(self.stream)
        consumer = torch.cuda.current_stream()
        for tensor in (batch, *levels, *self._shared_pos_enc):
            tensor.record_stream(consumer)  # freed by the tracker: not reused before its work is done
        self._store(frame_indices, batch, levels)
        self._ready.update(dict.fromkeys(frame_indices, event))

    def _on_encoder_stream(self) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _run_encoder(self, frame_indices: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch = self.images.batch(frame_indices)
        if self.fixed_batch and len(frame_indices) < self.batch_frames:
            padding = batch[-1:].expand(self.batch_frames - len(frame_indices), *batch.shape[1:])
            batch = torch.cat([batch, padding])
        backbone_out = self.predictor.forward_image(batch)
        self._share_positions(backbone_out["vision_pos_enc"])
        return batch, list(backbone_out["backbone_fpn"])

    def _store(self, frame_indices: list[int], batch: torch.Tensor, levels: list[torch.Tensor]) -> None:
        cached = self.state["cached_features"]
        for j, frame_index in enumerate(frame_indices):
            features = {
                "backbone_fpn": [level[j : j + 1] for level in levels],
                "vision_pos_enc": list(self._shared_pos_enc),
            }
            cached[frame_index] = (batch[j : j + 1], features)
        self.encoder_batches += 1
        self.peak_cached_frames = max(self.peak_cached_frames, len(cached))
