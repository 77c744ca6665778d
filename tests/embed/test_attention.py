"""The capped attention core: the fused Pallas kernel (interpreted on CPU) against XLA and float64 NumPy.

Also proves the wiring: the whole tiny encoder gives the same tokens with either implementation,
with the same parameter tree, and the kernel lowers for CUDA (Triton IR) without a GPU.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from napari_sbl.embed import attention as at  # noqa: E402
from napari_sbl.embed import checkpoint as ckpt  # noqa: E402
from napari_sbl.embed import videoprism as vp  # noqa: E402
from napari_sbl.embed import videoprism_model as vpm  # noqa: E402

CAP = 50.0
TINY = vpm.VideoPrismConfig.tiny()


def ref_attention(query, key, value, scale, cap=CAP):
    """Float64 NumPy attention on (B, S, heads, dh), written from the spec."""
    query, key, value = (np.asarray(x, np.float64) for x in (query, key, value))
    logits = np.einsum("bqnh,bknh->bnqk", query * scale, key)
    logits = cap * np.tanh(logits / cap)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknh->bqnh", probs, value)


def qkv(shape, dtype=jnp.float32, gain=4.0, seed=0):
    """Random query/key/value; ``gain`` scales q and k so some logits pass the ±50 cap."""
    rng = np.random.default_rng(seed)
    query, key, value = (rng.normal(0.0, 1.0, shape) for _ in range(3))
    return jnp.asarray(query * gain, dtype), jnp.asarray(key * gain, dtype), jnp.asarray(value, dtype)


def rel_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def max_raw_logit(query, key, scale):
    return float(np.abs(np.einsum("bqnh,bknh->bnqk", np.asarray(query, np.float64) * scale, key)).max())


def has_pallas_call(fn, *args):
    return "pallas_call" in str(jax.make_jaxpr(fn)(*args))


# ---------------------------------------------------------------- the kernel alone
VARIANT_TILINGS = {  # each variant at its default and at a second tiling (stream: several key steps)
    "block": ["64x4", "32x1"],
    "stream": ["stream:64x4", "stream:32x4x16"],
    "resident": ["resident:64x4", "resident:16x1"],
}


@pytest.mark.parametrize("tiling", [text for texts in VARIANT_TILINGS.values() for text in texts])
@pytest.mark.parametrize("num_keys", [8, 16, 144, 256, 324])
def test_every_variant_matches_reference_in_fp32(tiling, num_keys):
    """8 → 16 and 144 → 256 and 324 → 512 keys are padded and masked; 16 and 256 are not."""
    query, key, value = qkv((1, num_keys, 2, 64), gain=5.0, seed=num_keys)
    scale = 0.125
    assert max_raw_logit(query, key, scale) > CAP
    options = {"scale": scale, "logit_cap": CAP}
    with jax.default_matmul_precision("highest"):
        fused = at.fused_attention(query, key, value, **options, tiling=at.KernelTiling.parse(tiling), interpret=True)
        xla = at.xla_attention(query, key, value, **options)
    assert fused.shape == query.shape and fused.dtype == jnp.float32
    assert rel_error(fused, ref_attention(query, key, value, scale)) < 2e-6
    np.testing.assert_allclose(np.asarray(fused), np.asarray(xla), rtol=2e-5, atol=2e-5)


def assert_bf16_kernel_as_close_as_xla(query, key, value, scale: float, tiling) -> None:
    """bf16 kernel output within bf16 rounding of the float64 reference, and no further from it than XLA's."""
    expected = ref_attention(query, key, value, scale)  # from the same bf16-rounded inputs
    fused = at.fused_attention(query, key, value, scale=scale, logit_cap=CAP, tiling=tiling, interpret=True)
    xla = jax.jit(lambda q, k, v: at.xla_attention(q, k, v, scale=scale, logit_cap=CAP))(query, key, value)
    assert fused.dtype == jnp.bfloat16
    assert rel_error(fused, expected) < 4e-3  # bf16 output rounding is ~2e-3
    assert rel_error(fused, expected) <= rel_error(xla, expected)


@pytest.mark.parametrize("tiling", [texts[0] for texts in VARIANT_TILINGS.values()])
@pytest.mark.parametrize("num_keys", [8, 16, 144, 256, 324])
def test_every_variant_in_bf16_is_at_least_as_close_as_xla_bf16(tiling, num_keys):
    query, key, value = qkv((1, num_keys, 2, 64), jnp.bfloat16, seed=num_keys)
    assert_bf16_kernel_as_close_as_xla(query, key, value, 0.125, at.KernelTiling.parse(tiling))


@pytest.mark.parametrize("variant", at.KERNEL_VARIANTS)
def test_caps_too_large_for_unshifted_exponentials_fall_back_to_block(variant):
    """exp(±100) leaves fp32's range, so a cap of 100 needs the row maximum only ``block`` subtracts."""
    query, key, value = qkv((1, 20, 1, 16), gain=12.0)
    assert max_raw_logit(query, key, 0.25) > 80  # logits near the cap, past where exp(logit) is finite
    attend = partial(at.fused_attention, scale=0.25, logit_cap=100.0, tiling=at.KernelTiling(variant=variant),
                     interpret=True)
    with jax.default_matmul_precision("highest"):
        fused = attend(query, key, value)
    assert rel_error(fused, ref_attention(query, key, value, 0.25, cap=100.0)) < 2e-6
    assert "capped_attention_block" in str(jax.make_jaxpr(attend)(query, key, value))


@pytest.mark.parametrize("num_keys", [16, 20, 256])
@pytest.mark.parametrize("head_dim", [8, 64])
def test_fused_matches_reference_in_fp32(num_keys, head_dim):
    query, key, value = qkv((2, num_keys, 2, head_dim))
    scale = head_dim**-0.5
    assert max_raw_logit(query, key, scale) > CAP  # the cap is exercised
    expected = ref_attention(query, key, value, scale)
    with jax.default_matmul_precision("highest"):
        fused = at.fused_attention(query, key, value, scale=scale, logit_cap=CAP, interpret=True)
        xla = at.xla_attention(query, key, value, scale=scale, logit_cap=CAP)
    assert fused.shape == query.shape and fused.dtype == jnp.float32
    assert rel_error(fused, expected) < 2e-6
    np.testing.assert_allclose(np.asarray(fused), np.asarray(xla), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("num_keys, head_dim", [(20, 8), (256, 64)])
def test_fused_bf16_is_at_least_as_close_as_xla_bf16(num_keys, head_dim):
    """bf16 in and out, fp32 inside; the kernel does not round scores to bf16 before the cap, XLA does."""
    query, key, value = qkv((2, num_keys, 2, head_dim), jnp.bfloat16)
    assert_bf16_kernel_as_close_as_xla(query, key, value, head_dim**-0.5, None)


@pytest.mark.parametrize("variant", at.KERNEL_VARIANTS)
def test_padded_keys_are_masked_not_attended(variant):
    """20 keys are padded to 32 with zeros; unmasked, each zero key would take weight exp(0 - max)."""
    query, key, value = qkv((1, 20, 1, 16), gain=0.5)  # small logits: a zero key would weigh as much as a real one
    value = value + 3.0  # the padded values (zero) would pull every output towards 0
    scale = 16**-0.5
    fused = at.fused_attention(query, key, value, scale=scale, logit_cap=CAP, interpret=True,
                               tiling=at.KernelTiling(block_q=16, variant=variant, block_k=16))
    assert fused.shape == (1, 20, 1, 16)
    assert rel_error(fused, ref_attention(query, key, value, scale)) < 2e-6
    padded_key, padded_value = (jnp.pad(x, ((0, 0), (0, 12), (0, 0), (0, 0))) for x in (key, value))
    unmasked = ref_attention(jnp.pad(query, ((0, 0), (0, 12), (0, 0), (0, 0))), padded_key, padded_value, scale)
    assert rel_error(fused, unmasked[:, :20]) > 0.1


@pytest.mark.parametrize("variant", at.KERNEL_VARIANTS)
@pytest.mark.parametrize("num_keys", [20, 144, 324])
def test_biases_given_apart_give_the_attention_of_the_biased_projections(variant, num_keys):
    """The stream kernel adds q/k/v biases itself (v's after the weighted sum); the others get them added."""
    query, key, value = qkv((2, num_keys, 3, 64), seed=num_keys)
    biases = tuple(jax.random.normal(jax.random.key(seed), (3, 64)) for seed in (1, 2, 3))
    options = {"scale": 0.125, "logit_cap": CAP}
    tiling = at.KernelTiling(block_q=64, variant=variant, block_k=64)
    with jax.default_matmul_precision("highest"):
        fused = at.fused_attention(query, key, value, **options, tiling=tiling, interpret=True, biases=biases)
        xla = at.capped_attention(query, key, value, **options, implementation="xla", biases=biases)
    biased = [x + b for x, b in zip((query, key, value), biases, strict=True)]
    expected = ref_attention(*biased, 0.125)
    assert rel_error(fused, expected) < 2e-6 and rel_error(xla, expected) < 2e-6
    assert rel_error(at.xla_attention(query, key, value, **options), expected) > 0.05  # the biases matter


def test_stream_rows_past_the_end_are_neither_read_nor_written():
    """Unpadded input: the last query block and key step run past 20 tokens; the output has exactly 20."""
    query, key, value = qkv((3, 20, 2, 16), gain=0.5, seed=4)
    tiling = at.KernelTiling(block_q=16, variant="stream", block_k=16)
    fused = at.fused_attention(query, key, value, scale=0.25, logit_cap=CAP, interpret=True, tiling=tiling)
    assert fused.shape == (3, 20, 2, 16)
    assert rel_error(fused, ref_attention(query, key, value, 0.25)) < 2e-6


def test_query_blocks_heads_and_sequences_land_in_their_place():
    """Small query blocks (16 per program) and a 1-D grid over (sequence, head, block) give the same answer."""
    query, key, value = qkv((3, 256, 2, 64), seed=3)
    options = {"scale": 0.125, "logit_cap": CAP, "interpret": True}
    with jax.default_matmul_precision("highest"):
        default = at.fused_attention(query, key, value, **options)
        small = at.fused_attention(query, key, value, tiling=at.KernelTiling(block_q=16), **options)
    np.testing.assert_allclose(np.asarray(small), np.asarray(default), rtol=1e-6, atol=1e-6)
    assert rel_error(default, ref_attention(query, key, value, 0.125)) < 2e-6


def test_tiling_keeps_score_tiles_small_and_dots_at_least_16():
    assert [at.padded_size(size) for size in (8, 16, 20, 144, 256, 324)] == [16, 16, 32, 256, 256, 512]
    assert at.KernelTiling().label(256) == "stream:64x4x64"  # the default, fastest on an H100
    tiling = at.KernelTiling(block_q=64, num_warps=4, variant="block")
    assert tiling.rows(256) == 64
    assert tiling.rows(324) == 32  # 512 padded keys: half the rows keep 128 score registers per thread
    assert tiling.rows(8) == 16
    assert at.KernelTiling(block_q=128, num_warps=4, variant="block").rows(256) == 64
    assert at.KernelTiling(block_q=128, num_warps=8, variant="block").rows(256) == 128
    assert at.KernelTiling(block_q=8, variant="block").rows(256) == 16
    stream = at.KernelTiling(block_q=128, num_warps=4, variant="stream")  # score tiles of 64 keys: 128 rows fit
    assert (stream.rows(256), stream.keys_per_step(256), stream.keys_per_step(8)) == (128, 64, 16)
    assert stream.label(256) == "stream:128x4x64" and stream.label(16) == "stream:16x4x16"
    assert at.KernelTiling(variant="resident").label(324) == "resident:32x4"


def test_tiling_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(at.TILING_ENV, raising=False)
    assert at.KernelTiling.from_environment() == at.KernelTiling()
    monkeypatch.setenv(at.TILING_ENV, "128x8")  # no variant named: the first kernel, as before variants existed
    assert at.KernelTiling.from_environment() == at.KernelTiling(block_q=128, num_warps=8, variant="block")
    monkeypatch.setenv(at.TILING_ENV, "Stream:128x8x32")
    assert at.KernelTiling.from_environment() == at.KernelTiling(128, 8, variant="stream", block_k=32)
    monkeypatch.setenv(at.TILING_ENV, "resident:64x4")
    assert at.KernelTiling.from_environment() == at.KernelTiling(64, 4, variant="resident")
    for text in ("128", "stream:64x4x2x1", "stream:big"):
        monkeypatch.setenv(at.TILING_ENV, text)
        with pytest.raises(ValueError, match="BLOCK_QxWARPS"):
            at.KernelTiling.from_environment()
    monkeypatch.setenv(at.TILING_ENV, "flash:64x4")
    with pytest.raises(ValueError, match="kernel variant must be one of"):
        at.KernelTiling.from_environment()


def test_mismatched_shapes_are_refused():
    query, key, value = qkv((1, 16, 1, 16))
    with pytest.raises(ValueError, match="share one shape"):
        at.fused_attention(query, key[:, :8], value, scale=0.25, logit_cap=CAP)


# ---------------------------------------------------------------- choosing an implementation
def test_auto_is_xla_off_gpu_and_fused_runs_the_kernel_everywhere():
    query, key, value = qkv((2, 16, 2, 16))

    def attend(implementation):
        return lambda q, k, v: at.capped_attention(q, k, v, scale=0.25, logit_cap=CAP, implementation=implementation)

    auto, xla = jax.jit(attend("auto"))(query, key, value), jax.jit(attend("xla"))(query, key, value)
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(xla))  # CPU: the XLA branch is the one lowered
    assert has_pallas_call(attend("fused"), query, key, value)
    assert has_pallas_call(attend("auto"), query, key, value)  # staged for CUDA, resolved when lowering
    assert not has_pallas_call(attend("xla"), query, key, value)
    assert at.fits_fused(324, 64, jnp.bfloat16) and at.fits_fused(256, 64, jnp.float32)
    long_query, long_key, long_value = qkv((1, 300, 1, 64))  # fp32, padded to 512 keys: 128 KiB of keys
    assert not at.fits_fused(300, 64, jnp.float32)
    assert not has_pallas_call(attend("fused"), long_query, long_key, long_value)


def test_choice_comes_from_argument_then_environment(monkeypatch):
    monkeypatch.delenv(at.ATTENTION_ENV, raising=False)
    assert at.resolve_attention() == "auto"
    monkeypatch.setenv(at.ATTENTION_ENV, "XLA")
    assert at.resolve_attention() == "xla"
    assert at.resolve_attention("fused") == "fused"
    monkeypatch.setenv(at.ATTENTION_ENV, "flash")
    with pytest.raises(ValueError, match=at.ATTENTION_ENV):
        at.resolve_attention()
    with pytest.raises(ValueError, match="attention must be one of"):
        vp.load_encoder(model="tiny", weights="random", attention="cudnn")


@pytest.mark.parametrize("variant", at.KERNEL_VARIANTS)
@pytest.mark.parametrize("num_keys, dtype", [(256, jnp.bfloat16), (144, jnp.bfloat16), (324, jnp.bfloat16),
                                             (16, jnp.float32)])
def test_kernel_lowers_to_triton_for_cuda(num_keys, dtype, variant, monkeypatch):
    """Cross-lowering on CPU runs the Pallas→Triton lowering (block shapes, primitives, loops) a GPU compiles."""
    monkeypatch.setenv(at.TILING_ENV, f"{variant}:64x4")  # read when tracing, as the encoder's forward does
    spec = jax.ShapeDtypeStruct((4, num_keys, 12, 64), dtype)

    def attend(q, k, v):
        return at.capped_attention(q, k, v, scale=0.125, logit_cap=CAP, implementation="auto")

    lowered = jax.jit(attend).trace(spec, spec, spec).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" in lowered and f"capped_attention_{variant}" in lowered
    # the hardware tanh only where the tokens are bf16 anyway (its error sits under bf16's rounding); its
    # numbers run only on a GPU (benchmarks/embed_kernel_probe.py), the interpreter cannot run inline PTX
    assert ("tanh.approx" in lowered) == (variant == "stream" and dtype == jnp.bfloat16)


# ---------------------------------------------------------------- wiring into the encoder
@pytest.fixture(scope="module")
def tiny_variables():
    variables = vp.random_variables(TINY, seed=0)
    flat = {key: np.asarray(leaf) * (3.0 if key.endswith(("query/w", "key/w")) else 1.0)
            for key, leaf in ckpt.flatten(variables).items()}
    return ckpt.unflatten(flat)


def test_fused_encoder_has_the_same_parameter_tree():
    frames = jax.ShapeDtypeStruct((1, 1, TINY.patch_size, TINY.patch_size, 3), jnp.float32)

    def tree(attention):
        shapes = jax.eval_shape(vpm.FactorizedEncoder(TINY, attention=attention).init, jax.random.key(0), frames)
        return {key: leaf.shape for key, leaf in ckpt.flatten(shapes).items()}

    assert tree("fused") == tree("xla") == tree("auto")
    assert set(tree("fused")) == set(ckpt.expected_shapes(TINY))


def test_fused_encoder_runs_the_kernel_in_both_stacks():
    frames = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.float32)
    variables = vp.random_variables(TINY, seed=0)

    def kernels(attention):
        forward = partial(vpm.FactorizedEncoder(TINY, attention=attention).apply, variables)
        return str(jax.make_jaxpr(forward)(frames)).count("name=capped_attention")

    # per stack's scanned block (spatial, temporal): the kernel staged twice, compiled for CUDA and interpreted
    assert (kernels("fused"), kernels("xla")) == (2 * 2, 0)


@pytest.mark.parametrize("shape", [(2, 4, 16, 16, 3), (1, 3, 20, 24, 3)], ids=["16-tokens", "30-tokens-padded"])
def test_encoder_tokens_agree_fused_vs_xla_fp32(tiny_variables, shape):
    frames = np.random.default_rng(0).random(shape, dtype=np.float32)
    with jax.default_matmul_precision("highest"):
        xla = vp.VideoPrismEncoder(TINY, tiny_variables, attention="xla").features(frames)
        fused = vp.VideoPrismEncoder(TINY, tiny_variables, attention="fused").features(frames)
    np.testing.assert_allclose(np.asarray(fused.spatial_features), np.asarray(xla.spatial_features), atol=2e-5)
    np.testing.assert_allclose(np.asarray(fused.tokens), np.asarray(xla.tokens), atol=2e-5)
    assert rel_error(fused.tokens, xla.tokens) < 2e-6


def test_encoder_tokens_agree_fused_vs_xla_bf16(tmp_path):
    """In bf16 the other layers' rounding dominates: the fused path is as close to fp32 as XLA's."""
    variables = vp.random_variables(TINY, seed=0)  # softmax not saturated, as bf16 embeddings run
    path = ckpt.save_checkpoint(tmp_path / "tiny.npz", variables, TINY)
    frames = np.random.default_rng(1).random((2, 4, 16, 16, 3), dtype=np.float32)
    with jax.default_matmul_precision("highest"):
        reference = vp.load_encoder(path, model="tiny", download=False, attention="xla")(frames)
    xla = vp.load_encoder(path, model="tiny", dtype="bf16", download=False, attention="xla")
    fused = vp.load_encoder(path, model="tiny", dtype="bf16", download=False, attention="fused")
    assert (fused.attention, xla.attention) == ("fused", "xla")
    fused_tokens, xla_tokens = fused(frames), xla(frames)
    assert fused_tokens.dtype == jnp.bfloat16
    assert rel_error(fused_tokens, reference) < 2e-2
    assert rel_error(fused_tokens, reference) < 1.25 * rel_error(xla_tokens, reference)
    assert rel_error(fused_tokens, xla_tokens) < 2e-2
