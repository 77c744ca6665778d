"""SAM2's sine position encodings as expanded views of one cached encoding: SAM2's values, without copies."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sbl.segment.sam2_positions import ExpandedSinePositions, use_expanded_positions  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Tracker  # noqa: E402

from .sam2_helpers import tiny_params  # noqa: E402


@pytest.fixture(scope="module")
def predictor():
    return Sam2Tracker(tiny_params(bf16_weights=False)).load()


def test_swaps_the_neck_and_memory_encoder_encodings_once(predictor):
    swapped = copy.deepcopy(predictor)
    assert use_expanded_positions(swapped) == 2
    assert use_expanded_positions(swapped) == 0
    assert isinstance(swapped.image_encoder.neck.position_encoding, ExpandedSinePositions)
    assert isinstance(swapped.memory_encoder.position_encoding, ExpandedSinePositions)
    assert swapped.state_dict().keys() == predictor.state_dict().keys()


@pytest.mark.parametrize("autocast", [False, True])
def test_image_features_and_encodings_equal_sam2s(predictor, autocast):
    swapped = copy.deepcopy(predictor)
    use_expanded_positions(swapped)
    images = torch.randn(3, 3, swapped.image_size, swapped.image_size, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected = predictor.forward_image(images)
        first = swapped.forward_image(images)
        second = swapped.forward_image(images[:2])  # another batch size: the same cached maps, expanded
    for got, batch in ((first, 3), (second, 2)):
        for level, want in zip(got["vision_pos_enc"], expected["vision_pos_enc"], strict=True):
            assert level.shape == (batch, *want.shape[1:]) and level.dtype == want.dtype
            assert torch.equal(level, want[:batch])
            assert level.stride(0) == 0  # a view: no copy per frame
    for level, want in zip(first["backbone_fpn"], expected["backbone_fpn"], strict=True):
        assert torch.equal(level, want)


def test_memory_encoder_encoding_equals_sam2s(predictor):
    swapped = copy.deepcopy(predictor)
    use_expanded_positions(swapped)
    generator = torch.Generator().manual_seed(6)
    size = swapped.image_size // 16
    features = torch.randn(2, swapped.memory_encoder.pix_feat_proj.in_channels, size, size, generator=generator)
    masks = torch.randn(2, 1, swapped.image_size, swapped.image_size, generator=generator)
    with torch.inference_mode():
        expected = predictor.memory_encoder(features, masks, skip_mask_sigmoid=True)
        got = swapped.memory_encoder(features, masks, skip_mask_sigmoid=True)
    assert torch.equal(got["vision_features"], expected["vision_features"])
    assert torch.equal(got["vision_pos_enc"][0], expected["vision_pos_enc"][0])
