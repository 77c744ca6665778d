"""SAM2's sine position encodings computed once per shape and handed out as batch-expanded views.

SAM2's ``PositionEmbeddingSine`` caches one image's encoding, but hands it out with ``repeat`` over the batch,
and the FPN neck and memory encoder then cast it to their features' dtype: on every 8-frame encoder batch a
float32 copy of 8 × 256 channels × 256 × 256 (537 MB) and its bf16 cast, for an encoding that is the same for
every frame. On an H100 those copies took 0.2 ms of GPU time a frame (tiny and large), about what the
image encoder's global attention takes for tiny (``benchmarks/results/track_gpu_profile_*.txt``, session 10).
:class:`ExpandedSinePositions` keeps the encoding already cast to the dtype asked for and returns
``expand``-ed views of it: the same values (SAM2's float32 encoding, cast once), no copies. The neck's own
``.to(dtype)`` is then a no-op. Every reader in SAM2 flattens, slices or adds these maps; none writes them.
"""

from __future__ import annotations

from typing import Any

import torch
from sam2.modeling.position_encoding import PositionEmbeddingSine


class ExpandedSinePositions(PositionEmbeddingSine):
    """SAM2's ``PositionEmbeddingSine`` (same settings and buffers, swapped in by class) whose ``forward``
    returns a view of one cached encoding per (size, dtype, device), expanded over the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1], x.dtype, x.device)
        cached = self.__dict__.setdefault("typed_cache", {}).get(key)
        if cached is None:
            cached = PositionEmbeddingSine.forward(self, x[:1]).to(x.dtype)
            # a tensor made while a CUDA graph records would live in the graph's pool: not kept
            if not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
                self.typed_cache[key] = cached
        return cached.expand(x.shape[0], -1, -1, -1)


def use_expanded_positions(predictor: Any) -> int:
    """Swap the image encoder neck's and the memory encoder's sine encodings for :class:`ExpandedSinePositions`;
    returns how many were swapped (none already swapped or not SAM2's)."""
    swapped = 0
    owners = (getattr(getattr(predictor, "image_encoder", None), "neck", None),
              getattr(predictor, "memory_encoder", None))
    for owner in owners:
        encoding = getattr(owner, "position_encoding", None)
        if type(encoding) is PositionEmbeddingSine:
            encoding.__class__ = ExpandedSinePositions
            swapped += 1
    return swapped
