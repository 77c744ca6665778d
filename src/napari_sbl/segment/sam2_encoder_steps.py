"""SAM2's image encoder in steps: a batch launched a few Hiera blocks at a time, each step a CUDA graph.

Launching the encoder on a batch of 8 frames kept the tracking thread busy for ~18 ms (tiny) to
~27 ms (large) of Python and kernel launches, during which it issued no tracking work and the
tracking stream ran dry (benchmarks/results/track.md, session 9). :class:`EncoderSteps` cuts
``predictor.forward_image`` into steps (patch embedding with the first blocks, further blocks, the
last blocks with the FPN neck), so :class:`~.sam2_features.BackboneFeatureCache` can launch a batch
one or two steps per tracked frame. On CUDA each step is replayed from a graph once a batch shape has
run eagerly: a step costs the host one launch. A whole-encoder graph, tried before, was slower: its
kernels, all queued at once, crowded out the tracking stream's (session 8); a step at a time they do not.

The steps call SAM2's own modules in the order ``Hiera.forward``, ``ImageEncoder.forward`` and
``SAM2Base.forward_image`` do (the tests compare the features with ``forward_image``'s).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from napari_sbl.segment.sam2_graphs import capture_stream, uncached_autocast
from napari_sbl.segment.sam2_neck import HighResNeck

logger = logging.getLogger(__name__)

# Hiera's attention over long windows and its global attention in recorded steps: cuDNN's kernels take 0.62-0.82 of
# flash's time there on an H100 (large's 16×16 windows 0.169 → 0.138 ms, its global attention 1.418 → 0.884 ms;
# benchmarks/results/attention_backends.txt), and its per-call host work (which made it slower for SAM2's
# per-frame modules) is replayed. Batches that run eagerly (a pass's short last batch) keep the tracker's choice:
# cuDNN would plan every new shape anew, tens of milliseconds each.
RECORDED_BACKENDS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                     SDPBackend.MATH]

ATTRIBUTE = "sbl_encoder_steps"
"""Where :func:`~.sam2_build.build_predictor` leaves a predictor's :class:`EncoderSteps`."""

Tensors = tuple[torch.Tensor, ...]


def split_evenly(count: int, parts: int) -> list[range]:
    """``range(count)`` cut into ``parts`` consecutive ranges (fewer if ``count`` is smaller), sizes within one."""
    parts = max(1, min(parts, count))
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return [range(low, high) for low, high in itertools.pairwise(bounds)]


class EncoderJob:
    """One batch on its way through the encoder: ``advance`` launches the next steps; once the last is
    launched, ``result`` holds the features and position encodings (levels as ``forward_image`` has them)."""

    def __init__(self, steps: list[Callable[[Tensors], Tensors]], first: Tensors,
                 finish: Callable[[Tensors], Tensors]) -> None:
        self._steps, self._tensors, self._finish = steps, first, finish
        self._next = 0
        self.result: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    @property
    def done(self) -> bool:
        return self.result is not None

    def advance(self, steps: int) -> bool:
        """Launch up to ``steps`` more steps; True once all are launched."""
        for _ in range(steps):
            if self.done:
                break
            self._tensors = self._steps[self._next](self._tensors)
            self._next += 1
            if self._next == len(self._steps):
                out = self._finish(self._tensors)
                levels = len(out) // 2  # a position encoding per feature level
                self.result = (list(out[:levels]), list(out[levels:]))
                self._tensors = ()
        return self.done


@dataclass
class _StepGraphs:
    graphs: list[torch.cuda.CUDAGraph]
    images: torch.Tensor  # the recording's input buffer
    outputs: Tensors  # the last step's outputs, overwritten by every replay


class EncoderSteps:
    """``predictor.forward_image`` as ``steps`` calls, eager or (``graphs``, CUDA) replayed from CUDA graphs
    captured on the stream current at :meth:`start` (the encoder's: see :func:`~.sam2_graphs.capture_stream`).

    A batch shape is recorded the second time it is seen (the first run compiles the kernels), only for
    batches of ``graph_batch`` frames if given (others, such as a pass's last frames, run eagerly). If
    recording fails, that shape stays eager, with a warning.
    """

    def __init__(self, predictor: Any, steps: int, graphs: bool = True, graph_batch: int | None = None) -> None:
        self.predictor = predictor
        self.trunk = predictor.image_encoder.trunk
        self.block_ranges = split_evenly(len(self.trunk.blocks), steps)
        self.graphs = graphs
        self.graph_batch = graph_batch
        self._runs: dict[tuple, int] = {}
        self._recordings: dict[tuple, _StepGraphs | None] = {}
        self._failed_batches: set[int] = set()  # recording failed: eager, with the tracker's attention backends
        self.neck = HighResNeck(predictor)  # the finest levels' two 1×1 convolutions folded into one

    @staticmethod
    def applies(predictor: Any) -> bool:
        """Whether the predictor's encoder is SAM2's Hiera trunk + neck, which the steps mirror."""
        encoder = getattr(predictor, "image_encoder", None)
        trunk = getattr(encoder, "trunk", None)
        names = ("patch_embed", "blocks", "stage_ends", "return_interm_layers", "_get_pos_embed")
        return trunk is not None and all(hasattr(trunk, n) for n in names) and hasattr(encoder, "neck")

    @property
    def steps(self) -> int:
        return len(self.block_ranges)

    def start(self, images: torch.Tensor) -> EncoderJob:
        """A job for the normalised ``images`` (B, 3, S, S); nothing launched yet."""
        recording = self._recording_for(images)
        if recording is None:
            steps = [lambda tensors, k=k: self._step(k, tensors) for k in range(self.steps)]
            return EncoderJob(steps, (images,), lambda out: out)
        return EncoderJob([lambda _, k=k: self._replay(recording, k, images) for k in range(self.steps)], (),
                          _copied_out)

    def _step(self, k: int, tensors: Tensors) -> Tensors:
        """Step ``k`` with the attention backends its batch size calls for (:data:`RECORDED_BACKENDS` for
        the shapes that are recorded: their eager first run and their capture alike)."""
        if not self._recordable(tensors[0]):
            return self._blocks(k, tensors)
        with backends_in_order(RECORDED_BACKENDS):
            return self._blocks(k, tensors)

    def _recordable(self, tensor: torch.Tensor) -> bool:
        """Whether a batch of ``tensor``'s size is (or will be) replayed from graphs: not once its recording failed."""
        batch = tensor.shape[0]
        return (self.graphs and tensor.is_cuda and (self.graph_batch is None or batch == self.graph_batch)
                and batch not in self._failed_batches)

    def _blocks(self, k: int, tensors: Tensors) -> Tensors:
        """Step ``k``: (images,) or (x, *stage outputs so far) → the same after its blocks; the last
        step returns (*features, *position encodings)."""
        trunk = self.trunk
        if k == 0:
            x = trunk.patch_embed(tensors[0])
            x = x + trunk._get_pos_embed(x.shape[1:3])
            outputs: list[torch.Tensor] = []
        else:
            x, *outputs = tensors
        for i in self.block_ranges[k]:
            x = trunk.blocks[i](x)
            if i == trunk.stage_ends[-1] or (i in trunk.stage_ends and trunk.return_interm_layers):
                outputs.append(x.permute(0, 3, 1, 2))
        if k < self.steps - 1:
            return (x, *outputs)
        features, positions = self._neck(outputs)
        return (*features, *positions)

    def _neck(self, outputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``forward_image``'s features (high-resolution levels projected once, as it does) and encodings."""
        return self.neck(outputs)

    def _replay(self, recording: _StepGraphs, k: int, images: torch.Tensor) -> Tensors:
        if k == 0:
            recording.images.copy_(images)
        recording.graphs[k].replay()
        return recording.outputs if k == self.steps - 1 else ()

    def _recording_for(self, images: torch.Tensor) -> _StepGraphs | None:
        if not self._recordable(images) or torch.is_grad_enabled():
            return None
        key = (tuple(images.shape), images.dtype, images.device, torch.is_autocast_enabled("cuda"),
               torch.get_autocast_dtype("cuda"), torch.is_inference_mode_enabled())
        if key not in self._recordings:
            self._runs[key] = self._runs.get(key, 0) + 1
            if self._runs[key] < 2:  # the first run compiles and warms up what the recording captures
                return None
            self._recordings[key] = self._record(images)
        return self._recordings[key]

    def _record(self, images: torch.Tensor) -> _StepGraphs | None:
        """Capture every step, in order, into one memory pool (each step reads the one before's outputs)."""
        static_images = torch.empty_like(images)  # filled by every replay of the first step
        tensors: Tensors = (static_images,)
        graphs = []
        pool = torch.cuda.graph_pool_handle()
        try:
            stream = capture_stream()
            with uncached_autocast():
                for k in range(self.steps):
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
                        tensors = self._step(k, tensors)
                    graphs.append(graph)
        except Exception as error:  # an operation that cannot be captured: this shape stays eager
            logger.warning("CUDA graph recording of SAM2's image encoder steps failed, running them eagerly: %s",
                           error)
            torch.cuda.synchronize()
            self._failed_batches.add(images.shape[0])
            return None
        return _StepGraphs(graphs, static_images, tensors)


def _copied_out(out: Tensors) -> Tensors:
    """A replay's (*features, *position encodings), copied out of the buffers the next replay overwrites; the
    encodings are one frame's, expanded over the batch (the same for every frame: a full copy would be ~0.4 GB)."""
    levels = len(out) // 2
    positions = tuple(t[:1].clone().expand(t.shape) for t in out[levels:])
    return (*(t.clone() for t in out[:levels]), *positions)


@contextlib.contextmanager
def backends_in_order(backends: list[SDPBackend]) -> Iterator[None]:
    """``sdpa_kernel`` trying ``backends`` in order (PyTorch < 2.6 takes no order: its own then). PyTorch's
    context restores the backends it found enabled but leaves its global order changed; the order is put back."""
    read_order = getattr(torch._C, "_get_sdp_priority_order", None)
    order = read_order() if read_order is not None else None
    try:
        context = sdpa_kernel(backends, set_priority=True)
    except TypeError:
        context = sdpa_kernel(backends)
    try:
        with context:
            yield
    finally:
        if order is not None:
            torch._C._set_sdp_priority_order(order)
