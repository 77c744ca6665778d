"""The forward and backward passes of one track, tracked at the same time.

A prompt in the middle of a video starts two passes that read nothing of each other once the backward
pass has left the frames the forward pass tracked first: its first frame reads the memories and object
pointers of up to 15 frames after the prompt (spec §4), later ones only its own. One frame's tracking is
a chain of small kernels on a 64×64 token grid that leaves much of a large GPU idle, so two chains side by
side get more done: on an H100 two trackers at once ran 188 frames/s in all against 165-171 alone (tiny;
large 104-105 against 98-102; benchmarks/results/track.md, session 11).

:func:`track_both_ways` tracks the forward pass on the calling thread until it has tracked what the
backward pass's first frame reads, then forks the run (:meth:`~.sam2_propagation.TrackRun.fork`: the
state's dicts copied over the same tensors, a decoder of its own where the frame source can reopen) and
tracks the backward pass on a thread of its own, on streams of its own ("lane" 1; the forward pass keeps
lane 0). The backward pass reads exactly what it reads when it runs after the forward pass (the frames
after the prompt, recovery frames demoted as at the end of a pass), so the masks are the same. Frames
come out as they are tracked, the two passes interleaved.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.attention import sdpa_kernel

from napari_sbl.progress import Reporter
from napari_sbl.segment.sam2_encoder_steps import ATTRIBUTE as ENCODER_STEPS
from napari_sbl.segment.sam2_encoder_steps import EncoderSteps
from napari_sbl.segment.sam2_memory import TrackPass

if TYPE_CHECKING:
    from napari_sbl.segment.sam2_propagation import TrackRun

LANES_ATTRIBUTE = "_sbl_lane_streams"
"""Predictor attribute: lane → :class:`LaneStreams`, made once, so CUDA graphs recorded on a lane's stream
replay on that stream in every later track (a graph keeps the cuBLAS workspace of the stream it was
captured on: :func:`.sam2_graphs.capture_stream`)."""

_POLL_S = 0.1


@dataclass(frozen=True)
class LaneStreams:
    """The CUDA streams of one pass (tracking, high priority; labels; image encoder) and its image-encoder
    steps (:mod:`.sam2_encoder_steps`: their recorded graphs hold one batch at a time, so each lane has its
    own; None where the predictor has none)."""

    track: torch.cuda.Stream
    label: torch.cuda.Stream
    encoder: torch.cuda.Stream
    encoder_steps: EncoderSteps | None


def lane_streams(predictor: torch.nn.Module, device: torch.device, lane: int) -> LaneStreams:
    """The streams and encoder steps of ``lane`` for ``predictor``, the same ones every time."""
    lanes = getattr(predictor, LANES_ATTRIBUTE, None)
    if lanes is None:
        lanes = {}
        setattr(predictor, LANES_ATTRIBUTE, lanes)
    if lane not in lanes:
        steps = getattr(predictor, ENCODER_STEPS, None)
        if steps is not None and lane:
            steps = EncoderSteps(predictor, steps.steps, steps.graphs, steps.graph_batch)
        # tracking before encoding: the tracker's small kernels wait on the frame; the encoder works ahead
        lanes[lane] = LaneStreams(torch.cuda.Stream(device, priority=-1), torch.cuda.Stream(device),
                                  torch.cuda.Stream(device), steps)
    return lanes[lane]


class SharedAttentionBackends:
    """PyTorch's attention-backend switches for ``backends``, entered per tracking step by every run that
    shares this object. The switches are process-wide: two runs entering and leaving ``sdpa_kernel`` on
    their own threads would restore each other's settings mid-frame (and leave them changed). The first
    run in sets them, the last one out restores them."""

    def __init__(self, backends: Sequence[Any]) -> None:
        self.backends = list(backends)
        self._lock = threading.Lock()
        self._inside = 0
        self._context: contextlib.AbstractContextManager | None = None

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        if not self.backends:
            yield
            return
        with self._lock:
            if self._inside == 0:
                self._context = sdpa_kernel(self.backends)
                self._context.__enter__()
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0 and self._context is not None:
                    self._context.__exit__(None, None, None)
                    self._context = None


def frames_before_fork(forward: TrackPass) -> int:
    """How many frames of ``forward`` to track before the backward pass can start beside it: all that its first
    frame reads (``forward.keep_for_later``; at least two, so the prompt frame's drift monitor, kept for the
    backward pass, is made)."""
    wanted = [forward.order.index(f) + 1 for f in forward.keep_for_later.any if f in forward.order]
    return max([2, *wanted])


class BackwardLane:
    """The backward pass of a forked run on a thread of its own; its frames wait in a queue."""

    def __init__(self, fork: TrackRun, backward: TrackPass, start: int, stop: int, reporter: Reporter) -> None:
        self.fork = fork
        self.progress = reporter.linked()  # the caller's listener may not take calls from this thread
        self._forwarded = 0
        self._frames: queue.SimpleQueue = queue.SimpleQueue()  # unbounded: putting never blocks the lane
        self.finished = False  # its last frame taken (the lane may end before the forward pass)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(backward, start, stop), name="sam2-backward-pass",
                                        daemon=True)
        self._thread.start()

    def _run(self, backward: TrackPass, start: int, stop: int) -> None:
        try:
            frames = self.fork.propagate(backward, start, stop, self.progress)
            try:
                for frame in frames:
                    self._frames.put(frame)
                    if self._stop.is_set():
                        return
            finally:
                frames.close()
            self._frames.put(_Done())
        except BaseException as error:  # handed to the caller's thread, raised there
            self._frames.put(_Failed(error))

    def ready(self, reporter: Reporter) -> Iterator[Any]:
        """The frames tracked so far, without waiting."""
        while True:
            try:
                item = self._frames.get_nowait()
            except queue.Empty:
                break
            yield from self._unpacked(item, reporter)
        self._report(reporter)

    def rest(self, reporter: Reporter) -> Iterator[Any]:
        """Every frame still to come, waiting for them."""
        while not self.finished:
            try:
                item = self._frames.get(timeout=_POLL_S)
            except queue.Empty:
                self._report(reporter)
                reporter.check()
                continue
            yield from self._unpacked(item, reporter)
        self._report(reporter)

    def close(self) -> None:
        """Stop the lane (if it still runs) and wait for its thread."""
        self._stop.set()
        while self._thread.is_alive():
            self._thread.join(timeout=_POLL_S)

    def _unpacked(self, item: Any, reporter: Reporter) -> Iterator[Any]:
        if isinstance(item, _Failed):
            raise item.error
        if isinstance(item, _Done):
            self.finished = True
            return
        self._report(reporter)
        yield item

    def _report(self, reporter: Reporter) -> None:
        done = self.progress.done
        if done > self._forwarded:
            reporter.advance(done - self._forwarded)
            self._forwarded = done


@dataclass(frozen=True)
class _Done:
    pass


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def track_both_ways(run: TrackRun, forward: TrackPass, backward: TrackPass, start: int, stop: int,
                    reporter: Reporter) -> Iterator[Any]:
    """Frames of both passes, the backward one tracked beside the forward one once it can be (see above)."""
    lead = frames_before_fork(forward)
    lane: BackwardLane | None = None

    def fork_when_ready(position: int) -> None:
        nonlocal lane
        if lane is None and position + 1 >= lead:
            lane = BackwardLane(run.fork(), backward, start, stop, reporter)
            run.stats.passes_beside = True

    forward_frames = run.propagate(forward, start, stop, reporter, after_frame=fork_when_ready)
    try:
        for frame in forward_frames:
            yield frame
            if lane is not None:
                yield from lane.ready(reporter)
        if lane is None:  # the forward pass ended before the backward one could fork
            yield from run.propagate(backward, start, stop, reporter)
            return
        yield from lane.rest(reporter)
    finally:
        forward_frames.close()  # first: suspended, it holds the frame source's lock the lane may be waiting for
        if lane is not None:
            lane.close()
            run.join(lane.fork)
