"""Hiera's windowed blocks with the partitioning folded into our kernels (Triton's interpreter, float16 as
the autocast dtype) against SAM2's own block forward, and the two kernels against SAM2's window helpers.

float16, because the interpreter truncates float32 to bfloat16 where PyTorch and compiled Triton round to
nearest even; bf16 rounding is checked bit for bit on a GPU (benchmarks/sam2_layer_norm_check.py).
"""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("triton")

from sam2.modeling.backbones.utils import window_partition, window_unpartition  # noqa: E402

from napari_sbl.segment.sam2_build import build_predictor  # noqa: E402
from napari_sbl.segment.sam2_tracker import Sam2Params, tiny_test_overrides  # noqa: E402


@pytest.fixture(scope="module")
def blocks():
    assert os.environ.get("TRITON_INTERPRET") == "1"  # tests/conftest.py
    import napari_sbl.segment.sam2_hiera_blocks as module

    return module


@pytest.mark.parametrize("height, width, window", [(8, 8, 4), (10, 7, 4), (14, 14, 14), (5, 9, 7)])
def test_kernels_match_sam2_window_helpers(blocks, height, width, window):
    generator = torch.Generator().manual_seed(height * width)
    norm = torch.nn.LayerNorm(24, eps=1e-3)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(24, generator=generator))
        norm.bias.copy_(torch.randn(24, generator=generator))
    x = 2 + torch.randn(2, height, width, 24, generator=generator)
    with torch.no_grad():
        expected, pad_hw = window_partition(norm(x), window)
        ours = blocks.norm_partition(x, norm, window, torch.float32)
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)  # padding slots zero, as SAM2 pads
        windows = torch.randn(expected.shape, generator=generator)
        shortcut = torch.randn(x.shape, generator=generator)
        added = blocks.unpartition_add(windows, shortcut, window)
        torch.testing.assert_close(added, shortcut + window_unpartition(windows, window, pad_hw, (height, width)))
        assert blocks.unpartition_add(windows.half(), shortcut, window).dtype == torch.float32  # PyTorch's promotion


def two_block_trunk():
    """A shrunken tiny trunk with two blocks per stage and windows that do not divide stages 3 and 4's token
    grids (14 on 16, 7 on 8), so folded blocks pad, and add bf16-width residuals after stage 1."""
    overrides = [o for o in tiny_test_overrides(image_size=256) if ".stages=" not in o and ".window_spec=" not in o]
    overrides += ["++model.image_encoder.trunk.stages=[2,2,2,2]", "++model.image_encoder.trunk.window_spec=[8,4,14,7]"]
    params = Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                        config_overrides=tuple(overrides))
    return build_predictor(params, None, torch.device("cpu")).image_encoder.trunk.eval()


def test_trunk_with_windowed_blocks_gives_the_same_features(blocks, monkeypatch):
    trunk = two_block_trunk()
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for norm in (m for m in trunk.modules() if isinstance(m, torch.nn.LayerNorm)):
            norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=generator))
    windowed = copy.deepcopy(trunk)
    changed = blocks.use_windowed_blocks(windowed, kernel_everywhere=True)
    expected_blocks = [b for b in trunk.blocks if b.window_size > 0 and b.q_stride is None and b.dim == b.dim_out]
    assert changed == len(expected_blocks) > 0
    assert blocks.use_windowed_blocks(windowed) == 0  # already changed
    grids = [64 // 2**stage for stage in (0, 0, 1, 1, 2, 2, 3, 3)]  # tokens per side at 256 px
    assert any(grid % block.window_size for grid, block in zip(grids, windowed.blocks, strict=True)
               if isinstance(block, blocks.WindowedBlock))  # some folded block pads its grid
    folds = []
    partition = blocks.norm_partition
    monkeypatch.setattr(blocks, "norm_partition", lambda *args: folds.append(args[2]) or partition(*args))
    image = torch.randn(1, 3, 256, 256, generator=generator)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        before, after = trunk(image), windowed(image)
    assert len(folds) == changed  # every converted block took the folded path
    for ours, theirs in zip(after, before, strict=True):
        assert ours.dtype == theirs.dtype
        assert float((ours.float() - theirs.float()).norm() / theirs.float().norm()) < 1e-3


def test_a_kernel_that_does_not_run_falls_back_to_sam2s_block(blocks, monkeypatch, caplog):
    trunk = two_block_trunk()
    block = trunk.blocks[0]
    x = torch.randn(1, 64, 64, block.dim)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        expected = block(x)
        blocks.use_windowed_blocks(trunk, kernel_everywhere=True)

        def failing(*args):
            raise RuntimeError("no C compiler for Triton's launcher")

        monkeypatch.setattr(blocks, "norm_partition", failing)
        first, second = block(x), block(x)
    assert block.kernel_failed and "no C compiler" in caplog.text
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_outside_autocast_the_block_is_sam2s(blocks):
    params = Sam2Params(model="tiny", weights="random", device="cpu", bf16_weights=False, cuda_graphs=False,
                        config_overrides=tiny_test_overrides(image_size=128))
    trunk = build_predictor(params, None, torch.device("cpu")).image_encoder.trunk.eval()
    block = next(b for b in trunk.blocks if b.window_size > 0 and b.q_stride is None and b.dim == b.dim_out)
    x = torch.randn(1, 32, 32, block.dim)
    with torch.no_grad():
        expected = block(x)
        blocks.use_windowed_blocks(trunk, kernel_everywhere=True)
        assert torch.equal(block(x), expected)
