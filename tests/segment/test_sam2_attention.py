"""Split-KV attention: the merged parts are the attention over all keys; SAM2's RoPE attention
routed through it computes what SAM2's own forward computes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import torch.nn.functional as F  # noqa: E402

from napari_sbl.segment.sam2_attention import (  # noqa: E402
    kv_splits,
    merge_parts,
    rope_attention_forward,
    split_kv_attention,
    use_split_kv_attention,
)
from napari_sbl.segment.sam2_tracker import Sam2Tracker  # noqa: E402

from .sam2_helpers import BlobVideo, clicks, tiny_params, upstream_logits  # noqa: E402


@pytest.mark.parametrize("splits", [2, 4, 7])
def test_split_keys_merge_to_full_attention(splits):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 40, 16, generator=gen)
    k = torch.randn(2, 3, 56, 16, generator=gen) * 3  # peaked softmaxes: the merge must weight parts right
    v = torch.randn(2, 3, 56, 16, generator=gen)
    expected = F.scaled_dot_product_attention(q, k, v)
    got = split_kv_attention(q, k, v, splits=splits)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_keys_that_do_not_divide_fall_back_to_one_part():
    q, k, v = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 10, 8), torch.randn(1, 1, 10, 8)
    torch.testing.assert_close(split_kv_attention(q, k, v, splits=3), F.scaled_dot_product_attention(q, k, v))


def test_merge_of_one_dominant_part_is_that_part():
    outputs = torch.stack([torch.full((1, 1, 2, 4), 1.0), torch.full((1, 1, 2, 4), 5.0)])
    lse = torch.stack([torch.full((1, 1, 2), 0.0), torch.full((1, 1, 2), 60.0)])
    torch.testing.assert_close(merge_parts(outputs, lse), torch.full((1, 1, 2, 4), 5.0))


def test_splits_fill_one_wave_of_multiprocessors():
    # SAM2 memory attention: 4096 queries (32 blocks of 128), 7 memories of 4096 keys + 16 pointers of 4
    keys = 7 * 4096 + 64
    assert kv_splits(2, 1, 4096, keys, 132) == 2  # 64 thread blocks → 128
    assert kv_splits(1, 1, 4096, keys, 132) == 4  # 32 → 128
    assert kv_splits(5, 1, 4096, keys, 132) == 1  # 160 blocks fill the GPU already
    assert kv_splits(1, 1, 4096, 4097, 132) == 1  # odd key count: no equal parts
    assert kv_splits(1, 1, 128, 512, 132) == 2  # parts keep at least 256 keys


def test_sam2_rope_attention_routed_through_split_kv_matches_sam2():
    from sam2.modeling.sam.transformer import RoPEAttention

    torch.manual_seed(0)
    cross = RoPEAttention(embedding_dim=32, num_heads=1, downsample_rate=1, rope_k_repeat=True,
                          feat_sizes=(4, 4), kv_in_dim=8).eval()
    q, k, v = torch.randn(2, 16, 32), torch.randn(2, 3 * 16 + 4, 8), torch.randn(2, 3 * 16 + 4, 8)
    with torch.no_grad():
        expected = cross(q, k, v, num_k_exclude_rope=4)
        got = rope_attention_forward(cross, q, k, v, num_k_exclude_rope=4)
    torch.testing.assert_close(got, expected)


def test_tracker_routes_memory_attention_through_split_kv_and_tracks_the_same_off_cuda():
    video = BlobVideo(8)
    prompts = clicks(video, 4)
    split = Sam2Tracker(tiny_params()).load()
    plain = Sam2Tracker(tiny_params(split_kv_attention=False)).load()
    assert split.memory_attention.layers[0].cross_attn_image.forward.__func__ is rope_attention_forward
    assert "forward" not in vars(plain.memory_attention.layers[0].cross_attn_image)
    expected, got = (upstream_logits(predictor, video, prompts) for predictor in (plain, split))
    for frame_index in range(8):
        torch.testing.assert_close(got[frame_index], expected[frame_index])
    assert use_split_kv_attention(plain) == 2 * len(plain.memory_attention.layers)  # self and cross, every layer
