"""The fused memory cross-attention against SAM2's own, with Triton's interpreter running the kernels on
the CPU (float16: the interpreter's bfloat16 arithmetic is not faithful; benchmarks/sam2_memory_attention.py
checks bf16 on a GPU)."""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("triton")

from sam2.modeling.sam.transformer import RoPEAttention  # noqa: E402

from napari_sbl.segment.sam2_build import store_autocast_weights  # noqa: E402
from napari_sbl.segment.sam2_tracker import tiny_test_overrides  # noqa: E402

from .sam2_helpers import sam21_wide_memory_attention  # noqa: E402

POINTER_TOKENS = 8


@pytest.fixture(scope="module")
def kernels():
    """The kernel and module code; tests/conftest.py has Triton interpret them on the CPU."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import napari_sbl.segment.sam2_attention_kernels as kernel_module
    import napari_sbl.segment.sam2_fused_attention as cross_module

    return kernel_module, cross_module


@pytest.fixture(scope="module")
def memory_attention():
    """One memory attention layer at SAM2.1's widths (256 tokens wide, 64-channel memories), 8×8 tokens."""
    return sam21_wide_memory_attention()


def memory_inputs(frames: int = 2, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    keys = frames * 64 + POINTER_TOKENS
    curr = torch.randn(64, 2, 256, generator=generator)
    memory = torch.randn(keys, 2, 64, generator=generator)
    return curr, memory, torch.randn(curr.shape, generator=generator), torch.randn(memory.shape, generator=generator)


def relative_error(value, exact) -> float:
    return float((value.float() - exact.float()).norm() / exact.float().norm())


def test_rotate_pairs_rotates_sam2_pairs_and_keeps_pointer_rows(kernels):
    kernel_module, _ = kernels
    x = torch.randn(2, 10, 8).half()
    cos, sin = torch.randn(4, 4), torch.randn(4, 4)
    out = kernel_module.rotate_pairs(x, cos, sin, rotated_rows=7, scale=0.5)
    even, odd = x.float()[..., 0::2], x.float()[..., 1::2]
    position = torch.arange(10) % 4  # the positions repeat for every memory frame
    rotated = (torch.arange(10) < 7)[:, None]
    expected_even = torch.where(rotated, even * cos[position] - odd * sin[position], even)
    expected_odd = torch.where(rotated, even * sin[position] + odd * cos[position], odd)
    expected = torch.cat([expected_even, expected_odd], -1).half().float() * 0.5
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("tiling", ["16x16x4x2x1", "16x16x4x2x3", "32x16x4x2x2"])
def test_attention_equals_softmax_weighted_values(kernels, tiling):
    kernel_module, _ = kernels
    q = (torch.randn(2, 40, 32) / 4).half()
    k = torch.randn(2, 70, 32).half()  # 70 keys: a partial last block in every split
    v = torch.randn(70, 2, 16).transpose(0, 1)  # sequence-first float32 memories, read through their strides
    out = kernel_module.attention(q, k, v, kernel_module.AttentionTiling.parse(tiling))
    expected = torch.softmax(q.float() @ k.float().transpose(1, 2), -1) @ v.half().float()
    assert out.shape == (2, 40, 16) and out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=2e-3)


def test_fused_memory_attention_matches_sam2(kernels, memory_attention):
    _, cross_module = kernels
    curr, memory, _, memory_pos = memory_inputs()
    original = memory_attention.layers[0].cross_attn_image
    half = copy.deepcopy(original)
    store_autocast_weights(half, torch.float16)
    query = curr.transpose(0, 1)
    args = (query, (memory + memory_pos).transpose(0, 1), memory.transpose(0, 1))
    with torch.no_grad():
        exact = original(*args, num_k_exclude_rope=POINTER_TOKENS)
        with torch.autocast("cpu", dtype=torch.float16):
            sam2_half = half(*args, num_k_exclude_rope=POINTER_TOKENS)
            fused = cross_module.FusedRoPEAttention(half, off_gpu=False)
            on_cpu = fused(*args, num_k_exclude_rope=POINTER_TOKENS)
            fused.off_gpu = True
            interpreted = fused(*args, num_k_exclude_rope=POINTER_TOKENS)
    # off the GPU it is SAM2's module, bit for bit; through the kernels, as close to float32 as SAM2's half
    assert torch.equal(on_cpu, sam2_half)
    assert relative_error(interpreted, exact) < 1.5 * relative_error(sam2_half, exact) + 1e-4
    assert relative_error(interpreted, exact) < 2e-3


def test_whole_memory_attention_keeps_pointer_tokens_unrotated(kernels, memory_attention):
    """SAM2 passes the object-pointer count only to RoPEAttention layers; rotated pointers would show here.
    The self-attention (values as wide as the keys) is fused too."""
    kernel_module, cross_module = kernels
    curr, memory, curr_pos, memory_pos = memory_inputs(frames=3, seed=1)
    half = copy.deepcopy(memory_attention)
    store_autocast_weights(half, torch.float16)
    fused = copy.deepcopy(half)
    tilings = kernel_module.AttentionTiling.parse("32x32x4x2x3"), kernel_module.AttentionTiling.parse("32x32x4x2x2")
    assert cross_module.fuse_memory_attention(fused, *tilings) == 2 * len(fused.layers)
    assert cross_module.fuse_memory_attention(fused, *tilings) == 0  # already fused
    for layer in fused.layers:
        assert layer.cross_attn_image.fold_values and not layer.self_attn.fold_values
        layer.cross_attn_image.off_gpu = layer.self_attn.off_gpu = True
    with torch.no_grad():
        exact = memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=POINTER_TOKENS)
        with torch.autocast("cpu", dtype=torch.float16):
            sam2_half = half(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=POINTER_TOKENS)
            ours = fused(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=POINTER_TOKENS)
    assert relative_error(ours, exact) < 1.5 * relative_error(sam2_half, exact) + 1e-5


def test_float32_activations_fall_back_to_sam2(kernels, memory_attention):
    _, cross_module = kernels
    curr, memory, _, memory_pos = memory_inputs()
    original = memory_attention.layers[0].cross_attn_image
    fused = cross_module.FusedRoPEAttention(original, off_gpu=True)
    args = (curr.transpose(0, 1), (memory + memory_pos).transpose(0, 1), memory.transpose(0, 1))
    with torch.no_grad():
        assert torch.equal(fused(*args, num_k_exclude_rope=POINTER_TOKENS),
                           original(*args, num_k_exclude_rope=POINTER_TOKENS))


def test_tiling_parses_in_field_order(kernels):
    kernel_module, _ = kernels
    tiling = kernel_module.AttentionTiling.parse("128x32x8x3x2")
    assert (tiling.block_queries, tiling.block_keys, tiling.warps, tiling.stages, tiling.key_splits) == (
        128, 32, 8, 3, 2)


class _Comparing(RoPEAttention):
    """SAM2's cross-attention as the tracker runs it, checking the fused one against it on every call
    (a RoPEAttention, so SAM2 hands it the object-pointer count)."""

    def __init__(self, original, fused, exact) -> None:
        torch.nn.Module.__init__(self)
        self.original, self.fused, self.exact, self.calls = original, fused, exact, []

    def forward(self, q, k, v, num_k_exclude_rope=0):
        out = self.original(q, k, v, num_k_exclude_rope=num_k_exclude_rope)
        with torch.autocast("cpu", enabled=False):
            exact = self.exact(q.float(), k.float(), v.float(), num_k_exclude_rope=num_k_exclude_rope)
        with torch.autocast("cpu", dtype=torch.float16):
            fused = self.fused(q.float(), k.float(), v.float(), num_k_exclude_rope=num_k_exclude_rope)
        self.calls.append((k.shape[1], num_k_exclude_rope, relative_error(fused, exact)))
        return out


def test_fused_memory_attention_agrees_on_every_call_of_a_tracking_run(kernels):
    """Every memory length and pointer count a real pass goes through (first frames, full window, both
    directions), through the kernels, against SAM2's layer in float32 on the same inputs."""
    from napari_sbl.progress import Reporter
    from napari_sbl.segment.sam2_tracker import Sam2Tracker
    from tests.segment.sam2_helpers import BlobVideo, clicks, tiny_params

    _, cross_module = kernels
    tracker = Sam2Tracker(tiny_params(config_overrides=tiny_test_overrides(64, d_model=32, mem_dim=16)))
    predictor = tracker.load()
    comparing = []
    for layer in predictor.memory_attention.layers:
        original = layer.cross_attn_image
        exact = copy.deepcopy(original).float()
        half = copy.deepcopy(original).half()
        wrapper = _Comparing(original, cross_module.FusedRoPEAttention(half, off_gpu=True), exact)
        layer.cross_attn_image = wrapper
        comparing.append(wrapper)
    video = BlobVideo(n_frames=30)
    frames = list(tracker.track(video, [clicks(video, 15)], 0, 30, Reporter()))
    assert len(frames) == 30
    calls = [call for wrapper in comparing for call in wrapper.calls]
    lengths = {(keys, pointers) for keys, pointers, _ in calls}
    assert len(lengths) >= 5  # the memory fills up: many key lengths and pointer counts
    assert any(pointers > 0 for _, pointers in lengths)
    worst = max(error for _, _, error in calls)
    assert worst < 5e-3, f"worst relative error {worst:.2e} over {len(calls)} calls"


def test_a_tiling_the_gpu_cannot_compile_falls_back(kernels, memory_attention, monkeypatch, caplog):
    """First a smaller tiling, then SAM2's own attention (with a warning), never an error mid-video."""
    _, cross_module = kernels
    curr, memory, _, memory_pos = memory_inputs()
    half = copy.deepcopy(memory_attention.layers[0].cross_attn_image)
    store_autocast_weights(half, torch.float16)
    args = (curr.transpose(0, 1), (memory + memory_pos).transpose(0, 1), memory.transpose(0, 1))
    real_attention = cross_module.attention
    tried = []

    def attention_refusing_big_blocks(q, k, v, tiling):
        tried.append(tiling)
        if tiling.block_queries > 32:
            raise RuntimeError("out of resource: shared memory")
        return real_attention(q, k, v, tiling)

    monkeypatch.setattr(cross_module, "attention", attention_refusing_big_blocks)
    fused = cross_module.FusedRoPEAttention(half, off_gpu=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        sam2_half = half(*args, num_k_exclude_rope=POINTER_TOKENS)
        first = fused(*args, num_k_exclude_rope=POINTER_TOKENS)
        assert fused.kernels == "working" and fused.tiling.block_queries == 32
        assert [t.block_queries for t in tried] == [128, 64, 64, 32]
        assert relative_error(first, sam2_half) < 2e-3

        monkeypatch.setattr(cross_module, "attention", lambda *a: (_ for _ in ()).throw(RuntimeError("no bf16")))
        refused = cross_module.FusedRoPEAttention(half, off_gpu=True)
        with caplog.at_level("WARNING"):
            out = refused(*args, num_k_exclude_rope=POINTER_TOKENS)
        assert refused.kernels == "unavailable" and "SAM2's own memory attention" in caplog.text
        assert torch.equal(out, sam2_half)
        assert torch.equal(refused(*args, num_k_exclude_rope=POINTER_TOKENS), sam2_half)


def test_relu_epilogue_memory_attention_gives_sam2s_output(kernels, memory_attention, monkeypatch, caplog):
    """The MLP's ReLU moved into its first layer's matmul: same output, through the epilogue (one call per layer,
    the layer's own ReLU gone); outside autocast the module applies the ReLU itself."""
    _, cross_module = kernels
    fused = copy.deepcopy(memory_attention)
    assert cross_module.use_relu_epilogues(fused, kernel_everywhere=True) == len(fused.layers)
    assert cross_module.use_relu_epilogues(fused, kernel_everywhere=True) == 0  # already moved
    assert all(layer.activation is not torch.nn.functional.relu for layer in fused.layers)
    epilogues = []
    original = torch._addmm_activation
    monkeypatch.setattr(torch, "_addmm_activation",
                        lambda *args, **kwargs: (epilogues.append(kwargs["use_gelu"]), original(*args, **kwargs))[1])
    curr, memory, curr_pos, memory_pos = memory_inputs()
    with torch.inference_mode():
        for autocast in (True, False):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                expected = memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=POINTER_TOKENS)
                got = fused(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=POINTER_TOKENS)
            assert got.dtype == expected.dtype
            assert relative_error(got, expected) < (1e-2 if autocast else 1e-6), autocast
            assert epilogues == ([False] * len(fused.layers) if autocast else []), autocast
            epilogues.clear()
    assert not any(layer.linear1.kernel_failed for layer in fused.layers)
    assert "SAM2's own" not in caplog.text
    hidden = torch.randn(5, 256)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        direct = torch.relu(memory_attention.layers[0].linear1(hidden))
        assert torch.equal(fused.layers[0].linear1(hidden), direct)

