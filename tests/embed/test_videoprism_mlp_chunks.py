"""The chunked MLP (``mlp_chunk_rows``) changes neither the parameters nor, per token, the result.

Chunking is only a speed experiment (a chunk's hidden activation kept in the GPU's L2 cache), so the
unchunked module is the reference; row counts are picked not to be multiples of the chunk, which
exercises the zero-padding of the last chunk.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from napari_sbl.embed import checkpoint as ckpt  # noqa: E402
from napari_sbl.embed import videoprism as vp  # noqa: E402
from napari_sbl.embed import videoprism_model as vpm  # noqa: E402

TINY = vpm.VideoPrismConfig.tiny()


def shapes_of(variables) -> dict[str, tuple[int, ...]]:
    return {key: tuple(leaf.shape) for key, leaf in ckpt.flatten(variables).items()}


def feed_forward_params(seed: int = 0) -> dict:
    """FeedForward parameters with non-zero layer-norm scale and biases (zeros would hide a mix-up)."""
    x = jnp.zeros((1, TINY.model_dim), jnp.float32)
    params = vpm.FeedForward(TINY).init(jax.random.key(seed), x)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda leaf: leaf + rng.normal(0.0, 0.3, leaf.shape).astype(np.float32), params)


@pytest.mark.parametrize("chunk_rows", [1, 7, 8, 20, 21, 64])
def test_chunked_feed_forward_matches_unchunked(chunk_rows):
    params = feed_forward_params()
    x = jnp.asarray(np.random.default_rng(1).normal(0, 2, (3, 7, TINY.model_dim)).astype(np.float32))  # 21 rows
    with jax.default_matmul_precision("highest"):
        expected = vpm.FeedForward(TINY).apply({"params": params}, x)
        chunked = vpm.FeedForward(TINY, mlp_chunk_rows=chunk_rows).apply({"params": params}, x)
    assert chunked.shape == x.shape and chunked.dtype == expected.dtype
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [TINY, vpm.VideoPrismConfig.base()], ids=["tiny", "base"])
def test_chunking_keeps_the_parameter_tree(config):
    """Initialised through the chunked path (more rows than a chunk), the tree is the checkpoint's."""
    size = 2 * config.patch_size
    frames = jax.ShapeDtypeStruct((1, 3, size, size, 3), jnp.float32)  # 12 rows in either stack
    chunked = jax.eval_shape(vpm.FactorizedEncoder(config, mlp_chunk_rows=5).init, jax.random.key(0), frames)
    assert shapes_of(chunked) == shapes_of(vpm.abstract_variables(config)) == ckpt.expected_shapes(config)


def test_chunked_encoder_gives_the_same_tokens():
    """Weights initialised without chunking (as a checkpoint's would be) load into the chunked encoder."""
    variables = vp.random_variables(TINY, seed=3)
    frames = np.random.default_rng(2).random((2, 4, 16, 16, 3), dtype=np.float32)  # 128 rows per stack
    with jax.default_matmul_precision("highest"):
        expected = vp.VideoPrismEncoder(TINY, variables, weights_source="random").features(frames)
        chunked = vp.VideoPrismEncoder(TINY, variables, weights_source="random", mlp_chunk_rows=48).features(frames)
    for ours, reference in zip(chunked, expected, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-5, atol=1e-5)


def test_negative_chunk_rows_are_refused():
    with pytest.raises(ValueError, match="mlp_chunk_rows"):
        vp.VideoPrismEncoder(TINY, vp.random_variables(TINY), weights_source="random", mlp_chunk_rows=-1)
