"""Registration on the accelerator: the crops of :func:`~napari_sbl.embed.registration.register_clip`, cut by
JAX from :class:`~napari_sbl.embed.clip_sources.ClipSources` inside the encoder's jitted step.

The OpenCV path spends ~30 ms a 288² clip on one core (warps, feathered mask, blend) and bounded the whole
embedding step; here every frame of every clip of a block is one batched bilinear gather from the uploaded
regions, and the rest is elementwise work and two small convolutions. The steps and their rounding follow
the OpenCV path (bilinear warp to uint8 with the frame edge as border, as OpenCV 5 computes it; grey as
OpenCV's fixed-point weights; z-score per clip and channel; mask edge dilated with OpenCV's ellipse and
blurred with its Gaussian; blend as ``cv2.blendLinear``), so crops agree within a level or two
(tests/embed/test_device_registration.py). CLAHE, histogram equalisation and the blurred background stay on
the CPU path (:func:`supports` says which settings this handles).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from napari_sbl.embed.registration import RegistrationParams, fill_value

DEVICE_NORMALIZATIONS = ("none", "zscore")
DEVICE_BACKGROUNDS = ("keep", "black", "white", "grey")
GREY_WEIGHTS = (4899, 9617, 1868)
GREY_SHIFT = 14
"""OpenCV's fixed-point RGB → grey: (4899 R + 9617 G + 1868 B + 2^13) >> 14."""


def supports(params: RegistrationParams) -> bool:
    """Whether these crops can be cut on the device (else the OpenCV path cuts them)."""
    return params.normalize in DEVICE_NORMALIZATIONS and params.background in DEVICE_BACKGROUNDS


@dataclass(frozen=True)
class DeviceCrops:
    """The settings of :func:`compiled_registration` (static: one compiled function each)."""

    size_px: int
    background: str
    feather_px: float
    grey: bool
    normalize: str

    @classmethod
    def of(cls, params: RegistrationParams) -> DeviceCrops:
        return cls(int(params.size_px), params.background, float(params.feather_px), bool(params.grey),
                   params.normalize)


def register_sources(crops: DeviceCrops, pixels, offset, size, source, matrix, photometry):
    """(B, T, S, S, C) uint8 clips from :class:`ClipSources` arrays (traceable: call inside ``jax.jit``)."""
    import jax.numpy as jnp

    rgb, coverage = warp(pixels, offset, size, source, matrix, crops.size_px, crops.background)
    clip = to_grey(rgb) if crops.grey else rgb
    if crops.normalize == "zscore":
        clip = zscore(clip)
    if crops.background != "keep":
        weights = feathered(coverage >= 0.5, crops.feather_px)[..., None]
        fill = float(fill_value(crops.background))
        clip = jnp.round((clip * weights + fill * (1 - weights)) / (1 + 1e-5))
    mirror, contrast, brightness = (photometry[:, k, None, None, None, None] for k in range(3))
    clip = jnp.where(mirror > 0.5, clip[:, :, :, ::-1], clip)
    clip = jnp.clip(jnp.round((clip - 128) * contrast + 128 + brightness), 0, 255)
    return clip.astype(jnp.uint8)


@lru_cache(maxsize=16)
def compiled_registration(crops: DeviceCrops) -> Any:
    """``register_sources`` jitted for these settings (one compile per pixel-table size)."""
    import jax

    return jax.jit(lambda *arrays: register_sources(crops, *arrays))


def warp(pixels, offset, size, source, matrix, size_px: int, background: str):
    """Bilinear samples of every crop pixel: RGB (B, T, S, S, 3) and mask coverage (B, T, S, S) in [0, 1],
    both rounded as OpenCV's uint8 warps round them; outside a region the border is the background value
    (or the nearest edge pixel when the background is kept), and no animal."""
    import jax.numpy as jnp

    steps = jnp.arange(size_px, dtype=jnp.float32)
    u, v = steps[None, None, None, :], steps[None, None, :, None]
    m = matrix[:, :, :, :, None, None]
    x = m[:, :, 0, 0] * u + m[:, :, 0, 1] * v + m[:, :, 0, 2]
    y = m[:, :, 1, 0] * u + m[:, :, 1, 1] * v + m[:, :, 1, 2]
    left, top = jnp.floor(x), jnp.floor(y)
    fx, fy = x - left, y - top
    width, height = (size[source, k][:, :, None, None].astype(jnp.float32) for k in range(2))
    first = offset[source][:, :, None, None]
    fill = float(fill_value(background))
    colour, mask = 0.0, 0.0
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        col, row = left + dx, top + dy
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        index = first + (jnp.clip(row, 0, height - 1) * width + jnp.clip(col, 0, width - 1)).astype(jnp.int32)
        values = pixels[index].astype(jnp.float32)
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        rgb = values[..., :3] if background == "keep" else jnp.where(inside[..., None], values[..., :3], fill)
        colour = colour + weight[..., None] * rgb
        mask = mask + weight * jnp.where(inside, values[..., 3], 0.0)
    return jnp.round(colour), jnp.round(mask) / 255


def to_grey(rgb):
    """(..., 3) → (..., 1) with OpenCV's fixed-point weights, exactly."""
    import jax.numpy as jnp

    red, green, blue = (rgb[..., k].astype(jnp.int32) for k in range(3))
    weighted = red * GREY_WEIGHTS[0] + green * GREY_WEIGHTS[1] + blue * GREY_WEIGHTS[2] + (1 << (GREY_SHIFT - 1))
    return (weighted >> GREY_SHIFT).astype(jnp.float32)[..., None]


def zscore(clip):
    """Per clip and channel: 128 + 42.5·z, rounded and clipped to 0..255 (as ``normalize_clip``)."""
    import jax.numpy as jnp

    mean = clip.mean(axis=(1, 2, 3), keepdims=True)
    std = jnp.sqrt(((clip - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True))
    return jnp.clip(jnp.round(128 + 42.5 * (clip - mean) / jnp.maximum(std, 1.0)), 0, 255)


def feathered(hard, feather_px: float):
    """(B, T, S, S) bool → weights in [0, 1]: the mask dilated by ``feather_px`` and blurred (sigma half of it),
    never below the mask itself (as ``registration.feathered``)."""
    import jax.numpy as jnp

    hard = hard.astype(jnp.float32)
    if feather_px <= 0:
        return hard
    radius = max(1, round(float(feather_px)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    padded = jnp.pad(hard, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
    rows, cols = hard.shape[-2:]
    grown = hard
    for dy, dx in zip(*np.nonzero(kernel), strict=True):
        grown = jnp.maximum(grown, padded[..., dy : dy + rows, dx : dx + cols])
    soft = gaussian_blur(grown, feather_px / 2)
    return jnp.clip(jnp.maximum(soft, hard), 0, 1)


def gaussian_blur(images, sigma: float):
    """Separable Gaussian blur of (..., H, W) float images with OpenCV's kernel for float input (size
    ``round(8·sigma + 1) | 1``) and its default border (reflect without repeating the edge)."""
    import jax.numpy as jnp
    from jax import lax

    taps = round(sigma * 8 + 1) | 1
    kernel = cv2.getGaussianKernel(taps, sigma, cv2.CV_32F).ravel()
    half = taps // 2
    for axis in (-2, -1):
        pad = [(0, 0)] * images.ndim
        pad[axis] = (half, half)
        padded = jnp.pad(images, pad, mode="reflect")
        length = images.shape[axis]
        images = sum(float(weight) * lax.slice_in_dim(padded, k, k + length, axis=padded.ndim + axis)
                     for k, weight in enumerate(kernel))
    return images
