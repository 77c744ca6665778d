"""The MLP's GELU is the exact (erf) one, as the VideoPrism spec requires, not the tanh approximation."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from napari_sbl.embed.videoprism_model import exact_gelu


def reference_gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def test_exact_gelu_matches_the_float64_erf_definition():
    x = np.linspace(-12.0, 12.0, 48_001).astype(np.float32)
    got = np.asarray(exact_gelu(jnp.asarray(x)), np.float64)
    expected = reference_gelu(x.astype(np.float64))
    assert np.max(np.abs(got - expected)) < 2e-6
    tanh_gap = np.abs(np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=True), np.float64) - expected)
    assert np.max(tanh_gap) > 1e-4  # the approximation would be caught by the bound above


def test_exact_gelu_keeps_the_activation_dtype():
    x = jnp.linspace(-4.0, 4.0, 64, dtype=jnp.bfloat16)
    out = exact_gelu(x)
    assert out.dtype == jnp.bfloat16
    expected = reference_gelu(np.asarray(x.astype(jnp.float32), np.float64))
    assert np.max(np.abs(np.asarray(out.astype(jnp.float32)) - expected)) <= 0.5 * 2.0**-7 * 4.0  # half a bf16 ulp
