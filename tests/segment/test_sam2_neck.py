"""The image encoder's folded high-resolution levels and index-free max pools give SAM2's own values."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

import torch
import torch.nn.functional as F

from napari_sbl.segment.sam2_neck import (
    FoldedForwardImage,
    HighResNeck,
    IndexFreeMaxPool,
    fused_levels,
    use_index_free_max_pools,
)
from napari_sbl.segment.sam2_tracker import Sam2Tracker

from .sam2_helpers import tiny_params


@pytest.mark.parametrize("shape", [(2, 5, 8, 12), (1, 3, 9, 7), (3, 4, 2, 2)])
@pytest.mark.parametrize("kernel", [2, 3])
def test_index_free_pools_take_the_same_maxima(shape, kernel):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(shape[0], shape[2], shape[3], shape[1], generator=generator)  # Hiera's (B, H, W, C)
    x = tokens.permute(0, 3, 1, 2)  # as do_pool hands it over: a channels-last view
    reference = torch.nn.MaxPool2d(kernel, kernel)
    pool = torch.nn.MaxPool2d(kernel, kernel)
    assert use_index_free_max_pools(torch.nn.Sequential(pool)) == 1 and isinstance(pool, IndexFreeMaxPool)
    if min(shape[2:]) < kernel:
        with pytest.raises(RuntimeError):
            reference(x)
        return
    assert torch.equal(pool(x), reference(x))
    assert torch.equal(pool(x.contiguous()), reference(x))


def test_overlapping_or_padded_pools_keep_pytorchs_forward():
    x = torch.randn(1, 2, 7, 7)
    for settings in ({"kernel_size": 3, "stride": 2}, {"kernel_size": 2, "stride": 2, "padding": 1},
                     {"kernel_size": 2, "stride": 2, "ceil_mode": True}):
        pool = IndexFreeMaxPool(**settings)
        assert torch.equal(pool(x), torch.nn.MaxPool2d(**settings)(x))


def test_folded_levels_give_forward_images_features():
    predictor = Sam2Tracker(tiny_params(bf16_weights=False)).load()
    assert any(isinstance(m, IndexFreeMaxPool) for m in predictor.image_encoder.modules())
    images = torch.randn(2, 3, predictor.image_size, predictor.image_size, generator=torch.Generator().manual_seed(1))
    neck = HighResNeck(predictor)
    assert neck.levels == fused_levels(predictor.image_encoder, predictor) == (0, 1)
    with torch.inference_mode():
        expected = type(predictor).forward_image(predictor, images)  # SAM2's own, not the folded one it now has
        features, positions = neck(predictor.image_encoder.trunk(images))
    assert len(features) == len(expected["backbone_fpn"]) and len(positions) == len(expected["vision_pos_enc"])
    for ours, theirs in zip(features, expected["backbone_fpn"], strict=True):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(positions, expected["vision_pos_enc"], strict=True):
        torch.testing.assert_close(ours, theirs)


def test_folded_levels_under_autocast_are_as_close_to_float32_as_sam2s():
    predictor = Sam2Tracker(tiny_params()).load()  # bf16 weights, as tracking runs
    assert isinstance(predictor.forward_image, FoldedForwardImage)
    images = torch.randn(2, 3, predictor.image_size, predictor.image_size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        stages = predictor.image_encoder.trunk(images)
        ours = predictor.forward_image(images)["backbone_fpn"]
        theirs = type(predictor).forward_image(predictor, images)["backbone_fpn"]
    encoder, decoder = predictor.image_encoder, predictor.sam_mask_decoder
    for level in (0, 1):
        lateral = encoder.neck.convs[len(encoder.neck.convs) - 1 - level].conv
        projection = getattr(decoder, f"conv_s{level}")
        with torch.inference_mode():
            mapped = F.conv2d(stages[level].float(), lateral.weight.float(), lateral.bias.float())
            truth = F.conv2d(mapped, projection.weight.float(), projection.bias.float())
        ours_error, sam2_error = ((x[level].float() - truth).norm() / truth.norm() for x in (ours, theirs))
        assert ours[level].dtype == theirs[level].dtype and ours_error <= 1.5 * sam2_error, (level, ours_error)
    for ours_level, theirs_level in zip(ours[2:], theirs[2:], strict=True):
        assert torch.equal(ours_level, theirs_level)


def test_an_unoptimised_predictor_is_sam2s_as_built():
    predictor = Sam2Tracker(tiny_params(optimise=False)).load()
    assert "forward_image" not in vars(predictor)
    assert all(type(m) is not IndexFreeMaxPool for m in predictor.modules())
    assert all(p.dtype == torch.float32 for p in predictor.parameters())


def test_new_weights_are_folded_again():
    predictor = Sam2Tracker(tiny_params(bf16_weights=False)).load()
    neck = HighResNeck(predictor)
    images = torch.randn(1, 3, predictor.image_size, predictor.image_size)
    with torch.inference_mode():
        outputs = predictor.image_encoder.trunk(images)
        before = neck(outputs)[0][0].clone()
    with torch.no_grad():
        predictor.sam_mask_decoder.conv_s0.weight.mul_(2.0)
        predictor.sam_mask_decoder.conv_s0.bias.mul_(2.0)
    with torch.inference_mode():
        after = neck(outputs)[0][0]
    torch.testing.assert_close(after, 2 * before, rtol=1e-4, atol=1e-5)
