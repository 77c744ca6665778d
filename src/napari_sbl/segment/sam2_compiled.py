"""SAM2's VOS-optimised video predictor, compiled with modes that build in about a minute.

SAM2 ships ``SAM2VideoPredictorVOS``: the same predictor with its component outputs cloned so that
``torch.compile`` and CUDA graphs can run every component (a replayed graph overwrites its outputs).
It compiles with ``max-autotune``, whose kernel search took over seven minutes for the tiny model on
an H100. This subclass keeps the cloning and compiles with ``reduce-overhead`` instead: CUDA graphs
(the per-frame work is launch-bound) without the search. Hydra builds it from
:func:`napari_sbl.segment.sam2_build.build_predictor` when ``Sam2Params.compile`` is on; this
module imports torch and sam2, so nothing else imports it.
"""

from __future__ import annotations

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictorVOS

MODE = "reduce-overhead"


class CompiledVideoPredictor(SAM2VideoPredictorVOS):
    """The VOS predictor with every component compiled in :data:`MODE`."""

    def _compile_all_components(self) -> None:
        # the number of memories grows over a pass's first frames, so memory attention is dynamic;
        # the others see one shape (SAM2 found dynamic shapes cost accuracy in the heads)
        # the image encoder stays eager: it runs batched over upcoming frames, so it is bound by
        # arithmetic rather than launches, and its graph is the slowest to compile
        for module, dynamic in ((self.memory_encoder, False),
                                (self.memory_attention, True), (self.sam_prompt_encoder, False),
                                (self.sam_mask_decoder, False)):
            module.forward = _cloning(torch.compile(module.forward, mode=MODE, fullgraph=True, dynamic=dynamic))


def _cloning(forward):
    """``forward`` with its tensor outputs copied: a CUDA graph's next replay overwrites its outputs,
    and SAM2 keeps some (memory attention's, the memory features) across frames."""

    def run(*args, **kwargs):
        return _cloned(forward(*args, **kwargs))

    return run


def _cloned(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(v) for v in value)
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    return value
