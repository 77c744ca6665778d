"""Triton kernels for SAM2's memory attention: rotary encoding, then one-head attention.

:mod:`.sam2_fused_attention` explains why the cross-attention runs on the memories' own channels. Here:

- :func:`rotate_pairs` applies SAM2's rotary encoding in float32 registers and rounds once, as SAM2
  does through complex float32 copies, and writes each row as ``[rotated evens | rotated odds]``.
  Queries and keys both leave in that order, so their dot products are SAM2's.
- :func:`attention` is a flash-style forward pass (running max and sum, one pass over the keys)
  whose queries/keys are ``dim`` wide and whose values are ``value_dim`` wide. The key axis can be
  split over several programs, merged afterwards by their log-sum-exp: with one head and two
  animals, 4,096 queries make too few query blocks to fill an H100's 132 multiprocessors.

Both run under CUDA graph capture (no autotuning, no host synchronisation) and, with
``TRITON_INTERPRET=1`` set before this module is imported, on the CPU (the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2_E = tl.constexpr(1.4426950408889634)  # scores in log2 units, for exp2 (a constexpr, so kernels may read it)


@dataclass(frozen=True)
class AttentionTiling:
    """Query rows and key columns per block, warps, pipeline stages and key splits of :func:`attention`."""

    block_queries: int = 128
    block_keys: int = 64
    warps: int = 8
    stages: int = 3
    key_splits: int = 2

    @classmethod
    def parse(cls, text: str) -> AttentionTiling:
        """``"64x64x4x3x2"`` (the fields in order) → a tiling; benchmarks name tilings this way."""
        return cls(*(int(part) for part in text.split("x")))


# the fastest on an H100 of those measured (benchmarks/results/sam2_memory_attention.md)
CROSS_TILING = AttentionTiling()  # 8,192 queries against ~28,700 keys, 64-wide values
SELF_TILING = AttentionTiling(64, 64, 4, 3, 1)  # 8,192 queries against 4,096 keys, 256-wide values


# counts change as a pass fills its memory: not specialised on (no recompiling mid-video)
@triton.jit(do_not_specialize=["rows", "rotated_rows"])
def _rotate_pairs_kernel(
    x_ptr, cos_ptr, sin_ptr, out_ptr, rows, rotated_rows, positions,
    x_batch_stride, x_row_stride, out_batch_stride, out_row_stride, scale,
    BLOCK_ROWS: tl.constexpr, HALF: tl.constexpr,
):
    # one block of positions, its angles loaded once, for every memory frame (row = frame * positions + position)
    position = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    batch = tl.program_id(1)
    pair = tl.arange(0, HALF)
    channel = tl.arange(0, 2 * HALF)
    table = position[:, None] * HALF + pair[None, :]
    known = (position < positions)[:, None]
    cos = tl.load(cos_ptr + table, mask=known, other=1.0)
    sin = tl.load(sin_ptr + table, mask=known, other=0.0)
    out_type = out_ptr.dtype.element_ty
    for first in range(0, rows, positions):
        row = first + position
        in_range = (row < rows)[:, None] & known
        x = tl.load(x_ptr + batch * x_batch_stride + row[:, None] * x_row_stride + channel[None, :], mask=in_range,
                    other=0.0).to(tl.float32)
        even, odd = tl.split(tl.reshape(x, (BLOCK_ROWS, HALF, 2)))
        rotated = (row < rotated_rows)[:, None]  # object-pointer rows are only reordered
        row_cos = tl.where(rotated, cos, 1.0)
        row_sin = tl.where(rotated, sin, 0.0)
        # round as SAM2 does, then scale (exactly, by a power of two)
        rotated_even = (even * row_cos - odd * row_sin).to(out_type).to(tl.float32) * scale
        rotated_odd = (even * row_sin + odd * row_cos).to(out_type).to(tl.float32) * scale
        target = out_ptr + batch * out_batch_stride + row[:, None] * out_row_stride + pair[None, :]
        tl.store(target, rotated_even.to(out_type), mask=in_range)
        tl.store(target + HALF, rotated_odd.to(out_type), mask=in_range)


def rotate_pairs(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotated_rows: int, scale: float = 1.0,
) -> torch.Tensor:
    """Rotate the channel pairs of the first ``rotated_rows`` rows of ``x`` (batch, rows, channels).

    Row ``r`` takes the angles of position ``r % len(cos)`` (SAM2 repeats the frame's positions for
    every memory frame); the rows after ``rotated_rows`` (object pointers) are only reordered.
    ``scale`` multiplies the rounded result (a power of two keeps it exact).
    """
    batch, rows, channels = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty((batch, rows, channels), dtype=x.dtype, device=x.device)
    block_rows = 32
    grid = (triton.cdiv(cos.shape[0], block_rows), batch)
    _rotate_pairs_kernel[grid](
        x, cos, sin, out, rows, rotated_rows, cos.shape[0], x.stride(0), x.stride(1), out.stride(0),
        out.stride(1), scale, BLOCK_ROWS=block_rows, HALF=channels // 2,
    )
    return out


@triton.jit
def _attend_block(
    q, k_base, v_base, key, last, k_row_stride, v_row_stride, channel, value_channel, running_max, running_sum, acc,
    MASKED: tl.constexpr,
):
    """One block of keys into the running max, sum and weighted values (log2 domain)."""
    k_rows = k_base + key[:, None] * k_row_stride + channel[None, :]
    v_rows = v_base + key[:, None] * v_row_stride + value_channel[None, :]
    if MASKED:
        present = key < last
        k = tl.load(k_rows, mask=present[:, None], other=0.0)
        v = tl.load(v_rows, mask=present[:, None], other=0.0)
    else:
        k = tl.load(k_rows)
        v = tl.load(v_rows)
    scores = tl.dot(q, tl.trans(k)) * LOG2_E
    if MASKED:
        scores = tl.where(present[None, :], scores, float("-inf"))
    new_max = tl.maximum(running_max, tl.max(scores, 1))
    weights = tl.exp2(scores - new_max[:, None])
    decay = tl.exp2(running_max - new_max)
    running_sum = running_sum * decay + tl.sum(weights, 1)
    acc = acc * decay[:, None] + tl.dot(weights.to(q.dtype), v.to(q.dtype))
    return new_max, running_sum, acc


@triton.jit(do_not_specialize=["queries", "keys", "keys_per_split"])
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, max_ptr, sum_ptr, queries, keys, keys_per_split,
    q_batch_stride, q_row_stride, k_batch_stride, k_row_stride, v_batch_stride, v_row_stride,
    out_split_stride, out_batch_stride, out_row_stride, stat_split_stride, stat_batch_stride,
    DIM: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    NORMALISE: tl.constexpr,
):
    block = tl.program_id(0)
    batch = tl.program_id(1)
    split = tl.program_id(2)
    query = block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    channel = tl.arange(0, DIM)
    value_channel = tl.arange(0, VALUE_DIM)
    q = tl.load(q_ptr + batch * q_batch_stride + query[:, None] * q_row_stride + channel[None, :],
                mask=(query < queries)[:, None], other=0.0)
    running_max = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_Q,), tl.float32)
    acc = tl.zeros((BLOCK_Q, VALUE_DIM), tl.float32)
    first = split * keys_per_split
    last = tl.minimum(first + keys_per_split, keys)
    k_base = k_ptr + batch * k_batch_stride
    v_base = v_ptr + batch * v_batch_stride
    full_end = first + (last - first) // BLOCK_K * BLOCK_K
    for start in range(first, full_end, BLOCK_K):  # whole blocks: no masks
        running_max, running_sum, acc = _attend_block(
            q, k_base, v_base, start + tl.arange(0, BLOCK_K), last, k_row_stride, v_row_stride, channel,
            value_channel, running_max, running_sum, acc, MASKED=False)
    if full_end < last:
        running_max, running_sum, acc = _attend_block(
            q, k_base, v_base, full_end + tl.arange(0, BLOCK_K), last, k_row_stride, v_row_stride, channel,
            value_channel, running_max, running_sum, acc, MASKED=True)
    stored = (query < queries)[:, None]
    target = out_ptr + split * out_split_stride + batch * out_batch_stride + query[:, None] * out_row_stride
    if NORMALISE:
        tl.store(target + value_channel[None, :], (acc / running_sum[:, None]).to(out_ptr.dtype.element_ty),
                 mask=stored)
    else:
        tl.store(target + value_channel[None, :], acc, mask=stored)
        stat = split * stat_split_stride + batch * stat_batch_stride + query
        tl.store(max_ptr + stat, running_max, mask=query < queries)
        tl.store(sum_ptr + stat, running_sum, mask=query < queries)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tiling: AttentionTiling = CROSS_TILING,
) -> torch.Tensor:
    """``softmax(q kᵀ) v`` for one head: q (batch, queries, dim), k (batch, keys, dim), v (batch, keys,
    value_dim); q already carries the softmax scale. Returns (batch, queries, value_dim) in q's dtype.

    Channel rows must be contiguous (``stride(-1) == 1``); batch and row strides are free, so SAM2's
    sequence-first memories are read without a copy. ``v`` may be float32: it is rounded to q's dtype
    on load, as SAM2's bf16 value projection would round it.
    """
    batch, queries, dim = q.shape
    keys, value_dim = k.shape[1], v.shape[2]
    block_keys = tiling.block_keys
    splits = max(1, min(tiling.key_splits, triton.cdiv(keys, block_keys)))
    keys_per_split = triton.cdiv(triton.cdiv(keys, splits), block_keys) * block_keys
    splits = triton.cdiv(keys, keys_per_split)
    grid = (triton.cdiv(queries, tiling.block_queries), batch, splits)
    if splits == 1:
        out = torch.empty((1, batch, queries, value_dim), dtype=q.dtype, device=q.device)
        running_max = running_sum = out  # not written
    else:
        out = torch.empty((splits, batch, queries, value_dim), dtype=torch.float32, device=q.device)
        running_max = torch.empty((splits, batch, queries), dtype=torch.float32, device=q.device)
        running_sum = torch.empty_like(running_max)
    _attention_kernel[grid](
        q, k, v, out, running_max, running_sum, queries, keys, keys_per_split,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), out.stride(2), running_max.stride(0) if splits > 1 else 0,
        running_max.stride(1) if splits > 1 else 0,
        DIM=dim, VALUE_DIM=value_dim, BLOCK_Q=tiling.block_queries, BLOCK_K=block_keys,
        NORMALISE=splits == 1, num_warps=tiling.warps, num_stages=tiling.stages,
    )
    if splits == 1:
        return out[0]
    return _merge_splits(out, running_max, running_sum, q.dtype)


@triton.jit(do_not_specialize=["rows"])
def _merge_splits_kernel(partial_ptr, max_ptr, sum_ptr, out_ptr, rows, SPLITS: tl.constexpr,
                         VALUE_DIM: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    # rows = batch × queries; partial (splits, rows, value_dim) float32, max and sum (splits, rows)
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    present = row < rows
    channel = tl.arange(0, VALUE_DIM)
    overall = tl.full((BLOCK_ROWS,), float("-inf"), tl.float32)
    for split in tl.static_range(SPLITS):
        overall = tl.maximum(overall, tl.load(max_ptr + split * rows + row, mask=present, other=0.0))
    total = tl.zeros((BLOCK_ROWS, VALUE_DIM), tl.float32)
    weights = tl.zeros((BLOCK_ROWS,), tl.float32)
    for split in tl.static_range(SPLITS):
        weight = tl.exp2(tl.load(max_ptr + split * rows + row, mask=present, other=0.0) - overall)
        values = tl.load(partial_ptr + (split * rows + row)[:, None] * VALUE_DIM + channel[None, :],
                         mask=present[:, None], other=0.0)
        total += values * weight[:, None]
        weights += tl.load(sum_ptr + split * rows + row, mask=present, other=1.0) * weight
    tl.store(out_ptr + row[:, None] * VALUE_DIM + channel[None, :],
             (total / weights[:, None]).to(out_ptr.dtype.element_ty), mask=present[:, None])


def _merge_splits(partial: torch.Tensor, running_max: torch.Tensor, running_sum: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """Combine per-split unnormalised outputs (splits, batch, queries, value_dim) by their maxima (base-2
    logits) and sums, in one kernel (PyTorch took eight a call), rounded once to ``dtype``."""
    splits, batch, queries, value_dim = partial.shape
    out = torch.empty((batch, queries, value_dim), dtype=dtype, device=partial.device)
    rows = batch * queries
    block_rows = max(1, min(64, 4096 // value_dim))
    _merge_splits_kernel[(triton.cdiv(rows, block_rows),)](
        partial, running_max, running_sum, out, rows, SPLITS=splits, VALUE_DIM=value_dim, BLOCK_ROWS=block_rows,
        num_warps=4)
    return out
