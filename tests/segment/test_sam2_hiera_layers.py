"""Hiera's attention kernel and fused GELU MLP (Triton's interpreter, float16 as the autocast dtype) against
PyTorch's attention and SAM2's own modules; bf16 on a GPU is checked by benchmarks/sam2_layer_norm_check.py."""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from napari_sbl.segment.sam2_build import build_predictor  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Params, tiny_test_overrides  # noqa: E402


@pytest.fixture(scope="module")
def layers():
    assert os.environ.get("TRITON_INTERPRET") == "1"  # tests/conftest.py
    import napari_sbl.segment.sam2_hiera_layers as module

    return module


@pytest.mark.parametrize("head_dim, split", [(72, (64, 16)), (96, (64, 32)), (56, (32, 32)), (64, (64, 0)),
                                             (8, (16, 0))])
def test_heads_are_split_into_a_power_of_two_and_a_padded_rest(layers, head_dim, split):
    assert layers.head_split(head_dim) == split


@pytest.mark.parametrize("batch, queries, keys, heads, head_dim", [
    (3, 20, 20, 2, 72),  # large's head width, a key tail shorter than a block
    (2, 49, 49, 1, 96),  # tiny's, a 7 × 7 window
    (2, 16, 64, 4, 56),  # base+'s, pooled queries against a window's keys
    (1, 70, 130, 2, 64),  # a power of two: no second part; several key blocks
    (1, 200, 200, 2, 72),  # several query blocks
])
def test_kernel_matches_pytorchs_attention_on_qkv_views(layers, batch, queries, keys, heads, head_dim):
    generator = torch.Generator().manual_seed(queries * keys)
    qkv = torch.randn(batch, keys, 3, heads, head_dim, generator=generator).half()
    q, k, v = torch.unbind(qkv, 2)
    q = q[:, :queries]
    ours = layers.heads_attention(q, k, v)
    expected = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    assert ours.shape == (batch, queries, heads, head_dim) and ours.is_contiguous() and ours.dtype == q.dtype
    torch.testing.assert_close(ours.float(), expected, rtol=2e-3, atol=2e-3)


def test_kernel_refuses_heads_that_are_not_side_by_side(layers):
    q = torch.randn(1, 8, 2, 16).half().transpose(1, 2)  # rows and heads swapped: heads not side by side
    with pytest.raises(ValueError, match="side by side"):
        layers.heads_attention(q, q, q)


def small_trunk():
    """A shrunken tiny trunk with q-pooling, windowed and global blocks, heads 36 channels wide (32 + 4 in a
    16-wide slot)."""
    overrides = [o for o in tiny_test_overrides(image_size=128, embed_dim=36)
                 if ".stages=" not in o and ".global_att_blocks=" not in o]
    overrides += ["++model.image_encoder.trunk.stages=[1,1,2,1]", "++model.image_encoder.trunk.global_att_blocks=[3]"]
    params = Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                        config_overrides=tuple(overrides))
    return build_predictor(params, None, torch.device("cpu")).image_encoder.trunk.eval()


def test_trunk_with_our_attention_and_mlps_gives_the_same_features(layers, monkeypatch, caplog):
    trunk = small_trunk()
    ours = copy.deepcopy(trunk)
    attentions = layers.use_hiera_attention(ours, kernel_everywhere=True)
    mlps = layers.use_gelu_mlps(ours, kernel_everywhere=True)
    assert attentions == mlps == len(trunk.blocks)
    assert layers.use_hiera_attention(ours) == layers.use_gelu_mlps(ours) == 0  # already changed
    assert any(block.attn.q_pool is not None for block in ours.blocks)  # pooled queries go through the kernel too
    assert any(block.window_size == 0 for block in ours.blocks)  # and a global block
    assert {block.attn.dim_out // block.attn.num_heads for block in ours.blocks} == {36}
    calls = []
    kernel = layers.heads_attention
    monkeypatch.setattr(layers, "heads_attention", lambda *args: calls.append(args[1].shape[1]) or kernel(*args))
    monkeypatch.setattr(layers.HieraAttention, "kernel_max_keys", 32)  # the global block's 64 keys go to PyTorch
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        before, after = trunk(image), ours(image)
    assert len(calls) == attentions - 1 and max(calls) <= 32
    assert not any(getattr(m, "kernel_failed", False) for m in ours.modules())  # no fallback
    assert not [r for r in caplog.records if r.name.endswith("sam2_kernel_modules")]
    for mine, theirs in zip(after, before, strict=True):
        assert mine.dtype == theirs.dtype
        assert float((mine.float() - theirs.float()).norm() / theirs.float().norm()) < 3e-3


def test_fused_mlp_is_a_gelu_of_the_first_layer(layers, caplog):
    """On the CPU PyTorch's fused op computes the exact GELU; on CUDA cuBLAS's epilogue its tanh form (within
    4.8e-4; the GPU check, benchmarks/sam2_hiera_check.py, measures the encoder's features with it)."""
    mlp = small_trunk().blocks[0].mlp
    x = torch.randn(2, 5, 7, mlp.layers[0].in_features)
    with torch.no_grad():
        first, second = mlp.layers
        expected = second(F.gelu(first(x)))
        exact = mlp(x)
        layers.use_gelu_mlps(mlp, kernel_everywhere=True)
        assert torch.equal(mlp(x), exact)  # outside autocast: SAM2's exact GELU
        with torch.autocast("cpu", dtype=torch.float16):
            fused = mlp(x)
    assert fused.shape == x.shape and fused.dtype == torch.float16 and not mlp.kernel_failed
    assert not [r for r in caplog.records if r.name.endswith("sam2_kernel_modules")]
    torch.testing.assert_close(fused.float(), expected, rtol=1e-2, atol=1e-2)


def test_an_attention_kernel_that_does_not_run_falls_back_to_sam2s(layers, monkeypatch, caplog):
    block = small_trunk().blocks[0]
    x = torch.randn(1, 8, 8, block.dim)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        expected = block.attn(x)
        layers.use_hiera_attention(block, kernel_everywhere=True)

        def failing(*args):
            raise RuntimeError("no C compiler for Triton's launcher")

        monkeypatch.setattr(layers, "heads_attention", failing)
        first, second = block.attn(x), block.attn(x)
    assert block.attn.kernel_failed and "no C compiler" in caplog.text
    assert torch.equal(first, expected) and torch.equal(second, expected)


@pytest.mark.parametrize("attention, mlp", [(True, True), (True, False), (False, True), (False, False)])
def test_build_changes_the_layers_its_flags_ask_for(layers, attention, mlp):
    from napari_sbl.segment.sam2_build import _fuse_hiera_layers

    params = Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                        config_overrides=tiny_test_overrides(image_size=128))
    predictor = build_predictor(params, None, torch.device("cpu"))
    blocks = len(predictor.image_encoder.trunk.blocks)
    changed = _fuse_hiera_layers(predictor, torch.device("cpu"), attention, mlp)
    assert changed == (blocks if attention else 0, blocks if mlp else 0)
    modules = list(predictor.modules())
    assert sum(isinstance(m, layers.HieraAttention) for m in modules) == changed[0]
    assert sum(isinstance(m, layers.GeluMlp) for m in modules) == changed[1]  # the mask decoder's MLPs are not GELU
