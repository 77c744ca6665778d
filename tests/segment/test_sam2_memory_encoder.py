"""SAM2's memory encoder with our channel-norm kernel (Triton's interpreter, float16 as the autocast dtype)
against SAM2's own modules; bf16 on a GPU is checked by benchmarks/sam2_hiera_check.py."""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402
from sam2.modeling.sam2_utils import LayerNorm2d  # noqa: E402

from napari_sbl.segment.sam2_build import build_predictor  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Params, tiny_test_overrides  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    assert os.environ.get("TRITON_INTERPRET") == "1"  # tests/conftest.py
    import napari_sbl.segment.sam2_memory_encoder as module

    return module


def random_norm(channels: int, seed: int) -> LayerNorm2d:
    generator = torch.Generator().manual_seed(seed)
    norm = LayerNorm2d(channels, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(channels, generator=generator))
        norm.bias.copy_(0.5 * torch.randn(channels, generator=generator))
    return norm


@pytest.mark.parametrize("channels, height, width", [(4, 16, 16), (24, 7, 9), (256, 8, 8)])
@pytest.mark.parametrize("gelu, channels_last, out_dtype", [
    (False, False, torch.float32), (True, False, torch.float32), (False, True, torch.float32),
    (True, True, torch.float16),
])
def test_channel_norm_is_sam2s_layer_norm(encoder, channels, height, width, gelu, channels_last, out_dtype):
    norm = random_norm(channels, channels + height)
    x = (3 + 2 * torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(width))).half()
    with torch.no_grad():
        expected = norm(x.float())
        expected = F.gelu(expected) if gelu else expected
        ours = encoder.channel_norm(x, norm, out_dtype, gelu=gelu, channels_last=channels_last)
    if channels_last:
        expected = expected.permute(0, 2, 3, 1)
    assert ours.shape == expected.shape and ours.is_contiguous() and ours.dtype == out_dtype
    tolerance = 1e-4 if out_dtype == torch.float32 else 1e-3  # float16 output: its own rounding
    torch.testing.assert_close(ours.float(), expected, rtol=tolerance, atol=tolerance)


def predictor_memory_encoder():
    params = Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                        config_overrides=tiny_test_overrides(image_size=128, d_model=32, mem_dim=16))
    return build_predictor(params, None, torch.device("cpu")).memory_encoder.eval()


def test_memory_encoder_with_our_kernels_gives_sams_memories(encoder, caplog):
    theirs = predictor_memory_encoder()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, LayerNorm2d):
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))
            if getattr(module, "gamma", None) is not None:
                module.gamma.fill_(0.5)  # SAM2 starts them at 1e-6, which would hide the blocks
    ours = copy.deepcopy(theirs)
    changed = encoder.use_fused_memory_encoder(ours, kernel_everywhere=True)
    downsampler_norms = sum(isinstance(m, LayerNorm2d) for m in theirs.mask_downsampler.modules())
    assert changed == downsampler_norms + len(theirs.fuser.layers) > 0
    assert encoder.use_fused_memory_encoder(ours) == 0  # already changed
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())  # checkpoints still load
    pix_feat = torch.randn(2, 32, 8, 8, generator=generator)
    masks = 4 * torch.randn(2, 1, 128, 128, generator=generator)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        expected = theirs(pix_feat, masks)["vision_features"]
        got = ours(pix_feat, masks)["vision_features"]
    assert got.shape == expected.shape
    assert not any(getattr(m, "kernel_failed", False) for m in ours.modules())  # no fallback
    assert not [r for r in caplog.records if r.name.endswith("sam2_kernel_modules")]
    assert float((got.float() - expected.float()).norm() / expected.float().norm()) < 1e-2
    with torch.no_grad():  # outside autocast: SAM2's arithmetic, exactly
        assert torch.equal(ours(pix_feat, masks)["vision_features"], theirs(pix_feat, masks)["vision_features"])


def test_a_kernel_that_does_not_run_falls_back_to_sam2s_arithmetic(encoder, monkeypatch, caplog):
    theirs = predictor_memory_encoder()
    ours = copy.deepcopy(theirs)
    encoder.use_fused_memory_encoder(ours, kernel_everywhere=True)

    def failing(*args, **kwargs):
        raise RuntimeError("no C compiler for Triton's launcher")

    monkeypatch.setattr(encoder, "channel_norm", failing)
    pix_feat, masks = torch.randn(1, 32, 8, 8), torch.randn(1, 1, 128, 128)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        expected = theirs(pix_feat, masks)["vision_features"]
        first = ours(pix_feat, masks)["vision_features"]
    assert "no C compiler" in caplog.text
    assert all(m.kernel_failed for m in ours.modules() if isinstance(m, encoder.NormGelu2d | encoder.FusedCXBlock))
    assert torch.equal(first, expected)


def test_build_fuses_the_memory_encoder_when_asked(encoder):
    from napari_sbl.segment.sam2_build import _fuse_memory_encoder

    params = Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                        config_overrides=tiny_test_overrides(image_size=128))
    predictor = build_predictor(params, None, torch.device("cpu"))
    changed = _fuse_memory_encoder(predictor, torch.device("cpu"))
    fused = [m for m in predictor.modules() if isinstance(m, encoder.NormGelu2d | encoder.FusedCXBlock)]
    assert changed == len(fused) > 0
    assert all(isinstance(m, encoder.FusedCXBlock) for m in predictor.memory_encoder.fuser.layers)
