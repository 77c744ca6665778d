"""Layer norms of SAM2's image encoder (Hiera) and memory attention in one Triton kernel that writes the
autocast dtype.

Under bf16 autocast, PyTorch runs ``layer_norm`` in float32: Hiera's every block normalises its
tokens (96-1,152 channels) into a float32 tensor that the window partition copies and the next
linear casts to bf16. PyTorch's kernel also spends a thread block on each row, which short rows
leave mostly idle: on tiny, 25 layer norms took 0.9 of the 3.3 ms the image encoder costs a frame
(``benchmarks/results/track_gpu_profile_tiny.txt``). :func:`layer_norm_rows` normalises a block of
rows per program, in float32 registers, and stores the result in bf16 once. Every reader of these
norms in Hiera is a linear layer under autocast or a copy (window partition, pooling of a linear's
output), so the values each linear multiplies are the same: the float32 result rounded to bf16. The
same holds for the memory attention's three norms per layer while SAM2.1's configuration adds no
positional encoding to their outputs (:func:`use_memory_attention_layer_norms` checks).

Runs with ``TRITON_INTERPRET=1`` set before import on the CPU (the tests), like
:mod:`.sam2_attention_kernels`.
"""

from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl

logger = logging.getLogger(__name__)

ELEMENTS_PER_PROGRAM = 8192  # a block of rows × the padded channels, for one program's registers


@triton.jit
def normalise_rows(values, inside, weight_ptr, bias_ptr, column, eps, COLUMNS: tl.constexpr):
    """Layer norm of each row of float32 ``values`` (rows, padded channels) loaded as 0 outside ``inside``;
    0 outside ``inside``. Shared by this module's kernel and :mod:`.sam2_hiera_blocks`'."""
    mean = tl.sum(values, axis=1)[:, None] / COLUMNS
    centred = tl.where(inside, values - mean, 0.0)
    variance = tl.sum(centred * centred, axis=1)[:, None] / COLUMNS
    weight = tl.load(weight_ptr + column, mask=column < COLUMNS, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + column, mask=column < COLUMNS, other=0.0).to(tl.float32)
    return tl.where(inside, centred * tl.rsqrt(variance + eps) * weight + bias, 0.0)


@triton.jit(do_not_specialize=["rows"])
def _layer_norm_rows_kernel(x_ptr, update_ptr, weight_ptr, bias_ptr, out_ptr, rows, eps, COLUMNS: tl.constexpr,
                            BLOCK_ROWS: tl.constexpr, BLOCK_COLUMNS: tl.constexpr, ADD: tl.constexpr):
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]
    column = tl.arange(0, BLOCK_COLUMNS)[None, :]
    inside = (row < rows) & (column < COLUMNS)
    offsets = row.to(tl.int64) * COLUMNS + column
    values = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    if ADD:  # a residual add first: the float32 sum goes back into x, the residual stream
        values += tl.load(update_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
        tl.store(x_ptr + offsets, values, mask=inside)
    normed = normalise_rows(values, inside, weight_ptr, bias_ptr, column, eps, COLUMNS)
    tl.store(out_ptr + offsets, normed.to(out_ptr.dtype.element_ty), mask=inside)


def row_block(rows: int, columns: int) -> tuple[int, int]:
    """(rows, padded channels) of one program's block: whole rows, about :data:`ELEMENTS_PER_PROGRAM` values."""
    block_columns = triton.next_power_of_2(columns)
    return max(1, min(ELEMENTS_PER_PROGRAM // block_columns, triton.next_power_of_2(max(rows, 1)))), block_columns


def row_launch(rows: int, columns: int) -> tuple[tuple[int], int, int, int]:
    """(grid, block rows, padded channels, warps) of a kernel that takes :func:`row_block` blocks of rows."""
    block_rows, block_columns = row_block(rows, columns)
    warps = 4 if block_rows * block_columns <= 4096 else 8
    return (triton.cdiv(rows, block_rows),), block_rows, block_columns, warps


def layer_norm_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                    out_dtype: torch.dtype) -> torch.Tensor:
    """``layer_norm`` over the last axis of ``x`` (float32 statistics, biased variance), in ``out_dtype``."""
    flat = x.reshape(-1, x.shape[-1])
    if not flat.is_contiguous():
        flat = flat.contiguous()
    return _normalise_rows(flat, None, weight, bias, eps, out_dtype).reshape(x.shape)


def add_layer_norm_rows(x: torch.Tensor, update: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                        out_dtype: torch.dtype) -> torch.Tensor:
    """``x += update`` (float32 ``x``, contiguous, updated in place) and the layer norm of the sum, in ``out_dtype``,
    in one pass: a residual add and the norm after it (the same float32 sum and the same norm as
    :func:`layer_norm_rows` of it)."""
    if x.dtype != torch.float32 or not x.is_contiguous() or update.shape != x.shape:
        raise ValueError(f"needs a contiguous float32 x and an update of its shape: {x.dtype} {tuple(x.shape)}, "
                         f"{tuple(update.shape)}")
    return _normalise_rows(x, update.contiguous(), weight, bias, eps, out_dtype)


def _normalise_rows(x: torch.Tensor, update: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                    eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """The kernel over contiguous ``x``'s rows, adding ``update`` into ``x`` first if given."""
    columns = x.shape[-1]
    rows = x.numel() // columns if columns else 0
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if rows:
        grid, block_rows, block_columns, warps = row_launch(rows, columns)
        _layer_norm_rows_kernel[grid](x, x if update is None else update, weight, bias, out, rows, eps,
                                      COLUMNS=columns, BLOCK_ROWS=block_rows, BLOCK_COLUMNS=block_columns,
                                      ADD=update is not None, num_warps=warps)
    return out


class AutocastLayerNorm(torch.nn.LayerNorm):
    """An ``nn.LayerNorm`` (the same parameter objects and names) whose output under autocast is the
    autocast dtype, computed by :func:`layer_norm_rows` on CUDA (or anywhere with ``kernel_everywhere``,
    for tests). Outside autocast, where gradients are wanted, for a norm over more than the last axis,
    or once the kernel has failed to compile here (logged once per norm), it is ``nn.LayerNorm``."""

    def __init__(self, norm: torch.nn.LayerNorm, kernel_everywhere: bool = False) -> None:
        super().__init__(norm.normalized_shape, eps=norm.eps, elementwise_affine=norm.elementwise_affine,
                         bias=norm.bias is not None, device="meta")
        self.weight, self.bias = norm.weight, norm.bias
        self.kernel_everywhere = kernel_everywhere
        self.kernel_failed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._kernel_applies(x):
            return super().forward(x)
        try:
            return layer_norm_rows(x, self.weight, self.bias, self.eps, torch.get_autocast_dtype(x.device.type))
        except Exception as err:  # Triton's compile errors have no common base class
            self.kernel_failed = True
            logger.warning("PyTorch's layer norm is used: ours does not run here (%s: %s)",
                           type(err).__name__, str(err)[:200])
            return super().forward(x)

    def add_and_norm(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """``x += update`` in place (a float32 residual stream), then this norm of ``x``: one kernel where
        :meth:`forward` would run ours, the two steps otherwise."""
        if self._kernel_applies(x) and x.dtype == torch.float32 and x.is_contiguous():
            try:
                return add_layer_norm_rows(x, update, self.weight, self.bias, self.eps,
                                           torch.get_autocast_dtype(x.device.type))
            except Exception as err:  # as in forward; nothing was written before a compile error
                self.kernel_failed = True
                logger.warning("PyTorch's layer norm is used: ours does not run here (%s: %s)",
                               type(err).__name__, str(err)[:200])
        x += update
        return self(x)

    def _kernel_applies(self, x: torch.Tensor) -> bool:
        device = x.device.type
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        return ((device == "cuda" or self.kernel_everywhere) and not self.kernel_failed and not wants_grad
                and len(self.normalized_shape) == 1 and x.shape[-1] == self.normalized_shape[0]
                and self.weight is not None and self.bias is not None and torch.is_autocast_enabled(device))


def use_autocast_layer_norms(module: torch.nn.Module, kernel_everywhere: bool = False) -> int:
    """Replace every ``nn.LayerNorm`` under ``module`` by an :class:`AutocastLayerNorm`; returns how many.

    Only for modules whose norms feed nothing but autocast linears and copies (Hiera's blocks).
    """
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.LayerNorm:
                setattr(parent, name, AutocastLayerNorm(child, kernel_everywhere))
                replaced += 1
    return replaced


def use_memory_attention_layer_norms(memory_attention: torch.nn.Module, kernel_everywhere: bool = False) -> int:
    """Replace the norms of each memory attention layer whose output reaches only linear projections: the
    self-attention's unless positions are added to its queries and keys, the cross-attention's unless
    added to its queries, and the MLP's. Returns how many (the final norm feeds the mask decoder: kept)."""
    replaced = 0
    for layer in getattr(memory_attention, "layers", []):
        names = [name for name, positions_added in (("norm1", getattr(layer, "pos_enc_at_attn", True)),
                                                    ("norm2", getattr(layer, "pos_enc_at_cross_attn_queries", True)),
                                                    ("norm3", False)) if not positions_added]
        for name in names:
            norm = getattr(layer, name, None)
            if type(norm) is torch.nn.LayerNorm:
                setattr(layer, name, AutocastLayerNorm(norm, kernel_everywhere))
                replaced += 1
    return replaced
