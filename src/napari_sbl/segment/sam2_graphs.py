"""CUDA graphs for the SAM2 modules that run on every tracked frame.

Tracking one frame launches ~550 small kernels from Python (memory attention, mask decoder, memory
encoder, their position encodings), and on an H100 the GPU finishes each long before the host has
issued the next: the loop is bound by the host, not the GPU. Once a pass has filled its memory
window, every frame calls these modules with the same shapes, so :class:`GraphedModule` records a
module's kernels once per call signature (shapes, dtypes, strides and the non-tensor arguments) and
replays them afterwards: one launch instead of hundreds, no Python in between.

A signature is recorded only after it has been seen ``record_after`` times (the first frames of a
pass each have a different memory length and would never repeat), and at most ``max_graphs`` are
kept per module and stream; everything else runs eagerly. The stream a call is made on is part of its
signature, and each stream records into a memory pool of its own: two passes tracked at once, each on
its own stream (and thread), replay their own graphs side by side and never share a buffer. Inputs
are copied into the recording's own buffers and outputs are cloned out of them, so callers (SAM2 keeps
memory features across frames) never see a buffer that the next replay overwrites. Off CUDA, with grad
enabled, or when recording fails, the module simply runs as it is.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import _pytree as pytree

logger = logging.getLogger(__name__)

PER_FRAME_MODULES = ("memory_attention", "memory_encoder", "sam_mask_decoder")  # run once per tracked frame


@dataclass
class _Recording:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: Any


@dataclass
class GraphStats:
    """What a :class:`GraphedModule` did: calls replayed, calls run eagerly, signatures recorded."""

    replayed: int = 0
    eager: int = 0
    recorded: int = 0
    failed: int = 0
    seen: dict = field(default_factory=dict)


class GraphedModule(torch.nn.Module):
    """``module`` with its forward replayed from CUDA graphs for call signatures that repeat.

    Attribute lookups the wrapper does not know fall through to ``module``, so callers that use its
    other methods (``get_dense_pe``) or attributes keep working.
    """

    def __init__(self, module: torch.nn.Module, record_after: int = 3, max_graphs: int = 8) -> None:
        super().__init__()
        self.inner = module
        self.record_after = record_after
        self.max_graphs = max_graphs
        self.stats = GraphStats()
        self._recordings: dict[tuple, _Recording | None] = {}  # None: recording failed, run eagerly
        self._pools: dict[int, Any] = {}  # stream → its recordings' memory pool
        self._recording_lock = threading.Lock()  # one capture at a time, whichever thread asks

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = _signature(leaves, spec, self._device())
        if key is None:
            self.stats.eager += 1
            return self.inner(*args, **kwargs)
        recording = self._recordings.get(key)
        if recording is None and key not in self._recordings:
            seen = self.stats.seen[key] = self.stats.seen.get(key, 0) + 1
            stream = key[-1]
            if seen >= self.record_after and sum(k[-1] == stream for k in self._recordings) < self.max_graphs:
                with self._recording_lock:
                    recording = self._recordings[key] = self._record(leaves, spec, stream)
        if recording is None:
            self.stats.eager += 1
            return self.inner(*args, **kwargs)
        tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        for buffer, value in zip(recording.inputs, tensors, strict=True):
            buffer.copy_(value)
        recording.graph.replay()
        self.stats.replayed += 1
        return pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, recording.outputs)

    def _device(self) -> torch.device | None:
        """Where the module's own tensors live: decides for calls without tensor arguments (a grid size)."""
        inner = self._modules["inner"]
        first = next(iter(inner.parameters()), None)
        if first is None:
            first = next(iter(inner.buffers()), None)
        return None if first is None else first.device

    def _record(self, leaves: list[Any], spec: Any, stream_key: int) -> _Recording | None:
        inputs = [leaf.clone() for leaf in leaves if isinstance(leaf, torch.Tensor)]
        buffers = iter(inputs)
        args, kwargs = pytree.tree_unflatten(
            [next(buffers) if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves], spec
        )
        try:
            stream = capture_stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up: lazy initialisation done before the capture
                self.inner(*args, **kwargs)
            torch.cuda.current_stream().wait_stream(stream)
            pool = self._pools.setdefault(stream_key, torch.cuda.graph_pool_handle())
            graph = torch.cuda.CUDAGraph()
            # thread_local: a pass tracked on another thread meanwhile may allocate or wait on its own stream
            with uncached_autocast(), torch.cuda.graph(graph, pool=pool, stream=stream,
                                                       capture_error_mode="thread_local"):
                outputs = self.inner(*args, **kwargs)
        except Exception as error:  # an op that cannot be captured: this signature stays eager
            logger.warning("CUDA graph recording of %s failed, running it eagerly: %s",
                           type(self.inner).__name__, error)
            self.stats.failed += 1
            torch.cuda.synchronize()
            return None
        self.stats.recorded += 1
        return _Recording(graph, inputs, outputs)


def capture_stream() -> torch.cuda.Stream:
    """Where to warm up and capture a graph: the stream that will replay it.

    cuBLAS keeps a workspace per stream, and a graph replays the workspace of the stream it was captured on.
    Captured on the stream that replays it, a graph shares that workspace only with work queued on the same
    stream. Captured elsewhere (PyTorch's shared capture stream, or any stream from PyTorch's pool, which may
    be the very stream another of our threads of work runs on) its matmuls can share a workspace with matmuls
    running at the same time on another stream and overwrite each other's (seen as masks that changed from
    run to run; benchmarks/results/track.md, session 9). The legacy default stream cannot capture; work there
    runs alone, so a side stream is safe then.
    """
    current = torch.cuda.current_stream()
    return torch.cuda.Stream() if current == torch.cuda.default_stream() else current


def uncached_autocast() -> torch.autocast:
    """The current CUDA autocast state without its weight-cast cache, which must not hand tensors across a
    capture boundary."""
    return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"),
                          cache_enabled=False)


def _signature(leaves: list[Any], spec: Any, module_device: torch.device | None) -> tuple | None:
    """What a recording depends on, or None when this call must run eagerly."""
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    on_cuda = all(t.is_cuda for t in tensors) if tensors else module_device is not None and module_device.type == "cuda"
    if not on_cuda or torch.is_grad_enabled():
        return None
    parts = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append((tuple(leaf.shape), tuple(leaf.stride()), leaf.dtype, leaf.device))
        elif leaf is None or isinstance(leaf, (bool, int, float, str)):
            parts.append(leaf)
        else:  # something we cannot key on
            return None
    autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
    stream = torch.cuda.current_stream().cuda_stream  # last: recordings are counted per stream
    return (str(spec), tuple(parts), autocast, torch.is_inference_mode_enabled(), stream)


def graph_per_frame_modules(predictor: torch.nn.Module) -> dict[str, GraphedModule]:
    """Wrap the predictor's per-frame modules (:data:`PER_FRAME_MODULES`, and the prompt encoder's
    dense position encoding) in :class:`GraphedModule`; returns the wrappers by name."""
    wrapped = {}
    for name in PER_FRAME_MODULES:
        module = getattr(predictor, name)
        if not isinstance(module, GraphedModule):
            setattr(predictor, name, GraphedModule(module))
        wrapped[name] = getattr(predictor, name)
    prompt_encoder = predictor.sam_prompt_encoder
    if not isinstance(prompt_encoder.pe_layer, GraphedModule):
        prompt_encoder.pe_layer = GraphedModule(prompt_encoder.pe_layer)
    wrapped["dense_position_encoding"] = prompt_encoder.pe_layer
    return wrapped
