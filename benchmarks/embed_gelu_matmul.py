"""The MLP's first layer with its exact GELU: XLA (cuBLAS matmul, then a GELU pass) against our Mosaic GPU kernel.

At VideoPrism base's shape for 32 clips (131,072 token rows × 768 → 3,072, bf16), times XLA's
``exact_gelu(x @ W + b)``, XLA's ``x @ W + b`` alone (what a free epilogue would cost) and
:func:`napari_sbl.embed.gelu_matmul.gelu_linear` for each tiling, and checks each against a float32
reference. Needs an H100 (sm_90).

    python benchmarks/embed_gelu_matmul.py --out /tmp/out/embed_gelu_matmul.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

TILINGS = ("128x128x2", "128x128x2xws", "128x128x3xws", "128x128x3xwsxg8", "128x64x4xws", "128x64x5xws",
           "128x192x2xws")


def timed_ms(fn: Callable[..., Any], *args: Any, iters: int = 10, repeats: int = 3) -> float:
    """Median milliseconds of one call of jitted ``fn(*args)`` over ``repeats`` runs of ``iters``, after a
    compiling call (also :mod:`embed_kernel_probe`'s timer)."""
    jax.block_until_ready(fn(*args))
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(iters):
            out = fn(*args)
        jax.block_until_ready(out)
        runs.append((time.perf_counter() - started) / iters * 1e3)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=131072)
    parser.add_argument("--tilings", nargs="+", default=list(TILINGS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/embed_gelu_matmul.md"))
    args = parser.parse_args()
    from napari_sbl.embed.gelu_matmul import GeluMatmulTiling, gelu_linear_jit
    from napari_sbl.embed.videoprism_model import exact_gelu

    m, k, n = args.rows, 768, 3072
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (m, k), jnp.bfloat16)
    w = (jax.random.normal(keys[1], (k, n)) / k**0.5).astype(jnp.bfloat16)
    b = (jax.random.normal(keys[2], (n,)) * 0.1).astype(jnp.bfloat16)
    flops = 2.0 * m * k * n
    check_rows = 4096  # float32 reference on a slice

    @jax.jit
    def xla_gelu(x, w, b):
        return exact_gelu((x @ w + b).astype(jnp.float32)).astype(jnp.bfloat16)

    @jax.jit
    def xla_matmul(x, w, b):
        return x @ w + b

    reference = jax.nn.gelu(x[:check_rows].astype(jnp.float32) @ w.astype(jnp.float32) + b.astype(jnp.float32),
                            approximate=False)

    def error(out) -> float:
        return float(jnp.linalg.norm(out[:check_rows].astype(jnp.float32) - reference) / jnp.linalg.norm(reference))

    rows = []
    for label, fn in (("XLA: matmul + bias, then GELU pass", xla_gelu), ("XLA: matmul + bias alone", xla_matmul)):
        ms = timed_ms(fn, x, w, b)
        rows.append((label, ms, flops / ms / 1e9, error(fn(x, w, b)) if fn is xla_gelu else float("nan")))
        print(rows[-1], flush=True)
    for text in args.tilings:
        tiling = GeluMatmulTiling.parse(text)
        try:
            ms = timed_ms(lambda x, w, b, tiling=tiling: gelu_linear_jit(x, w, b, tiling=tiling), x, w, b)
            rows.append((f"ours {text}", ms, flops / ms / 1e9, error(gelu_linear_jit(x, w, b, tiling=tiling))))
        except Exception as err:  # a tiling that does not fit (shared memory, registers) or does not lower
            print(f"ours {text} failed: {type(err).__name__}: {str(err)[:1500]}", flush=True)
            continue
        print(rows[-1], flush=True)
    lines = [f"- device: {jax.devices()[0].device_kind}; jax {jax.__version__}; ({m} × {k}) @ ({k} × {n}) bf16",
             "- error: relative L2 against float32 `gelu(x W + b)` on the first 4,096 rows", "",
             "| implementation | ms/call | TFLOP/s | error |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {ms:.3f} | {tflops:.0f} | {err:.2e} |" for label, ms, tflops, err in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
