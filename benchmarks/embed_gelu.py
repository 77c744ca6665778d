"""Which exact-GELU formulation the VideoPrism MLP should use: accuracy, the pass alone, the whole backbone.

The MLP's GELU is the widest elementwise pass of the backbone (tokens × 3072 per layer). XLA fuses
it with fc1's bias but not into the matmul, so its own cost shows in the backbone's throughput.
Variants (all but ``tanh`` are the exact GELU to float32 rounding):

- ``erfc``: ``jax.nn.gelu(approximate=False)``, written with ``erfc`` (the previous implementation);
- ``erf``: ``videoprism_model.exact_gelu``, ``x·(1 + erf(x/√2))/2`` in float32 (the current one);
- ``tanh``: the tanh approximation, a reference only (the spec requires the exact GELU).

    python benchmarks/embed_gelu.py --out benchmarks/results/embed_gelu.md      # on a GPU
    python benchmarks/embed_gelu.py --quick                                     # CPU smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from embed_backbone import import_videoprism, seconds_per_call


def variants() -> dict:
    import jax

    from napari_sbl.embed import videoprism_model

    return {
        "erfc": lambda x: jax.nn.gelu(x, approximate=False),
        "erf": videoprism_model.exact_gelu,
        "tanh": lambda x: jax.nn.gelu(x, approximate=True).astype(x.dtype),
    }


def accuracy_lines(gelus: dict) -> list[str]:
    """Largest absolute error against a float64 reference on [-10, 10], float32 and bfloat16 inputs."""
    import math

    import jax.numpy as jnp
    import numpy as np

    grid = np.linspace(-10, 10, 200_001)
    erf = np.vectorize(math.erf)
    lines = []
    for name, gelu in gelus.items():
        for dtype in ("float32", "bfloat16"):
            x = jnp.asarray(grid, dtype)
            wide = np.asarray(x.astype(jnp.float32), np.float64)
            reference = 0.5 * wide * (1 + erf(wide / math.sqrt(2)))
            got = np.asarray(gelu(x).astype(jnp.float32), np.float64)
            lines.append(f"- {name} {dtype}: max |error| {np.max(np.abs(got - reference)):.2e}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per backbone call")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    videoprism = import_videoprism()
    from napari_sbl.embed import videoprism_model

    gelus = variants()
    model, size, frames = ("tiny", 16, 4) if args.quick else ("base", 288, 16)
    if args.quick:
        args.batch, args.iters, args.repeats = 2, 2, 1
    config = videoprism.VideoPrismConfig.named(model)
    tokens = args.batch * frames * (size // config.patch_size) ** 2
    hidden = jax.random.normal(jax.random.key(0), (tokens, config.mlp_dim), jnp.bfloat16)
    clips = jax.random.uniform(jax.random.key(1), (args.batch, frames, size, size, 3), jnp.float32)
    base = videoprism.load_encoder(model=model, weights="random", dtype="bfloat16")
    device = jax.devices()[0]
    lines = ["# Exact GELU formulations in the VideoPrism MLP", "",
             f"- device: {device.device_kind} ({device.platform}); jax {jax.__version__}",
             f"- pass alone: ({tokens}, {config.mlp_dim}) bf16; backbone: {model}, {args.batch} clips of "
             f"{frames}×{size}², bf16, attention auto", *accuracy_lines(gelus), "",
             "| variant | GELU pass ms | backbone ms/batch | clips/s |", "|---|---:|---:|---:|"]
    original = videoprism_model.exact_gelu
    for name, gelu in gelus.items():
        alone = seconds_per_call(jax.jit(gelu), hidden, args.iters, args.repeats)
        videoprism_model.exact_gelu = gelu  # read when the forward is traced, below
        videoprism._compiled_forward.cache_clear()  # compiled forwards are shared per (config, dtype, attention)
        try:
            encoder = videoprism.VideoPrismEncoder(base.config, base.variables, "bfloat16",
                                                   weights_source=base.weights_source)
            seconds = seconds_per_call(encoder, clips, args.iters, args.repeats)
        finally:
            videoprism_model.exact_gelu = original
            videoprism._compiled_forward.cache_clear()
        lines.append(f"| {name} | {alone * 1e3:.3f} | {seconds * 1e3:.1f} | {args.batch / seconds:.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
