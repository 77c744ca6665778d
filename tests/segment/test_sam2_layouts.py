"""SAM2's token transformers fed contiguous tokens: the same outputs, in the same layout, as SAM2's own."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sbl.segment.sam2_layouts import (  # noqa: E402
    BatchFirstMemoryAttention,
    TokenMajorTwoWayTransformer,
    use_contiguous_layouts,
)
from napari_sbl.segment.sam2_tracker import Sam2Tracker  # noqa: E402

from .sam2_helpers import tiny_params  # noqa: E402


@pytest.fixture(scope="module")
def predictor():
    return Sam2Tracker(tiny_params(bf16_weights=False)).load()


def relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return float((value.float() - exact.float()).norm() / exact.float().norm())


def assert_same(got: torch.Tensor, expected: torch.Tensor, autocast: bool) -> None:
    assert got.shape == expected.shape and got.stride() == expected.stride() and got.dtype == expected.dtype
    if autocast:  # a bf16 matmul may accumulate differently on another layout
        assert relative_error(got, expected) < 1e-2  # bf16 keeps 8 bits: a few ulps
    else:
        assert torch.equal(got, expected)


def test_swapping_changes_both_transformers_once(predictor):
    swapped = copy.deepcopy(predictor)
    assert use_contiguous_layouts(swapped) == 2
    assert use_contiguous_layouts(swapped) == 0
    assert isinstance(swapped.memory_attention, BatchFirstMemoryAttention)
    assert isinstance(swapped.sam_mask_decoder.transformer, TokenMajorTwoWayTransformer)
    assert swapped.state_dict().keys() == predictor.state_dict().keys()


@pytest.mark.parametrize("autocast", [False, True])
def test_memory_attention_gives_sam2s_output(predictor, autocast):
    original = predictor.memory_attention
    laid_out = copy.deepcopy(original)
    laid_out.__class__ = BatchFirstMemoryAttention
    generator = torch.Generator().manual_seed(3)
    tokens, width, memory_tokens = 64, original.d_model, 3 * 64 + 8
    memory_width = original.layers[0].cross_attn_image.kv_in_dim
    curr, curr_pos = (torch.randn(tokens, 2, width, generator=generator) for _ in range(2))
    memory, memory_pos = (torch.randn(memory_tokens, 2, memory_width, generator=generator) for _ in range(2))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected = original(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=8)
        got = laid_out([curr], memory, [curr_pos], memory_pos, num_obj_ptr_tokens=8)
    assert_same(got, expected, autocast)


@pytest.mark.parametrize("autocast", [False, True])
def test_mask_decoder_transformer_gives_sam2s_output(predictor, autocast):
    original = predictor.sam_mask_decoder.transformer
    laid_out = copy.deepcopy(original)
    laid_out.__class__ = TokenMajorTwoWayTransformer
    generator = torch.Generator().manual_seed(5)
    width = original.embedding_dim
    image, image_pe = (torch.randn(2, width, 8, 8, generator=generator) for _ in range(2))
    points = torch.randn(2, 7, width, generator=generator)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected = original(image, image_pe, points)
        got = laid_out(image, image_pe, points)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        if autocast:
            assert relative_error(ours, theirs) < 1e-2
        else:
            assert torch.equal(ours, theirs)
    # the decoder turns the image tokens back into a map with a view: it must still work on ours
    assert got[1].transpose(1, 2).view(2, width, 8, 8).shape == (2, width, 8, 8)
