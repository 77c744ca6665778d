"""Hiera's layer norms through our Triton kernel (run by Triton's interpreter on the CPU) against PyTorch's.

float16 stands in for bf16 as the autocast dtype: the interpreter's bfloat16 conversion is not faithful.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("triton")

from napari_sbl.segment.sam2_build import build_predictor  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Params, tiny_test_overrides  # noqa: E402

from .sam2_helpers import randomise_layer_norms, sam21_wide_memory_attention, sam21_wide_params  # noqa: E402


@pytest.fixture(scope="module")
def norms():
    assert os.environ.get("TRITON_INTERPRET") == "1"  # tests/conftest.py
    import napari_sbl.segment.sam2_layer_norm as module

    return module


def reference(x, norm, dtype):
    exact = torch.nn.functional.layer_norm(x.double(), norm.normalized_shape, norm.weight.double(),
                                           norm.bias.double(), norm.eps)
    return exact.to(dtype)


@pytest.mark.parametrize("columns, rows", [(96, 37), (144, 130), (1152, 9), (7, 3)])
def test_rows_match_layer_norm(norms, columns, rows):
    generator = torch.Generator().manual_seed(columns)
    norm = torch.nn.LayerNorm(columns, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(columns, generator=generator))
        norm.bias.copy_(torch.randn(columns, generator=generator))
    x = 3 + 2 * torch.randn(2, rows, columns, generator=generator)  # an offset mean, as in a residual stream
    out = norms.layer_norm_rows(x, norm.weight, norm.bias, norm.eps, torch.float32)
    assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(x, norm, torch.float32), rtol=1e-5, atol=1e-5)
    half = norms.layer_norm_rows(x.half(), norm.weight, norm.bias, norm.eps, torch.float16)
    torch.testing.assert_close(half, reference(x.half().float(), norm, torch.float16), rtol=2e-3, atol=2e-3)


def test_non_contiguous_input_and_no_rows(norms):
    norm = torch.nn.LayerNorm(96)
    x = torch.randn(96, 10).t()  # (10, 96), strided
    torch.testing.assert_close(norms.layer_norm_rows(x, norm.weight, norm.bias, norm.eps, torch.float32),
                               reference(x, norm, torch.float32), rtol=1e-5, atol=1e-5)
    assert norms.layer_norm_rows(torch.zeros(0, 96), norm.weight, norm.bias, norm.eps, torch.float32).shape == (0, 96)


def test_module_writes_the_autocast_dtype_only_under_autocast(norms):
    norm = torch.nn.LayerNorm(96, eps=1e-6)
    randomise_layer_norms(norm, eps=1e-3)
    fast = norms.AutocastLayerNorm(norm, kernel_everywhere=True)
    assert fast.weight is norm.weight and set(fast.state_dict()) == set(norm.state_dict())
    x = torch.randn(4, 5, 96)
    with torch.no_grad():
        assert torch.equal(fast(x), norm(x))  # no autocast: the module it replaced
        with torch.autocast("cpu", dtype=torch.float16):
            out = fast(x)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, reference(x, norm, torch.float16), rtol=2e-3, atol=2e-3)
    assert norms.AutocastLayerNorm(norm)(x).dtype == torch.float32  # CPU without the flag: PyTorch's
    with torch.autocast("cpu", dtype=torch.float16):
        assert fast(x.requires_grad_()).requires_grad  # gradients wanted: PyTorch's, which has them


def test_a_kernel_that_does_not_run_falls_back_once(norms, monkeypatch, caplog):
    norm = torch.nn.LayerNorm(32)
    fast = norms.AutocastLayerNorm(norm, kernel_everywhere=True)
    calls = []

    def failing(*args):
        calls.append(args)
        raise RuntimeError("no ptxas")

    monkeypatch.setattr(norms, "layer_norm_rows", failing)
    x = torch.randn(3, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        first, second = fast(x), fast(x)
    assert len(calls) == 1 and fast.kernel_failed and "no ptxas" in caplog.text
    assert torch.equal(first, second)


def test_replacing_twice_replaces_nothing_more(norms):
    module = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    assert norms.use_autocast_layer_norms(module) == 2
    assert norms.use_autocast_layer_norms(module) == 0
    with torch.no_grad():
        module(torch.randn(2, 8))


def test_hiera_with_our_norms_gives_the_same_features(norms):
    params = Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                        config_overrides=tiny_test_overrides(image_size=128))
    trunk = build_predictor(params, None, torch.device("cpu")).image_encoder.trunk.eval()
    randomise_layer_norms(trunk, eps=1e-3)
    blocks = len(trunk.blocks)
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        before = trunk(image)
        assert norms.use_autocast_layer_norms(trunk, kernel_everywhere=True) == 2 * blocks
        after = trunk(image)
    assert all(isinstance(block.norm1, norms.AutocastLayerNorm) for block in trunk.blocks)
    for ours, theirs in zip(after, before, strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        error = float((ours.float() - theirs.float()).norm() / theirs.float().norm())
        assert error < 1e-3  # each linear multiplies the same rounded values (0 here)


def test_memory_attention_with_our_norms_gives_the_same_output(norms):
    """SAM2.1 adds no positions to the outputs of a layer's three norms, so all three are replaced, and the
    linears behind them multiply the same rounded values; the final norm (read by the mask decoder) stays."""
    memory_attention = sam21_wide_memory_attention()
    randomise_layer_norms(memory_attention, eps=1e-3)
    generator = torch.Generator().manual_seed(2)
    curr, curr_pos = torch.randn(64, 2, 256, generator=generator), torch.randn(64, 2, 256, generator=generator)
    memory, memory_pos = torch.randn(136, 2, 64, generator=generator), torch.randn(136, 2, 64, generator=generator)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        before = memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=8)
        assert norms.use_memory_attention_layer_norms(memory_attention, kernel_everywhere=True) == \
            3 * len(memory_attention.layers)
        after = memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=8)
    assert type(memory_attention.norm) is torch.nn.LayerNorm
    error = float((after.float() - before.float()).norm() / before.float().norm())
    assert error < 1e-3


def test_memory_attention_norms_with_positions_added_are_kept(norms):
    layer = torch.nn.Module()
    layer.norm1, layer.norm2, layer.norm3 = (torch.nn.LayerNorm(8) for _ in range(3))
    layer.pos_enc_at_attn, layer.pos_enc_at_cross_attn_queries = True, False
    holder = torch.nn.Module()
    holder.layers = torch.nn.ModuleList([layer])
    assert norms.use_memory_attention_layer_norms(holder) == 2
    assert type(layer.norm1) is torch.nn.LayerNorm and isinstance(layer.norm2, norms.AutocastLayerNorm)


def test_build_fuses_the_trunk_only_when_it_is_not_compiled(norms):
    from napari_sbl.segment.sam2_build import _fuse_layer_norms
    from napari_sbl.segment.sam2_hiera_blocks import WindowedBlock

    params = sam21_wide_params()
    trunk_norms = layer_norms = None
    for trunk, windows in ((True, True), (False, True), (True, False)):
        predictor = build_predictor(params, None, torch.device("cpu"))
        replaced = _fuse_layer_norms(predictor, torch.device("cpu"), trunk=trunk, windows=windows)
        windowed = [b for b in predictor.image_encoder.trunk.blocks if isinstance(b, WindowedBlock)]
        assert bool(windowed) == (trunk and windows)
        in_trunk = [m for m in predictor.image_encoder.trunk.modules() if isinstance(m, norms.AutocastLayerNorm)]
        in_memory = [m for m in predictor.memory_attention.modules() if isinstance(m, norms.AutocastLayerNorm)]
        if trunk:
            trunk_norms, layer_norms = len(in_trunk), len(in_memory)
            assert trunk_norms == 2 * len(predictor.image_encoder.trunk.blocks) and layer_norms > 0
        if not trunk:
            assert not in_trunk and len(in_memory) == layer_norms
        assert replaced == len(in_trunk) + len(in_memory)
