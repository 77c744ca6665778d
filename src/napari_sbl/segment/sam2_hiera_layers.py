"""Hiera's attention and MLP with fewer passes over memory: a multi-head attention kernel for head widths
that are not powers of two, and the MLP's first layer with its GELU in cuBLAS's epilogue.

Hiera's heads are 96 (tiny, small), 56 (base+) or 72 (large) channels wide, and most of its windows are
short: 4 to 64 keys. PyTorch's flash attention pads a head to the next width it was built for (72 → 96) and
spends a 128-query block on each window and head, so on an H100 its calls over short windows take 1.4-7
times as long as :func:`heads_attention` (large, 8 frames: 6.5 → 1.7 ms over the 12 such calls); over 196
to 4,096 keys flash is as fast or faster, so those calls stay with PyTorch (whose backend the caller picks:
cuDNN in the graphed encoder steps, :mod:`.sam2_encoder_steps`). :func:`heads_attention` splits
each head into a power-of-two part and a remainder padded to at least 16 channels (72 = 64 + 8 in 16,
96 = 64 + 32, 56 = 32 + 24 in 32), so both dot products run on the tensor cores with little padding; it
reads queries, keys and values from the qkv projection's own layout and writes the heads side by side,
ready for the output projection.

The MLP's first layer and its GELU become one cuBLAS call (``torch._addmm_activation``), whose epilogue
applies GELU's tanh form to the float32 accumulator and rounds once (from 2 M rows on, e.g. Hiera's first
stage on 32 frames at 1024 px, PyTorch runs a matmul and a tanh GELU instead: the same values, two kernels).
The tanh form differs from the exact GELU SAM2 was trained with by at most 4.8e-4 (at 2.7, where bf16's own
rounding step is 0.016).

:class:`HieraAttention` and :class:`GeluMlp` are SAM2's modules (same parameters, swapped in by class) that
take these paths under autocast on CUDA, with nothing requiring gradients; elsewhere, or once the kernel
has failed to run (logged once per module), SAM2's forward (:mod:`.sam2_kernel_modules`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from sam2.modeling.backbones.hieradet import MultiScaleAttention, do_pool
from sam2.modeling.sam2_utils import MLP

from napari_sbl.segment.sam2_kernel_modules import KernelOrSam2, adopt, is_exact_gelu, linear_gelu

LOG2_E = tl.constexpr(1.4426950408889634)


@triton.jit
def _load_rows(base, row, row_stride, valid, channel, HEAD_DIM: tl.constexpr):
    inside = valid[:, None] & (channel[None, :] < HEAD_DIM)
    return tl.load(base + row[:, None] * row_stride + channel[None, :], mask=inside, other=0.0)


@triton.jit(do_not_specialize=["queries", "keys", "heads"])
def _heads_attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, queries, keys, heads, scale,
    q_batch_stride, q_row_stride, k_batch_stride, k_row_stride, v_batch_stride, v_row_stride,
    HEAD_DIM: tl.constexpr, MAIN: tl.constexpr, REST: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pair = tl.program_id(0)  # batch * heads + head: the large axis (windows × frames × heads)
    batch, head = pair // heads, pair % heads
    query = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    has_query = query < queries
    main = tl.arange(0, MAIN)
    q_base = q_ptr + batch.to(tl.int64) * q_batch_stride + head * HEAD_DIM
    k_base = k_ptr + batch.to(tl.int64) * k_batch_stride + head * HEAD_DIM
    v_base = v_ptr + batch.to(tl.int64) * v_batch_stride + head * HEAD_DIM
    q_main = _load_rows(q_base, query, q_row_stride, has_query, main, HEAD_DIM)
    acc_main = tl.zeros((BLOCK_Q, MAIN), tl.float32)
    if REST > 0:
        rest = MAIN + tl.arange(0, REST)
        q_rest = _load_rows(q_base, query, q_row_stride, has_query, rest, HEAD_DIM)
        acc_rest = tl.zeros((BLOCK_Q, REST), tl.float32)
    running_max = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_Q,), tl.float32)
    score_scale = scale * LOG2_E
    for start in range(0, keys, BLOCK_K):
        key = start + tl.arange(0, BLOCK_K)
        has_key = key < keys
        scores = tl.dot(q_main, tl.trans(_load_rows(k_base, key, k_row_stride, has_key, main, HEAD_DIM)))
        if REST > 0:
            scores += tl.dot(q_rest, tl.trans(_load_rows(k_base, key, k_row_stride, has_key, rest, HEAD_DIM)))
        scores = tl.where(has_key[None, :], scores * score_scale, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, 1))
        weights = tl.exp2(scores - new_max[:, None])
        decay = tl.exp2(running_max - new_max)
        running_sum = running_sum * decay + tl.sum(weights, 1)
        running_max = new_max
        weights = weights.to(q_main.dtype)
        v_main = _load_rows(v_base, key, v_row_stride, has_key, main, HEAD_DIM)
        acc_main = acc_main * decay[:, None] + tl.dot(weights, v_main)
        if REST > 0:
            v_rest = _load_rows(v_base, key, v_row_stride, has_key, rest, HEAD_DIM)
            acc_rest = acc_rest * decay[:, None] + tl.dot(weights, v_rest)
    out_base = out_ptr + batch.to(tl.int64) * queries * heads * HEAD_DIM + head * HEAD_DIM
    out_rows = out_base + query[:, None] * (heads * HEAD_DIM)
    out_type = out_ptr.dtype.element_ty
    tl.store(out_rows + main[None, :], (acc_main / running_sum[:, None]).to(out_type),
             mask=has_query[:, None] & (main[None, :] < HEAD_DIM))
    if REST > 0:
        tl.store(out_rows + rest[None, :], (acc_rest / running_sum[:, None]).to(out_type),
                 mask=has_query[:, None] & (rest[None, :] < HEAD_DIM))


def head_split(head_dim: int) -> tuple[int, int]:
    """(main, rest) channel slots of a head: a power of two and a remainder slot of at least 16 (or none)."""
    main = max(16, 1 << (head_dim.bit_length() - 1))
    left = head_dim - main
    return main, 0 if left <= 0 else max(16, 1 << (left - 1).bit_length())


def _block(length: int, most: int) -> int:
    return min(most, max(16, triton.next_power_of_2(length)))


def heads_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    tiling: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``scaled_dot_product_attention`` of (batch, rows, heads, head_dim) q, k and v (each head's channels
    contiguous; rows and batches at any stride, so views of a qkv projection are read in place), no mask,
    scale 1/√head_dim. Returns (batch, queries, heads, head_dim), contiguous, in q's dtype. ``tiling``
    (query block, key block, warps, stages) is for benchmarks; by default it follows the lengths."""
    batch, queries, heads, head_dim = q.shape
    keys = k.shape[1]
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if tensor.stride(-1) != 1 or tensor.stride(-2) != head_dim:
            raise ValueError(f"{name}: each row's heads must lie side by side, channels contiguous")
    out = torch.empty((batch, queries, heads, head_dim), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    main, rest = head_split(head_dim)
    block_q, block_k = _block(queries, 128), _block(keys, 64)
    warps, stages = 4 if block_q >= 64 else 2, 2
    if tiling is not None:
        block_q, block_k, warps, stages = _block(queries, tiling[0]), _block(keys, tiling[1]), tiling[2], tiling[3]
    grid = (batch * heads, triton.cdiv(queries, block_q))
    _heads_attention_kernel[grid](
        q, k, v, out, queries, keys, heads, head_dim**-0.5,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        HEAD_DIM=head_dim, MAIN=main, REST=rest, BLOCK_Q=block_q, BLOCK_K=block_k,
        num_warps=warps, num_stages=stages,
    )
    return out


class HieraAttention(KernelOrSam2, MultiScaleAttention):
    """SAM2's ``MultiScaleAttention`` whose attention over at most ``kernel_max_keys`` keys runs
    :func:`heads_attention` (see the module's text)."""

    what = "Hiera attention"
    kernel_max_keys = 64  # longer windows and global attention: PyTorch's flash is as fast (sam2_hiera_check.py)

    def _sam2_forward(self, x: torch.Tensor) -> torch.Tensor:
        return MultiScaleAttention.forward(self, x)

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.q_pool:
            q = do_pool(q.reshape(batch, height, width, -1), self.q_pool)
            height, width = q.shape[1:3]
            q = q.reshape(batch, height * width, self.num_heads, -1)
        if k.shape[1] > self.kernel_max_keys:
            attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            attended = attended.transpose(1, 2)
        else:
            attended = heads_attention(q, k, v)
        return self.proj(attended.reshape(batch, height, width, -1))


class GeluMlp(KernelOrSam2, MLP):
    """SAM2's two-layer GELU ``MLP`` whose first layer and GELU are one cuBLAS call (see the module's text)."""

    what = "Hiera MLP"

    def _sam2_forward(self, x: torch.Tensor) -> torch.Tensor:
        return MLP.forward(self, x)

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.layers
        return second(linear_gelu(first, x))


def use_hiera_attention(trunk: torch.nn.Module, kernel_everywhere: bool = False) -> int:
    """Turn every ``MultiScaleAttention`` of Hiera ``trunk`` into a :class:`HieraAttention`; returns how many."""
    changed = 0
    for module in trunk.modules():
        if type(module) is MultiScaleAttention:
            adopt(module, HieraAttention, kernel_everywhere)
            changed += 1
    return changed


def use_gelu_mlps(trunk: torch.nn.Module, kernel_everywhere: bool = False) -> int:
    """Turn every two-layer, exact-GELU, biased ``MLP`` of ``trunk`` into a :class:`GeluMlp`; returns how many."""
    changed = 0
    for module in trunk.modules():
        if type(module) is MLP and _fusable_mlp(module):
            adopt(module, GeluMlp, kernel_everywhere)
            changed += 1
    return changed


def _fusable_mlp(mlp: MLP) -> bool:
    return (mlp.num_layers == 2 and not mlp.sigmoid_output and is_exact_gelu(getattr(mlp, "act", None))
            and all(layer.bias is not None for layer in mlp.layers))
