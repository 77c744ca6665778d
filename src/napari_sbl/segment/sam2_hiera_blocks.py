"""Hiera's windowed blocks with their window partitioning folded into two Triton kernels.

A windowed block of SAM2's image encoder normalises its tokens, pads them to whole windows and permutes
them into windows (a copy), attends within each window, permutes back and crops (another copy) and adds
the shortcut (a third pass, over strided views in PyTorch's slowest elementwise kernels). Here
:func:`norm_partition` normalises each token straight into its window slot (padding slots zero, as the
padding of the normalised tokens is), and :func:`unpartition_add` reads each token back from its window
slot and adds the shortcut, in float32, rounding once to the dtype PyTorch's add would return. Same
values as the block's own forward (the CPU test runs both); blocks that pool their queries or change
width keep SAM2's forward. On an H100 the image encoder on 8 frames took 19.3 → 17.4 ms (tiny) and
70.5 → 62.6 ms (large) beyond the layer norms alone; tracking +3 % (benchmarks/results/track.md).
"""

from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl
from sam2.modeling.backbones.hieradet import MultiScaleBlock

from napari_sbl.segment.sam2_kernel_modules import KernelOrSam2, adopt
from napari_sbl.segment.sam2_layer_norm import normalise_rows, row_launch

logger = logging.getLogger(__name__)


@triton.jit(do_not_specialize=["rows", "height", "width", "windows_down", "windows_across"])
def _norm_partition_kernel(x_ptr, weight_ptr, bias_ptr, out_ptr, rows, height, width, windows_down, windows_across,
                           eps, COLUMNS: tl.constexpr, WINDOW: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                           BLOCK_COLUMNS: tl.constexpr):
    slot = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)  # row of the (windows, W, W, C) output
    window, inner = slot // (WINDOW * WINDOW), slot % (WINDOW * WINDOW)
    image, place = window // (windows_down * windows_across), window % (windows_down * windows_across)
    y = (place // windows_across) * WINDOW + inner // WINDOW
    x = (place % windows_across) * WINDOW + inner % WINDOW
    token = (slot < rows) & (y < height) & (x < width)  # padding slots stay zero
    source = (image.to(tl.int64) * height + y) * width + x
    column = tl.arange(0, BLOCK_COLUMNS)[None, :]
    inside = token[:, None] & (column < COLUMNS)
    values = tl.load(x_ptr + source[:, None] * COLUMNS + column, mask=inside, other=0.0).to(tl.float32)
    normed = normalise_rows(values, inside, weight_ptr, bias_ptr, column, eps, COLUMNS)
    keep = (slot < rows)[:, None] & (column < COLUMNS)
    tl.store(out_ptr + slot.to(tl.int64)[:, None] * COLUMNS + column, normed.to(out_ptr.dtype.element_ty), mask=keep)


@triton.jit(do_not_specialize=["rows", "height", "width", "windows_down", "windows_across"])
def _unpartition_add_kernel(windows_ptr, shortcut_ptr, out_ptr, rows, height, width, windows_down, windows_across,
                            COLUMNS: tl.constexpr, WINDOW: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                            BLOCK_COLUMNS: tl.constexpr):
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)  # row of the (B, H, W, C) output
    image, place = row // (height * width), row % (height * width)
    y, x = place // width, place % width
    window = (image * windows_down + y // WINDOW) * windows_across + x // WINDOW
    slot = window.to(tl.int64) * (WINDOW * WINDOW) + (y % WINDOW) * WINDOW + x % WINDOW
    column = tl.arange(0, BLOCK_COLUMNS)[None, :]
    inside = (row < rows)[:, None] & (column < COLUMNS)
    attended = tl.load(windows_ptr + slot[:, None] * COLUMNS + column, mask=inside, other=0.0).to(tl.float32)
    offsets = row.to(tl.int64)[:, None] * COLUMNS + column
    shortcut = tl.load(shortcut_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    tl.store(out_ptr + offsets, (shortcut + attended).to(out_ptr.dtype.element_ty), mask=inside)


def norm_partition(x: torch.Tensor, norm: torch.nn.LayerNorm, window: int, out_dtype: torch.dtype) -> torch.Tensor:
    """``window_partition(layer_norm(x), window)[0]`` of ``(B, H, W, C)`` ``x``, in ``out_dtype``."""
    x = x.contiguous()
    batch, height, width, columns = x.shape
    down, across = -(-height // window), -(-width // window)
    out = torch.empty(batch * down * across, window, window, columns, dtype=out_dtype, device=x.device)
    rows = out.shape[0] * window * window
    if rows:
        grid, block_rows, block_columns, warps = row_launch(rows, columns)
        _norm_partition_kernel[grid](x, norm.weight, norm.bias, out, rows, height, width, down, across, norm.eps,
                                     COLUMNS=columns, WINDOW=window, BLOCK_ROWS=block_rows,
                                     BLOCK_COLUMNS=block_columns, num_warps=warps)
    return out


def unpartition_add(windows: torch.Tensor, shortcut: torch.Tensor, window: int) -> torch.Tensor:
    """``shortcut + window_unpartition(windows, ...)`` for ``(B, H, W, C)`` ``shortcut``, in the dtype PyTorch's
    add would return."""
    shortcut = shortcut.contiguous()
    batch, height, width, columns = shortcut.shape
    down, across = -(-height // window), -(-width // window)
    out = torch.empty(shortcut.shape, dtype=torch.result_type(shortcut, windows), device=shortcut.device)
    rows = batch * height * width
    if rows:
        grid, block_rows, block_columns, warps = row_launch(rows, columns)
        _unpartition_add_kernel[grid](windows.contiguous(), shortcut, out, rows, height, width, down, across,
                                      COLUMNS=columns, WINDOW=window, BLOCK_ROWS=block_rows,
                                      BLOCK_COLUMNS=block_columns, num_warps=warps)
    return out


class WindowedBlock(KernelOrSam2, MultiScaleBlock):
    """A windowed ``MultiScaleBlock`` (:func:`use_windowed_blocks` picks them) whose attention path runs
    through :func:`norm_partition` and :func:`unpartition_add` where :mod:`.sam2_kernel_modules` lets our
    kernels run (SAM2's forward elsewhere, and once the kernels have failed to run here)."""

    what = "Hiera windowed block"

    def _sam2_forward(self, x: torch.Tensor) -> torch.Tensor:
        return MultiScaleBlock.forward(self, x)

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type)
        x = x.contiguous()  # the first stage's tokens arrive as a permuted view of the patch embedding
        attended = self.attn(norm_partition(x, self.norm1, self.window_size, dtype))
        x = unpartition_add(attended, x, self.window_size)
        return x + self.mlp(self.norm2(x))

    def _kernel_applies(self, x: torch.Tensor) -> bool:
        return x.dim() == 4 and super()._kernel_applies(x)


def use_windowed_blocks(trunk: torch.nn.Module, kernel_everywhere: bool = False) -> int:
    """Turn every windowed block of Hiera ``trunk`` that keeps its width and resolution into a
    :class:`WindowedBlock` (same parameters); returns how many."""
    changed = 0
    for block in getattr(trunk, "blocks", []):
        if type(block) is MultiScaleBlock and _foldable(block):
            adopt(block, WindowedBlock, kernel_everywhere)
            changed += 1
    logger.debug("Hiera: %d windowed blocks folded", changed)
    return changed


def _foldable(block: MultiScaleBlock) -> bool:
    """Windowed, keeping its width and resolution, no stochastic depth, a layer norm with weight and bias."""
    norm = getattr(block, "norm1", None)
    return (getattr(block, "window_size", 0) > 0 and getattr(block, "q_stride", True) is None
            and getattr(block, "dim", 0) == getattr(block, "dim_out", -1)
            and isinstance(getattr(block, "drop_path", None), torch.nn.Identity)
            and isinstance(norm, torch.nn.LayerNorm) and norm.weight is not None and norm.bias is not None)
