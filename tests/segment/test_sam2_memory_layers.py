"""The memory attention's layers as one loop (adds inside the norms, keys once a frame) against SAM2's own loop,
with Triton's interpreter running the kernels on the CPU (float16 stands in for bf16, as in the other kernel
tests)."""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("triton")

from sam2.modeling.memory_attention import MemoryAttention  # noqa: E402

from napari_sbl.segment.sam2_build import store_autocast_weights  # noqa: E402

from .sam2_helpers import randomise_layer_norms, sam21_wide_memory_attention  # noqa: E402

POINTER_TOKENS = 8


@pytest.fixture(scope="module")
def modules():
    assert os.environ.get("TRITON_INTERPRET") == "1"  # tests/conftest.py
    import napari_sbl.segment.sam2_attention_kernels as kernels
    import napari_sbl.segment.sam2_fused_attention as fused
    import napari_sbl.segment.sam2_layer_norm as norms
    import napari_sbl.segment.sam2_layouts as layouts
    import napari_sbl.segment.sam2_memory_layers as layers

    return kernels, fused, norms, layouts, layers


def prepared_memory_attention(modules, fuse_attention: bool, layers: int = 2):
    """SAM2.1-wide memory attention (256 channels, 64-channel memories), float16 weights, our norms (and our
    attention kernels, if asked) running on the interpreter, laid out batch-first."""
    kernels, fused, norms, layouts, _ = modules
    attention = sam21_wide_memory_attention(f"++model.memory_attention.num_layers={layers}")
    randomise_layer_norms(attention, seed=4)
    store_autocast_weights(attention, torch.float16)
    norms.use_memory_attention_layer_norms(attention, kernel_everywhere=True)
    if fuse_attention:
        tiling = kernels.AttentionTiling.parse("32x32x4x2x2")
        fused.fuse_memory_attention(attention, tiling, tiling)
        for layer in attention.layers:
            layer.cross_attn_image.off_gpu = layer.self_attn.off_gpu = True
    attention.__class__ = layouts.BatchFirstMemoryAttention
    assert len(attention.layers) == layers
    return attention


def inputs(batch: int = 2, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    curr, curr_pos = (torch.randn(64, batch, 256, generator=generator) for _ in range(2))
    memory, memory_pos = (torch.randn(2 * 64 + POINTER_TOKENS, batch, 64, generator=generator) for _ in range(2))
    return curr, memory, curr_pos, memory_pos


def test_add_layer_norm_rows_adds_in_place_and_normalises_the_sum(modules):
    norms = modules[2]
    generator = torch.Generator().manual_seed(1)
    x = 3 + torch.randn(2, 37, 256, generator=generator)
    update = torch.randn(2, 37, 256, generator=generator).half()
    weight, bias = 1 + torch.randn(256, generator=generator), torch.randn(256, generator=generator)
    expected_sum = x + update
    expected = norms.layer_norm_rows(expected_sum, weight, bias, 1e-5, torch.float16)
    out = norms.add_layer_norm_rows(x, update, weight, bias, 1e-5, torch.float16)
    assert torch.equal(x, expected_sum)  # the residual stream, updated in place
    assert out.dtype == torch.float16 and torch.equal(out, expected)
    with pytest.raises(ValueError, match="contiguous float32"):
        norms.add_layer_norm_rows(x.half(), update, weight, bias, 1e-5, torch.float16)


def sam2_layers(modules, monkeypatch, attention, curr, memory, curr_pos, memory_pos, pointers=POINTER_TOKENS):
    """SAM2's own layers, called one by one on the same batch-first tokens (the loop switched off)."""
    with monkeypatch.context() as patch:
        patch.setattr(modules[3], "fused_loop_applies", lambda *_: False)
        return attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=pointers)


@pytest.mark.parametrize("fuse_attention, layer_count, pointers", [(False, 2, POINTER_TOKENS),
                                                                    (True, 2, POINTER_TOKENS), (True, 1, 0)])
def test_the_loop_gives_sam2s_layers_output(modules, monkeypatch, fuse_attention, layer_count, pointers):
    layers = modules[4]
    attention = prepared_memory_attention(modules, fuse_attention, layer_count)
    curr, memory, curr_pos, memory_pos = inputs()
    originals = [t.clone() for t in (curr, memory, curr_pos, memory_pos)]
    fused_norm_calls = []
    norm_class = type(attention.layers[0].norm2)
    original_add_and_norm = norm_class.add_and_norm
    def counted(self, x, update):
        fused_norm_calls.append(self)
        return original_add_and_norm(self, x, update)

    monkeypatch.setattr(norm_class, "add_and_norm", counted)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert layers.fused_loop_applies(attention, curr.transpose(0, 1).contiguous())
        expected = sam2_layers(modules, monkeypatch, attention, curr, memory, curr_pos, memory_pos, pointers)
        assert fused_norm_calls == []  # SAM2's loop: separate adds
        got = attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=pointers)
        # SAM2's sequence-first loop: its linears read strided tokens, which may round differently
        sequence_first = MemoryAttention.forward(attention, curr, memory, curr_pos, memory_pos, pointers)
    assert len(fused_norm_calls) == 3 * layer_count - 1  # every add but the last, inside a norm
    assert not any(m.kernel_failed for m in attention.modules() if isinstance(m, norm_class))  # the kernel ran
    assert got.shape == expected.shape and got.dtype == expected.dtype == torch.float32
    assert torch.equal(got, expected)  # the same float32 sums, norms and rounded keys: the same numbers
    assert float((got - sequence_first).norm() / sequence_first.norm()) < 1e-3
    for tensor, original in zip((curr, memory, curr_pos, memory_pos), originals, strict=True):
        assert torch.equal(tensor, original)  # the caller's tensors untouched


def test_one_animal_without_input_positions_leaves_the_callers_tokens_alone(modules, monkeypatch):
    attention = prepared_memory_attention(modules, fuse_attention=False)
    attention.pos_enc_at_input = False  # the tokens go in as they are: batch-first is then the same storage
    curr, memory, curr_pos, memory_pos = inputs(batch=1, seed=2)
    kept = curr.clone()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        expected = sam2_layers(modules, monkeypatch, attention, curr, memory, curr_pos, memory_pos)
        got = attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=POINTER_TOKENS)
    assert torch.equal(curr, kept) and torch.equal(got, expected)


def test_the_loop_stays_out_where_it_would_change_the_numbers(modules):
    layers = modules[4]
    attention = prepared_memory_attention(modules, fuse_attention=False)
    tokens = torch.randn(2, 64, 256)
    with torch.no_grad():
        assert not layers.fused_loop_applies(attention, tokens)  # no autocast: SAM2's float32 layers
        with torch.autocast("cpu", dtype=torch.float16):
            assert layers.fused_loop_applies(attention, tokens)
            assert not layers.fused_loop_applies(attention, tokens.half())
            changed = copy.deepcopy(attention)
            changed.layers[1].pos_enc_at_cross_attn_queries = True  # positions added to a norm's output
            assert not layers.fused_loop_applies(changed, tokens)
            changed = copy.deepcopy(attention)
            changed.layers[0].norm2 = torch.nn.LayerNorm(256)  # a norm without add_and_norm
            assert not layers.fused_loop_applies(changed, tokens)
            attention.train()
            assert not layers.fused_loop_applies(attention, tokens)
