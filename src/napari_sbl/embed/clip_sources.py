"""A block of clips as an accelerator cuts them itself: each sample's region once, and where each frame lies.

Registering 288² crops with OpenCV costs ~30 ms a clip on one core and scales poorly with threads, so an
encoder on an accelerator takes the uncut material instead (:mod:`napari_sbl.embed.device_registration`):
the region of each (sample, animal) that any crop of the block can reach, uploaded once as uint8 RGB with
the animal's mask as a fourth channel, and per clip frame the region it is cut from and the affine map of
:func:`~napari_sbl.embed.registration.crop_transform`, shifted into that region. Regions of any size are
packed end to end in one pixel table, padded to a few sizes so the device compiles few shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sbl.embed.registration import Jitter

PIXEL_BUCKETS_PER_DOUBLING = 4
"""Pixel-table lengths are rounded up to 2^(k/4): at most 19 % padding, a handful of compiled shapes."""


@dataclass
class ClipSources:
    """``pixels`` (P, 4) uint8: every region's pixels, row after row and region after region (RGB, then the
    animal's mask as 0/255), zero-padded; ``offset`` (N,) int32 first pixel and ``size`` (N, 2) int32
    (width, height) of region n (N = B·T, unused regions 1×1); ``source`` (B, T) int32 the region of each
    clip frame; ``matrix`` (B, T, 2, 3) float32 maps crop pixel (u, v, 1) to region pixel (x, y);
    ``photometry`` (B, 3) float32 per clip: mirror (0 or 1), contrast, brightness (1, 0: unchanged)."""

    pixels: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    source: np.ndarray
    matrix: np.ndarray
    photometry: np.ndarray

    @property
    def count(self) -> int:
        return int(self.source.shape[0])

    def padded(self, batch_size: int) -> ClipSources:
        """The same block with clips appended (copies of clip 0) up to ``batch_size``: one compiled shape."""
        extra = batch_size - self.count
        if extra <= 0:
            return self

        def grow(values: np.ndarray) -> np.ndarray:
            return np.concatenate([values, np.repeat(values[:1], extra, axis=0)])

        regions = batch_size * self.source.shape[1]
        offset = np.zeros(regions, np.int32)
        size = np.ones((regions, 2), np.int32)
        offset[: len(self.offset)], size[: len(self.size)] = self.offset, self.size
        return ClipSources(self.pixels, offset, size, grow(self.source), grow(self.matrix), grow(self.photometry))


def photometry_of(jitter: Jitter | None) -> tuple[float, float, float]:
    """(mirror, contrast, brightness) of a clip's jitter; the identity for the embedding itself."""
    if jitter is None:
        return 0.0, 1.0, 0.0
    return float(jitter.mirror), float(jitter.contrast), float(jitter.brightness)


def pack_sources(regions: list[np.ndarray], source: np.ndarray, matrix: np.ndarray, photometry: np.ndarray,
                 copy_pool=None) -> ClipSources:
    """:class:`ClipSources` from (h, w, 4) uint8 ``regions`` and the per-frame ``source`` (B, T) indices into
    them; the regions are copied into one table (on ``copy_pool``'s threads when given)."""
    count, steps = source.shape
    sizes = np.array([(part.shape[1], part.shape[0]) for part in regions], dtype=np.int64).reshape(-1, 2)
    lengths = sizes[:, 0] * sizes[:, 1]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    pixels = np.empty((bucketed(int(starts[-1])), 4), dtype=np.uint8)
    pixels[starts[-1]:] = 0

    def place(k: int) -> None:
        pixels[starts[k] : starts[k + 1]] = regions[k].reshape(-1, 4)

    if copy_pool is not None and len(regions) > 1:
        list(copy_pool.map(place, range(len(regions))))
    else:
        for k in range(len(regions)):
            place(k)
    offset = np.zeros(count * steps, np.int32)
    size = np.ones((count * steps, 2), np.int32)
    offset[: len(regions)], size[: len(regions)] = starts[:-1], sizes
    return ClipSources(pixels, offset, size, source.astype(np.int32), matrix.astype(np.float32),
                       photometry.astype(np.float32))


def bucketed(length: int) -> int:
    """``length`` rounded up to the next 2^(k/4), and to whole KiB of pixels."""
    if length <= 1024:
        return 1024
    exponent = np.ceil(np.log2(length) * PIXEL_BUCKETS_PER_DOUBLING) / PIXEL_BUCKETS_PER_DOUBLING
    return int(-(-int(np.ceil(2.0**exponent)) // 1024) * 1024)
