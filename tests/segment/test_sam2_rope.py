"""SAM2's rotary encoding in real arithmetic computes what SAM2's complex one does."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sbl.segment.sam2_rope import real_rope_attention_forward, rotate_pairs, use_real_rope  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Tracker  # noqa: E402

from .sam2_helpers import tiny_params  # noqa: E402


def test_pair_rotation_is_complex_multiplication():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=gen)
    angles = torch.rand(5, 4, generator=gen) * 6.3
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * torch.polar(
        torch.ones_like(angles), angles)).flatten(-2)
    torch.testing.assert_close(rotate_pairs(x, angles.cos(), angles.sin()), expected)
    half = rotate_pairs(x.to(torch.bfloat16), angles.cos(), angles.sin())
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize(("cross", "pointers"), [(False, 0), (True, 0), (True, 4)])
def test_real_rope_attention_matches_sam2(cross, pointers):
    from sam2.modeling.sam.transformer import RoPEAttention

    torch.manual_seed(1)
    kv_dim = 8 if cross else 32
    module = RoPEAttention(embedding_dim=32, num_heads=1, downsample_rate=1, rope_k_repeat=cross,
                           feat_sizes=(4, 4), kv_in_dim=kv_dim).eval()
    keys = (3 * 16 if cross else 16) + pointers
    q, k, v = torch.randn(2, 16, 32), torch.randn(2, keys, kv_dim), torch.randn(2, keys, kv_dim)
    with torch.no_grad():
        expected = module(q, k, v, num_k_exclude_rope=pointers)
        got = real_rope_attention_forward(module, q, k, v, num_k_exclude_rope=pointers)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_real_rope_reaches_every_memory_attention_layer():
    predictor = Sam2Tracker(tiny_params()).load()
    layers = predictor.memory_attention.layers
    assert use_real_rope(predictor) == 2 * len(layers)
    assert layers[0].cross_attn_image.forward.__func__ is real_rope_attention_forward
    assert layers[0].self_attn.forward.__func__ is real_rope_attention_forward
