"""SAM2's memory attention in Triton kernels, its cross-attention on the memories' 64 channels, for the GPU.

On every tracked frame, each of the memory attention's four layers attends from the frame's 4,096
tokens to themselves and to up to 7 memory frames of 4,096 tokens (plus object-pointer tokens), one
head 256 wide: about half of a tiny model's GPU time per frame (benchmarks/results/track.md). SAM2 projects
the 64-channel memories to 256-wide values, attends, and projects the result with ``out_proj``.
The attention weights of a query sum to one, so

    softmax(q kᵀ) (M W_vᵀ + b_v) W_oᵀ + b_o = (softmax(q kᵀ) M) (W_o W_v)ᵀ + (W_o b_v + b_o)

and :class:`FusedRoPEAttention` attends over the 64 memory channels themselves, with ``v_proj``
folded into ``out_proj``: the second matmul of the attention shrinks fourfold and the 256-wide values
are never written. Its rotary encoding runs in one kernel (SAM2: float32 complex copies of every key,
in every layer). The self-attention (values as wide as keys) gets the same kernels without the fold.
Same arithmetic as SAM2's up to bf16 rounding of the folded weights and of the attention output; the
tests compare both, and ``benchmarks/sam2_fused_check.py`` does on every call of a GPU tracking run.

Used only where it applies (CUDA, Triton importable, one head, bf16/fp16 activations as under
SAM2's autocast); anything else runs SAM2's own module.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from sam2.modeling.sam.transformer import RoPEAttention

from napari_sbl.segment.sam2_attention_kernels import (
    CROSS_TILING,
    SELF_TILING,
    AttentionTiling,
    attention,
    rotate_pairs,
)
from napari_sbl.segment.sam2_kernel_modules import KernelOrSam2, adopt, linear_relu

logger = logging.getLogger(__name__)

HALF_PRECISION = (torch.bfloat16, torch.float16)
# smaller tilings tried, in order, when a GPU cannot compile the chosen one (A100s have 164 KB of shared
# memory per block, consumer GPUs ~100 KB; the H100 defaults use up to ~200 KB)
FALLBACK_TILINGS = (
    AttentionTiling(64, 64, 4, 2, 2), AttentionTiling(64, 32, 4, 2, 2), AttentionTiling(32, 32, 4, 1, 2),
)


class FusedRoPEAttention(RoPEAttention):
    """A drop-in for a memory attention layer's ``cross_attn_image`` or ``self_attn`` (SAM2's ``RoPEAttention``).

    A ``RoPEAttention`` itself, holding the original's projections and rotary settings: SAM2 hands
    the object-pointer count only to layers whose cross-attention is one, and anything the kernels do
    not cover runs SAM2's own forward. The first call compiles the kernels; if the GPU cannot (too
    little shared memory for the tiling, no bf16 matmuls), smaller tilings are tried, then SAM2's own
    attention is used from then on, with a warning.
    """

    def __init__(
        self, original: RoPEAttention, tiling: AttentionTiling = CROSS_TILING, off_gpu: bool = False,
    ) -> None:
        torch.nn.Module.__init__(self)
        for name, value in vars(original).items():
            if not name.startswith("_"):  # settings: widths, heads, rotary angles and their function
                setattr(self, name, value)
        for name, child in original.named_children():
            setattr(self, name, child)
        self.tiling = tiling
        self.off_gpu = off_gpu  # run the kernels on CPU tensors too: only under TRITON_INTERPRET=1 (tests)
        self.fold_values = self.v_proj.in_features < self.internal_dim
        if self.fold_values:
            out_weight = self.out_proj.weight.float()
            folded_weight = out_weight @ self.v_proj.weight.float()
            folded_bias = out_weight @ self.v_proj.bias.float() + self.out_proj.bias.float()
            dtype = self.out_proj.weight.dtype
            self.register_buffer("value_out_weight", folded_weight.to(dtype), persistent=False)
            self.register_buffer("value_out_bias", folded_bias.to(dtype), persistent=False)
        self._angles: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.kernels = "untried"  # "untried", "working" or "unavailable"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        if not (q.is_cuda or self.off_gpu) or self.kernels == "unavailable":
            return super().forward(q, k, v, num_k_exclude_rope=num_k_exclude_rope)
        if self.kernels == "untried":
            return self._first_call(q, k, v, num_k_exclude_rope)
        return self._fused(q, k, v, num_k_exclude_rope)

    def _first_call(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int) -> torch.Tensor:
        """The fused forward with the first tiling this GPU compiles; SAM2's forward if none does."""
        errors = []
        for tiling in (self.tiling, *(t for t in FALLBACK_TILINGS if t != self.tiling)):
            self.tiling = tiling
            try:
                out = self._fused(q, k, v, num_k_exclude_rope)
            except Exception as err:  # Triton's compile errors have no common base class
                errors.append(f"{tiling}: {type(err).__name__}: {str(err)[:200]}")
                continue
            self.kernels = "working"
            if errors:
                logger.info("memory attention tiled as %s (the first choice did not compile: %s)", tiling, errors[0])
            return out
        self.kernels = "unavailable"
        logger.warning("SAM2's own memory attention is used: our kernels do not compile on this GPU (%s)",
                       "; ".join(errors))
        return super().forward(q, k, v, num_k_exclude_rope=num_k_exclude_rope)

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int) -> torch.Tensor:
        queries = self.q_proj(q)
        keys = self.k_proj(k)
        if queries.dtype not in HALF_PRECISION or keys.dtype != queries.dtype:
            return super().forward(q, k, v, num_k_exclude_rope=num_k_exclude_rope)
        if not self.fold_values:  # self-attention: values as wide as the keys
            v = self.v_proj(v)
        if v.stride(-1) != 1:
            v = v.contiguous()
        cos, sin = self._rotation_tables(queries.shape[1], queries.device)
        rotated_keys = keys.shape[1] - num_k_exclude_rope
        scale = queries.shape[-1] ** -0.5
        queries = rotate_pairs(queries, cos, sin, queries.shape[1], scale=scale)
        keys = rotate_pairs(keys, cos, sin, rotated_keys)
        mixed = attention(queries, keys, v, self.tiling)
        if not self.fold_values:
            return self.out_proj(mixed)
        return torch.nn.functional.linear(mixed, self.value_out_weight, self.value_out_bias)

    def _rotation_tables(self, positions: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of SAM2's rotary angles for a square grid of ``positions`` tokens (cached)."""
        cached = self._angles.get((positions, device))
        if cached is None:
            side = math.sqrt(positions)
            angles = self.freqs_cis
            if angles.shape[0] != positions:
                angles = self.compute_cis(end_x=side, end_y=side)
            angles = angles.to(device)
            cached = (angles.real.float().contiguous(), angles.imag.float().contiguous())
            self._angles[(positions, device)] = cached
        return cached


def fusable(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a one-head rotary attention of widths the kernels take."""
    return (
        isinstance(module, RoPEAttention)
        and not isinstance(module, FusedRoPEAttention)
        and module.num_heads == 1
        and (module.internal_dim // 2) & (module.internal_dim // 2 - 1) == 0  # Triton blocks: powers of two
        and module.v_proj.in_features & (module.v_proj.in_features - 1) == 0
    )


def fuse_memory_attention(
    memory_attention: Any, cross_tiling: AttentionTiling = CROSS_TILING, self_tiling: AttentionTiling = SELF_TILING,
) -> int:
    """Swap the cross- and self-attention of each layer of SAM2's ``memory_attention`` for
    :class:`FusedRoPEAttention`; returns how many were swapped (0 where the layers do not have SAM2.1's shape)."""
    swapped = 0
    for layer in memory_attention.layers:
        if fusable(layer.cross_attn_image):
            layer.cross_attn_image = FusedRoPEAttention(layer.cross_attn_image, cross_tiling)
            swapped += 1
        if fusable(layer.self_attn):
            layer.self_attn = FusedRoPEAttention(layer.self_attn, self_tiling)
            swapped += 1
    logger.debug("memory attention: %d attention modules fused", swapped)
    return swapped


class ReluLinear(KernelOrSam2, torch.nn.Linear):
    """A memory attention layer's ``linear1`` with the ReLU after it as the matmul's epilogue: one cuBLAS call
    instead of a matmul and a pass over its 2,048-wide output (four layers, every frame). The layer's own
    activation becomes the identity, so this module's SAM2 path applies the ReLU itself."""

    what = "memory attention MLP"

    def _sam2_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.nn.Linear.forward(self, x))

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_relu(self, x)


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


def use_relu_epilogues(memory_attention: Any, kernel_everywhere: bool = False) -> int:
    """Move each memory attention layer's ReLU into its ``linear1`` (:class:`ReluLinear`); returns how many."""
    changed = 0
    for layer in memory_attention.layers:
        first = getattr(layer, "linear1", None)
        if getattr(layer, "activation_str", None) != "relu" or type(first) is not torch.nn.Linear or first.bias is None:
            continue
        adopt(first, ReluLinear, kernel_everywhere)
        layer.activation = _unchanged
        changed += 1
    return changed
