"""The fused attention kernel alone on this device: does it compile and match XLA, and how fast is it?

First a check: every kernel variant (block, stream, resident; compiled on a GPU, interpreted on a
CPU) against fp32 'highest' XLA attention for the sequence lengths VideoPrism meets (256 tokens per
frame at 288 px, 144 at 216 px, 324 at 324 px; 16 and 8 frames in the temporal stack), bf16 and
fp32. Exits 1 if any case is off. Then timings of the attention core alone at base's shapes for B
clips (spatial: B·16 frames × 256 keys, temporal: B·256 positions × 16 keys, 12 heads, head dim 64):
XLA against every variant × tiling that differs for that sequence length, the best per stack, and
the best single ``$NAPARI_SBL_ATTENTION_TILING`` for both stacks together (one setting serves both).

    python benchmarks/attention_kernel.py                 # on a GPU; about two minutes
    python benchmarks/attention_kernel.py --no-time       # the check only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCALE, CAP, HEADS, HEAD_DIM = 64**-0.5, 50.0, 12, 64
# [VARIANT:]BLOCK_QxWARPS[xBLOCK_K], as $NAPARI_SBL_ATTENTION_TILING takes them; both stacks time each
TILINGS = ["64x4", "128x8",  # block's two best on an H100 (0.391, 0.387 ms/clip; 32x4 0.422, 64x8 0.660)
           "stream:64x4", "stream:128x4", "stream:128x8", "stream:128x8x32",
           "resident:64x4", "resident:64x8", "resident:128x8", "resident:32x4"]
TEMPORAL_ONLY = ["16x1", "stream:16x1", "resident:16x1"]  # 16 keys: one warp holds a whole score tile
TOLERANCE = {"bfloat16": 1e-2, "float32": 1e-5}  # relative L2 against fp32 'highest' XLA


@dataclass
class Check:
    variant: str
    num_keys: int
    dtype: str
    error: float  # nan when the kernel did not compile or run
    failure: str = ""

    @property
    def ok(self) -> bool:
        return self.error < TOLERANCE[self.dtype]

    def line(self) -> str:
        if self.failure:
            verdict = f"FAIL: {self.failure}"
        else:
            verdict = "ok" if self.ok else f"FAIL (tolerance {TOLERANCE[self.dtype]:.0e})"
        return (f"check {self.variant:<8} N={self.num_keys:<4} {self.dtype:<9} rel L2 vs fp32 XLA {self.error:.2e}  "
                f"{verdict}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="clips per batch for the timings")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--no-time", action="store_true", help="only check the kernel against XLA")
    parser.add_argument("--tilings", nargs="+", default=TILINGS,
                        help="tilings to time in both stacks, [VARIANT:]BLOCK_QxWARPS[xBLOCK_K]")
    return parser.parse_args(argv)


def import_attention() -> Any:
    try:
        from napari_sbl.embed import attention
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from napari_sbl.embed import attention
    return attention


def random_qkv(shape: tuple, dtype: Any, seed: int = 0) -> tuple:
    """q and k scaled ×4 so that some capped logits saturate (|logit| > 50), as after training."""
    import jax

    keys = jax.random.split(jax.random.key(seed), 3)
    query, key, value = (jax.random.normal(k, shape, jax.numpy.float32) for k in keys)
    return (4 * query).astype(dtype), (4 * key).astype(dtype), value.astype(dtype)


def check(attention: Any, variant: str, num_keys: int, dtype: Any) -> Check:
    import jax
    import jax.numpy as jnp

    query, key, value = random_qkv((8, num_keys, HEADS, HEAD_DIM), dtype)
    wide = [x.astype(jnp.float32) for x in (query, key, value)]
    name = jnp.dtype(dtype).name
    tiling = attention.KernelTiling(variant=variant)
    with jax.default_matmul_precision("highest"):
        expected = jax.jit(lambda q, k, v: attention.xla_attention(q, k, v, scale=SCALE, logit_cap=CAP))(*wide)
        try:
            fused = jax.jit(lambda q, k, v: attention.fused_attention(
                q, k, v, scale=SCALE, logit_cap=CAP, tiling=tiling))(query, key, value)
        except Exception as error:  # report every case, not only the first that fails
            return Check(variant, num_keys, name, float("nan"), f"{type(error).__name__}: {one_line(error)}")
    error = float(jnp.linalg.norm(fused.astype(jnp.float32) - expected) / jnp.linalg.norm(expected))
    return Check(variant, num_keys, name, error)


def one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]


def milliseconds_per_call(fn: Any, args: tuple, iters: int, repeats: int) -> float:
    fn(*args).block_until_ready()  # compile
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            out = fn(*args)
        out.block_until_ready()
        timings.append((time.perf_counter() - start) / iters)
    return 1e3 * statistics.median(timings)


def time_stack(attention: Any, name: str, shape: tuple, layers: int, clips: int, tilings: list[str],
               args: argparse.Namespace) -> dict[str, float]:
    """One line per implementation: ms per call, and ms per clip over the stack's ``layers`` layers.

    Tilings that come to the same kernel at this sequence length are timed once. Returns ms per clip
    by label: 'xla', and each tiling text as given (duplicates share their kernel's time).
    """
    import jax
    import jax.numpy as jnp

    qkv = random_qkv(shape, jnp.bfloat16, seed=1)
    num_keys = shape[1]
    by_label = {}  # what runs at this length -> the tiling texts that come to it
    for text in tilings:
        by_label.setdefault(attention.KernelTiling.parse(text).label(num_keys), []).append(text)
    variants = {"xla": jax.jit(lambda q, k, v: attention.xla_attention(q, k, v, scale=SCALE, logit_cap=CAP))}
    for label, texts in by_label.items():
        tiling = attention.KernelTiling.parse(texts[0])
        variants[label] = jax.jit(lambda q, k, v, tiling=tiling: attention.fused_attention(
            q, k, v, scale=SCALE, logit_cap=CAP, tiling=tiling))
    print(f"\n{name}: q/k/v {shape} bf16, {layers} layers per clip (kernels as VARIANT:BLOCK_QxWARPS[xBLOCK_K])")
    per_clip = {}
    for label, fn in variants.items():
        try:
            ms = milliseconds_per_call(fn, qkv, args.iters, args.repeats)
        except Exception as error:  # a tiling Triton cannot compile is a finding, not a crash
            print(f"  {label:<18} failed: {type(error).__name__}: {one_line(error)}")
            continue
        print(f"  {label:<18} {ms:8.3f} ms/call   {ms * layers / clips:7.4f} ms/clip over the stack", flush=True)
        for text in by_label.get(label, [label]):
            per_clip[text] = ms * layers / clips
    return per_clip


def report_best(spatial: dict[str, float], temporal: dict[str, float], tilings: list[str]) -> None:
    """The fastest kernel per stack, and the one tiling text fastest for both stacks together."""
    print()
    for name, timings in (("spatial", spatial), ("temporal", temporal)):
        fused = {text: ms for text, ms in timings.items() if text != "xla"}
        if fused:
            best = min(fused, key=fused.get)
            print(f"best {name:<8}: {best:<18} {fused[best]:.4f} ms/clip (xla {timings.get('xla', float('nan')):.4f})")
    both = {text: spatial[text] + temporal[text] for text in tilings if text in spatial and text in temporal}
    if both:
        best = min(both, key=both.get)
        xla = spatial.get("xla", float("nan")) + temporal.get("xla", float("nan"))
        print(f"best for both stacks: NAPARI_SBL_ATTENTION_TILING={best}  {both[best]:.4f} ms/clip "
              f"(spatial {spatial[best]:.4f} + temporal {temporal[best]:.4f}; xla {xla:.4f})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    attention = import_attention()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}); jax {jax.__version__}")
    cases = [(256, jnp.bfloat16), (144, jnp.bfloat16), (324, jnp.bfloat16), (16, jnp.bfloat16), (8, jnp.bfloat16),
             (256, jnp.float32)]
    checks = []
    for variant in attention.KERNEL_VARIANTS:
        for num_keys, dtype in cases:
            checks.append(check(attention, variant, num_keys, dtype))
            print(checks[-1].line(), flush=True)
    if not args.no_time:
        clips = args.clips
        spatial = time_stack(attention, "spatial", (clips * 16, 256, HEADS, HEAD_DIM), 12, clips, args.tilings, args)
        temporal = time_stack(attention, "temporal", (clips * 256, 16, HEADS, HEAD_DIM), 4, clips,
                              args.tilings + TEMPORAL_ONLY, args)
        report_best(spatial, temporal, args.tilings)
    return 0 if all(result.ok for result in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
