"""SAM2's memory attention layers run as one loop: residual adds inside the norms after them, keys once a frame.

Each of SAM2.1's memory attention layers adds its self-attention, cross-attention and MLP outputs to a float32
residual stream and normalises the sum before the next block reads it: 12 adds a frame, each one more pass
over the 2 × 4,096 × 256 stream. Here each add runs inside the norm after it (``add_and_norm`` of
:class:`.sam2_layer_norm.AutocastLayerNorm`: the same float32 sum, the same norm). Every layer also computes
``memory + pos`` for its cross-attention keys and casts it, and the memories, to bf16: four times the same
~29,000 × 64 sums and casts a frame. They are computed once here, in the autocast dtype the projections read
(the same rounded values). On an H100 these adds, sums and casts took ~0.2 ms of tiny's ~7 ms a frame
(``benchmarks/results/track_gpu_profile_tiny.txt``, session 10).

Applies under autocast, in eval mode, where no layer adds positions to its norms' outputs (SAM2.1's
configuration) and every norm has ``add_and_norm``; :class:`.sam2_layouts.BatchFirstMemoryAttention` runs
SAM2's layers otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from sam2.modeling.sam.transformer import RoPEAttention

NORMS = ("norm1", "norm2", "norm3")


def fused_loop_applies(attention: Any, tokens: torch.Tensor) -> bool:
    """Whether :func:`run_layers` computes what SAM2's layers would for ``tokens`` (batch-first, float32)."""
    device = tokens.device.type
    layers = list(attention.layers)
    return (bool(layers) and not attention.training and tokens.dtype == torch.float32
            and torch.is_autocast_enabled(device) and not torch.is_grad_enabled()
            and len({getattr(layer, "pos_enc_at_cross_attn_keys", None) for layer in layers}) == 1
            and all(_plain_layer(layer) for layer in layers))


def _plain_layer(layer: Any) -> bool:
    return (getattr(layer, "pos_enc_at_attn", True) is False
            and getattr(layer, "pos_enc_at_cross_attn_queries", True) is False
            and all(hasattr(getattr(layer, name, None), "add_and_norm") for name in NORMS)
            and all(hasattr(layer, name) for name in ("self_attn", "cross_attn_image", "linear1", "linear2")))


def run_layers(attention: Any, tokens: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
               num_obj_ptr_tokens: int) -> torch.Tensor:
    """SAM2's layers and final norm over ``tokens`` (batch, tokens, channels; float32, contiguous: updated in
    place as the residual stream) against sequence-first ``memory`` and ``memory_pos``; returns the final
    norm's output, batch-first."""
    dtype = torch.get_autocast_dtype(tokens.device.type)
    layers = list(attention.layers)
    keys = _batch_first(memory + memory_pos if layers[0].pos_enc_at_cross_attn_keys else memory, dtype)
    values = _batch_first(memory, dtype)
    normed = layers[0].norm1(tokens)
    for index, layer in enumerate(layers):
        attended = layer.self_attn(normed, normed, v=normed)
        normed = layer.norm2.add_and_norm(tokens, layer.dropout1(attended))
        rotary = isinstance(layer.cross_attn_image, RoPEAttention) and num_obj_ptr_tokens > 0
        pointers = {"num_k_exclude_rope": num_obj_ptr_tokens} if rotary else {}  # as SAM2 passes them
        attended = layer.cross_attn_image(q=normed, k=keys, v=values, **pointers)
        normed = layer.norm3.add_and_norm(tokens, layer.dropout2(attended))
        update = layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(normed)))))
        if index + 1 < len(layers):
            normed = layers[index + 1].norm1.add_and_norm(tokens, update)
        else:
            tokens += update
    return attention.norm(tokens)


def _batch_first(tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sequence-first (L, B, C) tokens as a contiguous (B, L, C) tensor of ``dtype``: one copy, whatever the input."""
    out = torch.empty((tokens.shape[1], tokens.shape[0], tokens.shape[2]), dtype=dtype, device=tokens.device)
    return out.copy_(tokens.transpose(0, 1))
