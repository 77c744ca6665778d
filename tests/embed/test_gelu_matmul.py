"""The fused first MLP layer + exact GELU: its epilogue arithmetic, its parameters, its lowering for a GPU.

The kernel itself needs an H100 (Pallas's interpreter runs neither its TMA copies nor its warp
specialisation); ``benchmarks/embed_gelu_matmul.py`` checks its output against float32 there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erfc as scipy_erfc

from napari_sbl.embed.gelu_matmul import (
    GeluMatmulTiling,
    _DenseParameters,
    exact_gelu_from_accumulator,
    gelu_linear,
    resolve_mlp,
)
from napari_sbl.embed.videoprism_model import FactorizedEncoder, VideoPrismConfig

# widths the kernel tiles (k by 64, n by 128); two layers per stack are enough
SMALL = VideoPrismConfig("small-test", 64, 2, 128, 1, 1, pos_emb_frames=4, head_dim=32, patch_size=4, pos_emb_grid=4)


def test_epilogue_gelu_matches_the_exact_erf_gelu():
    z = np.linspace(-12.0, 12.0, 48001, dtype=np.float32)
    exact = 0.5 * z.astype(np.float64) * scipy_erfc(-z.astype(np.float64) / np.sqrt(2.0))
    ours = np.asarray(exact_gelu_from_accumulator(jnp.asarray(z))).astype(np.float64)
    error = np.abs(ours - exact)
    assert np.all(error <= 2e-5 * np.abs(exact) + 1e-9)  # relative, on both signs (bf16 rounds at 2e-3)
    assert ours[z == 0.0] == 0.0
    tanh_error = np.abs(np.asarray(jax.nn.gelu(z, approximate=True)) - exact).max()
    assert error.max() < tanh_error / 100  # the erf form, not the tanh approximation


def test_dense_parameters_are_nn_dense_parameters():
    key = jax.random.key(3)
    dense = nn_dense_params(key)
    ours = _DenseParameters(48).init(key, 24)["params"]
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(dense)
    np.testing.assert_array_equal(ours["kernel"], dense["kernel"])
    np.testing.assert_array_equal(ours["bias"], dense["bias"])


def nn_dense_params(key):
    import flax.linen as nn

    return nn.Dense(48, param_dtype=jnp.float32).init(key, jnp.zeros((1, 24)))["params"]


def test_fused_mlp_keeps_the_checkpoint_parameter_tree():
    frames = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.float32)

    def shapes(mlp: str):
        module = FactorizedEncoder(SMALL, jnp.bfloat16, "xla", mlp)
        return jax.eval_shape(lambda x: module.init(jax.random.key(0), x), frames)

    xla, fused = shapes("xla"), shapes("fused")
    assert jax.tree_util.tree_structure(xla) == jax.tree_util.tree_structure(fused)
    assert jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, xla, fused))


def test_fused_model_lowers_to_a_mosaic_gpu_kernel_for_cuda():
    """The whole forward with the fused MLP lowers for an H100 (Mosaic GPU's lowering runs without one)."""
    module = FactorizedEncoder(SMALL, jnp.bfloat16, "xla", "fused:128x128x2")
    frames = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.bfloat16)  # 4 × 16 tokens: padded to 128 rows
    variables = jax.eval_shape(lambda x: FactorizedEncoder(SMALL, jnp.bfloat16).init(jax.random.key(0), x), frames)
    exported = jax.export.export(jax.jit(module.apply), platforms=("cuda",))(variables, frames)
    text = exported.mlir_module()
    assert text.count("mosaic_gpu") >= 2  # one kernel per stack's scanned MLP


def test_gelu_linear_refuses_shapes_it_cannot_tile():
    x = jnp.zeros((100, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="does not tile"):
        gelu_linear(x, jnp.zeros((64, 128), jnp.bfloat16), jnp.zeros((128,)), GeluMatmulTiling())


def test_resolve_mlp(monkeypatch):
    monkeypatch.delenv("NAPARI_SBL_MLP", raising=False)
    assert resolve_mlp(None, "bfloat16") == "xla"  # no Hopper GPU here
    assert resolve_mlp("fused:128x128x2", "float32") == "fused:128x128x2"
    monkeypatch.setenv("NAPARI_SBL_MLP", "xla")
    assert resolve_mlp(None, "bfloat16") == "xla"
    with pytest.raises(ValueError, match="not one of"):
        resolve_mlp("cublas", "bfloat16")
    with pytest.raises(ValueError):
        resolve_mlp("fused:12x", "bfloat16")
    assert GeluMatmulTiling.parse("64x128x3xwsxg8") == GeluMatmulTiling(64, 128, 3, True, 8)


def test_kernel_probe_says_no_where_the_kernel_cannot_run(caplog):
    """Off Hopper (here: the CPU) the probe fails cleanly, so 'auto' would keep XLA's MLP."""
    from napari_sbl.embed import gelu_matmul

    gelu_matmul._kernel_runs.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert gelu_matmul._kernel_runs() is False
        assert "XLA's MLP is used" in caplog.text
    finally:
        gelu_matmul._kernel_runs.cache_clear()
