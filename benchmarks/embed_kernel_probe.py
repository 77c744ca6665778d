"""Two probes of the backbone's own kernels on a GPU, at base's shapes for 32 clips.

1. The capped attention (``stream``), libdevice's exact ``tanh`` against the GPU's
   ``tanh.approx``: time per call and relative L2 error against float32 XLA attention, on inputs
   scaled so that some logits saturate the cap.
2. The MLP's first layer (``gelu_matmul``) with its GELU epilogue and with the bias alone: how much of
   the kernel's time the erf epilogue costs (against cuBLAS's matmul + bias).

    python benchmarks/embed_kernel_probe.py
"""

from __future__ import annotations

import os
from functools import partial

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp

import embed_gelu_matmul

SCALE, CAP, HEADS, HEAD_DIM = 64**-0.5, 50.0, 12, 64


timed_ms = partial(embed_gelu_matmul.timed_ms, iters=20)  # 20 calls a repeat, as this probe has always timed


def relative_l2(actual: jax.Array, expected: jax.Array) -> float:
    actual = actual.astype(jnp.float32)
    return float(jnp.linalg.norm(actual - expected) / jnp.linalg.norm(expected))


def attention_probe(clips: int = 32) -> None:
    from napari_sbl.embed import attention_kernels
    from napari_sbl.embed.attention import KernelTiling, xla_attention

    for label, num_keys, sequences in (("spatial", 256, clips * 16), ("temporal", 16, clips * 256)):
        keys = jax.random.split(jax.random.key(1), 3)
        shape = (sequences, num_keys, HEADS, HEAD_DIM)
        q, k, v = (jax.random.normal(key, shape, jnp.float32) for key in keys)
        q, k = 4 * q, 4 * k  # some logits past the cap, as after training
        wide = (q, k, v)
        q, k, v = (x.astype(jnp.bfloat16) for x in wide)
        zeros = (jnp.zeros((HEADS, HEAD_DIM), jnp.bfloat16),) * 3
        check = slice(0, 64)
        with jax.default_matmul_precision("highest"):
            expected = jax.jit(lambda q, k, v: xla_attention(q, k, v, scale=SCALE, logit_cap=CAP))(
                *(x[check] for x in wide))
        tiling = KernelTiling()  # the default, as the backbone runs it
        options = {"variant": "stream", "num_keys": num_keys, "block_q": tiling.rows(num_keys),
                   "block_k": tiling.keys_per_step(num_keys), "num_warps": tiling.num_warps, "scale": SCALE,
                   "logit_cap": CAP, "interpret": False, "biases": zeros}
        for fast in (False, True):
            fn = jax.jit(partial(attention_kernels.attention_call, **options, fast_tanh=fast))
            ms = timed_ms(fn, q, k, v)
            error = relative_l2(fn(q[check], k[check], v[check]), expected)
            layers = 12 if label == "spatial" else 4
            print(f"attention {label:<8} tanh {'approx' if fast else 'exact '}: {ms:.3f} ms/call, "
                  f"{ms * layers / clips:.4f} ms/clip over the stack, error vs fp32 {error:.2e}", flush=True)


def gelu_matmul_probe(rows: int = 131072) -> None:
    from napari_sbl.embed import gelu_matmul

    m, k, n = rows, 768, 3072
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (m, k), jnp.bfloat16)
    w = (jax.random.normal(keys[1], (k, n)) / k**0.5).astype(jnp.bfloat16)
    b = (jax.random.normal(keys[2], (n,)) * 0.1).astype(jnp.bfloat16)
    print(f"cuBLAS matmul + bias: {timed_ms(jax.jit(lambda x, w, b: x @ w + b), x, w, b):.3f} ms/call", flush=True)
    wide = [a.astype(jnp.float32) for a in (x[:4096], w, b)]
    with jax.default_matmul_precision("highest"):
        reference = wide[0] @ wide[1] + wide[2]
    exact = gelu_matmul.exact_gelu_from_accumulator
    try:
        for label, epilogue, expected in (("GELU epilogue", exact, jax.nn.gelu(reference, approximate=False)),
                                          ("bias-only epilogue", lambda z: z, reference)):
            gelu_matmul.exact_gelu_from_accumulator = epilogue  # read when the kernel is traced
            fn = jax.jit(lambda x, w, b: gelu_matmul.gelu_linear(x, w, b))
            error = relative_l2(fn(x, w, b)[:4096], expected)
            print(f"ours, {label}: {timed_ms(fn, x, w, b):.3f} ms/call, error vs fp32 {error:.2e}", flush=True)
    finally:
        gelu_matmul.exact_gelu_from_accumulator = exact


def main() -> int:
    print(f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}", flush=True)
    attention_probe()
    gelu_matmul_probe()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
