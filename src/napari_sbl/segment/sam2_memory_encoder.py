"""SAM2's memory encoder with its channel layer norms in one Triton kernel each.

The memory encoder runs once per tracked frame on every animal's mask: four strided convolutions, each
followed by a ``LayerNorm2d`` and a GELU, then two ConvNeXt blocks (``CXBlock``) on the 64 × 64 feature
map. ``LayerNorm2d`` is written as nine tensor operations (two means, a power, a square root, ...), each a
pass over the whole map in eager PyTorch, in bf16 under autocast. :func:`channel_norm` normalises every
pixel's channels in float32 registers in one pass, applies the GELU where one follows, and writes the
autocast dtype that the next convolution or linear layer would cast to anyway: closer to float32 than
SAM2's bf16 steps. A ConvNeXt block's norm writes channels-last, the layout its pointwise linear layers
read (SAM2 permutes a copy), and its first linear layer and GELU are one cuBLAS call
(:func:`~.sam2_kernel_modules.linear_gelu`). On an H100 the memory encoder on two animals took 1.08 → 0.57 ms a
call (graph-replayed), closer to float32; tracking did not measurably speed up (benchmarks/results/track.md).

:class:`NormGelu2d` and :class:`FusedCXBlock` are SAM2's modules (same parameters, swapped in by class)
that take these paths under autocast on CUDA with nothing requiring gradients; elsewhere, or once a kernel
has failed to run (logged once per module), SAM2's arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from sam2.modeling.memory_encoder import CXBlock
from sam2.modeling.sam2_utils import LayerNorm2d

from napari_sbl.segment.sam2_kernel_modules import KernelOrSam2, adopt, is_exact_gelu, linear_gelu

ELEMENTS_PER_PROGRAM = 8192


@triton.jit(do_not_specialize=["pixels"])
def _channel_norm_kernel(x_ptr, weight_ptr, bias_ptr, out_ptr, pixels, eps, CHANNELS: tl.constexpr,
                         BLOCK_CHANNELS: tl.constexpr, BLOCK_PIXELS: tl.constexpr, GELU: tl.constexpr,
                         CHANNELS_LAST: tl.constexpr):
    image = tl.program_id(1)
    pixel = tl.program_id(0) * BLOCK_PIXELS + tl.arange(0, BLOCK_PIXELS)[None, :]
    channel = tl.arange(0, BLOCK_CHANNELS)[:, None]
    inside = (pixel < pixels) & (channel < CHANNELS)
    base = image.to(tl.int64) * CHANNELS * pixels
    values = tl.load(x_ptr + base + channel * pixels + pixel, mask=inside, other=0.0).to(tl.float32)
    mean = tl.sum(values, axis=0)[None, :] / CHANNELS
    centred = tl.where(inside, values - mean, 0.0)
    variance = tl.sum(centred * centred, axis=0)[None, :] / CHANNELS
    weight = tl.load(weight_ptr + channel, mask=channel < CHANNELS, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + channel, mask=channel < CHANNELS, other=0.0).to(tl.float32)
    normed = centred * tl.rsqrt(variance + eps) * weight + bias
    if GELU:
        normed = 0.5 * normed * (1.0 + tl.math.erf(normed * 0.7071067811865476))
    if CHANNELS_LAST:  # noqa: SIM108 (a constexpr branch, resolved when Triton compiles)
        target = out_ptr + base + pixel * CHANNELS + channel
    else:
        target = out_ptr + base + channel * pixels + pixel
    tl.store(target, normed.to(out_ptr.dtype.element_ty), mask=inside)


def channel_norm(x: torch.Tensor, norm: LayerNorm2d, out_dtype: torch.dtype, gelu: bool = False,
                 channels_last: bool = False) -> torch.Tensor:
    """SAM2's ``LayerNorm2d`` of (batch, channels, height, width) ``x`` in float32, then (``gelu``) the exact
    GELU, written in ``out_dtype`` as (batch, channels, height, width) or (``channels_last``) (batch, height,
    width, channels)."""
    x = x.contiguous()
    batch, channels, height, width = x.shape
    shape = (batch, height, width, channels) if channels_last else x.shape
    out = torch.empty(shape, dtype=out_dtype, device=x.device)
    pixels = height * width
    if out.numel() == 0:
        return out
    block_channels = triton.next_power_of_2(channels)
    block_pixels = max(1, min(ELEMENTS_PER_PROGRAM // block_channels, triton.next_power_of_2(pixels)))
    grid = (triton.cdiv(pixels, block_pixels), batch)
    _channel_norm_kernel[grid](x, norm.weight, norm.bias, out, pixels, norm.eps, CHANNELS=channels,
                               BLOCK_CHANNELS=block_channels, BLOCK_PIXELS=block_pixels, GELU=gelu,
                               CHANNELS_LAST=channels_last, num_warps=4 if block_channels * block_pixels <= 4096 else 8)
    return out


class NormGelu2d(KernelOrSam2, LayerNorm2d):
    """A mask downsampler's ``LayerNorm2d`` and the GELU after it (whose module becomes an identity)."""

    what = "mask downsampler norm"

    def _sam2_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(LayerNorm2d.forward(self, x))

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(x, self, torch.get_autocast_dtype(x.device.type), gelu=True)


class FusedCXBlock(KernelOrSam2, CXBlock):
    """SAM2's ConvNeXt block with a channels-last norm kernel and its first linear layer + GELU fused."""

    what = "memory encoder ConvNeXt block"

    def _sam2_forward(self, x: torch.Tensor) -> torch.Tensor:
        return CXBlock.forward(self, x)

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = channel_norm(self.dwconv(x), self.norm, torch.get_autocast_dtype(x.device.type), channels_last=True)
        y = self.pwconv2(linear_gelu(self.pwconv1, normed))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


def use_fused_memory_encoder(memory_encoder: torch.nn.Module, kernel_everywhere: bool = False) -> int:
    """Swap the mask downsampler's norm + GELU pairs and the fuser's ConvNeXt blocks of SAM2's
    ``memory_encoder`` for :class:`NormGelu2d` and :class:`FusedCXBlock`; returns how many modules changed."""
    changed = 0
    layers = getattr(getattr(memory_encoder, "mask_downsampler", None), "encoder", [])
    for index in range(len(layers) - 1):
        norm, act = layers[index], layers[index + 1]
        if type(norm) is LayerNorm2d and is_exact_gelu(act):
            adopt(norm, NormGelu2d, kernel_everywhere)
            layers[index + 1] = torch.nn.Identity()
            changed += 1
    for block in getattr(getattr(memory_encoder, "fuser", None), "layers", []):
        if type(block) is CXBlock and _fusable_block(block):
            adopt(block, FusedCXBlock, kernel_everywhere)
            changed += 1
    return changed


def _fusable_block(block: CXBlock) -> bool:
    return type(block.norm) is LayerNorm2d and is_exact_gelu(block.act) and block.pwconv1.bias is not None
