"""The image encoder's high-resolution levels in one 1×1 convolution each, and its max pools without indices.

SAM2's FPN neck maps Hiera's two finest levels (256² and 128² tokens at S=1024) to 256 channels with a 1×1
convolution, only for the mask decoder's ``conv_s0`` / ``conv_s1`` to map them straight down to 32 and 64
channels with another (``SAM2Base.forward_image``): two linear maps with nothing between them (these levels
take no top-down features), so one convolution with the product of the weights gives the same features.
The 256-channel maps in between (268 MB for 8 frames at the finest level), their bias pass and their
re-reading are gone. Same values up to the rounding of the 256-channel map, which is skipped (bf16 under
autocast; tested: as close to float32 as SAM2's). The product of the weights is taken from the weights as
autocast hands them to the convolutions, so float32 and bf16-stored weights give the same features.

Hiera halves its token grid at each stage with ``nn.MaxPool2d`` (2×2, stride 2), which on a GPU runs
PyTorch's pooling kernel that also writes the int64 index of every maximum: for tiny's first pool, 8 frames
× 128² × 192 indices (200 MB) nobody reads. :class:`IndexFreeMaxPool` takes the same maxima over a reshaped
view (exact: a maximum is a maximum).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class IndexFreeMaxPool(torch.nn.MaxPool2d):
    """``nn.MaxPool2d`` whose non-overlapping, unpadded pools take maxima over a reshaped view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = _pair(self.kernel_size), _pair(self.stride or self.kernel_size)
        plain = (k == s and _pair(self.padding) == (0, 0) and _pair(self.dilation) == (1, 1)
                 and not self.ceil_mode and not self.return_indices and x.dim() == 4)
        if not plain:
            return super().forward(x)
        batch, channels, height, width = x.shape
        rows, columns = height // k[0], width // k[1]
        tokens = x[:, :, : rows * k[0], : columns * k[1]].permute(0, 2, 3, 1)  # (B, H, W, C): Hiera's own layout
        pooled = tokens.reshape(batch, rows, k[0], columns, k[1], channels).amax(dim=(2, 4))
        return pooled.permute(0, 3, 1, 2)


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def use_index_free_max_pools(module: torch.nn.Module) -> int:
    """Make every plain ``nn.MaxPool2d`` in ``module`` an :class:`IndexFreeMaxPool` (same settings, same
    references: Hiera's blocks share theirs with their attention); returns how many."""
    pools = [m for m in module.modules() if type(m) is torch.nn.MaxPool2d]
    for pool in pools:
        pool.__class__ = IndexFreeMaxPool
    return len(pools)


def fused_levels(encoder: Any, predictor: Any) -> tuple[int, ...]:
    """The neck levels whose lateral convolution and the mask decoder's projection fold into one."""
    if not getattr(predictor, "use_high_res_features_in_sam", False):
        return ()
    neck = encoder.neck
    top_down = set(neck.fpn_top_down_levels)
    levels = []
    for level in (0, 1):
        projection = getattr(predictor.sam_mask_decoder, f"conv_s{level}", None)
        lateral = _conv(_lateral(neck, level))
        if level in top_down or level - 1 in top_down or lateral is None or not _one_by_one(projection):
            return tuple(levels)
        levels.append(level)
    return tuple(levels)


def _lateral(neck: Any, level: int) -> torch.nn.Module:
    """The neck's lateral block for Hiera's stage output ``level`` (its convs run coarsest first)."""
    return neck.convs[len(neck.convs) - 1 - level]


def _conv(block: torch.nn.Module) -> torch.nn.Conv2d | None:
    convs = list(block.children()) if isinstance(block, torch.nn.Sequential) else [block]
    return convs[0] if len(convs) == 1 and _one_by_one(convs[0]) else None


def _one_by_one(conv: Any) -> bool:
    return (isinstance(conv, torch.nn.Conv2d) and _pair(conv.kernel_size) == (1, 1) and _pair(conv.stride) == (1, 1)
            and _pair(conv.padding) == (0, 0) and conv.groups == 1 and conv.bias is not None)


def folded_projection(lateral: torch.nn.Conv2d, projection: torch.nn.Conv2d,
                      rounded_to: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``projection ∘ lateral`` (two 1×1 convolutions), multiplied out in float32 (never under
    autocast) from the parameters as the convolutions would use them (``rounded_to``: autocast's dtype, which
    float32 parameters are cast to first), stored in the projection's dtype."""
    def used(t: torch.Tensor) -> torch.Tensor:
        return (t.to(rounded_to) if rounded_to is not None else t).float()

    with torch.autocast(projection.weight.device.type, enabled=False):
        outer = used(projection.weight).flatten(1)
        weight = outer @ used(lateral.weight).flatten(1)
        bias = outer @ used(lateral.bias) + used(projection.bias)
    dtype = projection.weight.dtype
    return weight.to(dtype)[:, :, None, None].contiguous(), bias.to(dtype)


class HighResNeck:
    """``forward_image``'s features and position encodings from Hiera's stage outputs, the
    :func:`fused_levels` each in one convolution; other levels through SAM2's neck as it runs them."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.encoder = predictor.image_encoder
        self.levels = fused_levels(self.encoder, predictor)
        self._folded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._version: tuple = ()

    def __call__(self, outputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        neck = self.encoder.neck
        if self.levels:
            features, positions = self._with_folded_levels(outputs)
        else:
            features, positions = (list(parts) for parts in neck(outputs))
            if self.predictor.use_high_res_features_in_sam:  # projected once per frame, as forward_image does
                decoder = self.predictor.sam_mask_decoder
                features[0], features[1] = decoder.conv_s0(features[0]), decoder.conv_s1(features[1])
        scalp = int(getattr(self.encoder, "scalp", 0))  # the coarsest levels: never the projected ones
        if scalp > 0:
            features, positions = features[:-scalp], positions[:-scalp]
        return features, positions

    def _with_folded_levels(self, outputs: list[torch.Tensor]) -> tuple[list[Any], list[Any]]:
        neck = self.encoder.neck
        features: list[Any] = [None] * len(outputs)
        positions: list[Any] = [None] * len(outputs)
        coarse = [i for i in range(len(neck.convs) - 1, -1, -1) if i not in self.levels]
        for level, (feature, position) in zip(coarse, _neck_levels(neck, outputs, coarse), strict=True):
            features[level], positions[level] = feature, position
        folded = self._folded_weights(outputs[0].device.type)
        for level in self.levels:
            feature = F.conv2d(outputs[level], *folded[level])
            features[level], positions[level] = feature, neck.position_encoding(feature).to(feature.dtype)
        return features, positions

    def _folded_weights(self, device_type: str) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The folded weights per level, made again if either convolution's weights or the autocast dtype changed."""
        decoder = self.predictor.sam_mask_decoder
        pairs = [(_conv(_lateral(self.encoder.neck, i)), getattr(decoder, f"conv_s{i}")) for i in self.levels]
        rounded_to = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        version = (rounded_to, *((c.weight.data_ptr(), c.weight._version, c.weight.dtype) for p in pairs for c in p))
        if version != self._version:
            self._folded = {i: folded_projection(*pair, rounded_to) for i, pair in zip(self.levels, pairs, strict=True)}
            self._version = version
        return self._folded


class FoldedForwardImage:
    """``SAM2Base.forward_image`` (the image encoder, then the mask decoder's high-resolution projections)
    with :class:`HighResNeck`: the same outputs, the finest levels each in one convolution."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.neck = HighResNeck(predictor)

    def __call__(self, img_batch: torch.Tensor) -> dict:
        features, positions = self.neck(self.predictor.image_encoder.trunk(img_batch))
        return {"vision_features": features[-1], "vision_pos_enc": positions, "backbone_fpn": features}


def use_folded_neck(predictor: Any) -> bool:
    """Give ``predictor`` a :class:`FoldedForwardImage` as its ``forward_image`` (where any level folds)."""
    if not fused_levels(predictor.image_encoder, predictor) or isinstance(predictor.forward_image, FoldedForwardImage):
        return False
    predictor.forward_image = FoldedForwardImage(predictor)
    return True


def _neck_levels(neck: Any, outputs: list[torch.Tensor], levels: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``FpnNeck.forward`` for ``levels`` only (coarsest first, as it runs them): their features and encodings."""
    done = []
    previous = None
    for level in levels:
        lateral = _lateral(neck, level)(outputs[level])
        if level in neck.fpn_top_down_levels and previous is not None:
            top_down = F.interpolate(previous.to(dtype=torch.float32), scale_factor=2.0, mode=neck.fpn_interp_model,
                                     align_corners=None if neck.fpn_interp_model == "nearest" else False,
                                     antialias=False)
            previous = lateral + top_down
            if neck.fuse_type == "avg":
                previous /= 2
        else:
            previous = lateral
        done.append((previous, neck.position_encoding(previous).to(previous.dtype)))
    return done
