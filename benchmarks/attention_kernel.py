"""The fused attention kernel alone on this device: does it compile and match XLA, and how fast is it?

First a check: the kernel (compiled on a GPU, interpreted on a CPU) against fp32 'highest' XLA
attention for the sequence lengths VideoPrism meets (256 tokens per frame at 288 px, 144 at 216 px,
324 at 324 px; 16 and 8 frames in the temporal stack), bf16 and fp32. Exits 1 if any case is off.
Then timings of the attention core alone at base's shapes for B clips (spatial: B·16 frames × 256
keys, temporal: B·256 positions × 16 keys, 12 heads, head dim 64): XLA against the kernel tilings
that differ for that sequence length.

    python benchmarks/attention_kernel.py                 # on a GPU; well under a minute
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
TILINGS = [(64, 4), (64, 8), (128, 8), (32, 4), (16, 4), (16, 1)]  # (block_q, num_warps)
TOLERANCE = {"bfloat16": 1e-2, "float32": 1e-5}  # relative L2 against fp32 'highest' XLA


@dataclass
class Check:
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
        return f"check N={self.num_keys:<4} {self.dtype:<9} rel L2 vs fp32 XLA {self.error:.2e}  {verdict}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="clips per batch for the timings")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--no-time", action="store_true", help="only check the kernel against XLA")
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


def check(attention: Any, num_keys: int, dtype: Any) -> Check:
    import jax
    import jax.numpy as jnp

    query, key, value = random_qkv((8, num_keys, HEADS, HEAD_DIM), dtype)
    wide = [x.astype(jnp.float32) for x in (query, key, value)]
    name = jnp.dtype(dtype).name
    with jax.default_matmul_precision("highest"):
        expected = jax.jit(lambda q, k, v: attention.xla_attention(q, k, v, scale=SCALE, logit_cap=CAP))(*wide)
        try:
            fused = jax.jit(lambda q, k, v: attention.fused_attention(
                q, k, v, scale=SCALE, logit_cap=CAP))(query, key, value)
        except Exception as error:  # report every case, not only the first that fails
            return Check(num_keys, name, float("nan"), f"{type(error).__name__}: {one_line(error)}")
    error = float(jnp.linalg.norm(fused.astype(jnp.float32) - expected) / jnp.linalg.norm(expected))
    return Check(num_keys, name, error)


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


def time_stack(attention: Any, name: str, shape: tuple, layers: int, clips: int,
               args: argparse.Namespace) -> dict[str, float]:
    """One line per implementation: ms per call, and ms per clip over the stack's ``layers`` layers.

    Returns ms per call by label: 'xla' and the kernel tilings as ``BLOCK_QxWARPS``.
    """
    import jax
    import jax.numpy as jnp

    qkv = random_qkv(shape, jnp.bfloat16, seed=1)
    variants = {"xla": jax.jit(lambda q, k, v: attention.xla_attention(q, k, v, scale=SCALE, logit_cap=CAP))}
    candidates = (attention.KernelTiling(rows, warps) for rows, warps in TILINGS)
    tilings = {(tiling.rows(shape[1]), tiling.num_warps): tiling for tiling in candidates}
    for (block_q, num_warps), tiling in tilings.items():
        variants[f"{block_q}x{num_warps}"] = jax.jit(lambda q, k, v, tiling=tiling: attention.fused_attention(
            q, k, v, scale=SCALE, logit_cap=CAP, tiling=tiling))
    print(f"\n{name}: q/k/v {shape} bf16, {layers} layers per clip (fused rows: tiling BLOCK_QxWARPS)")
    timings = {}
    for label, fn in variants.items():
        try:
            timings[label] = milliseconds_per_call(fn, qkv, args.iters, args.repeats)
        except Exception as error:  # a tiling Triton cannot compile is a finding, not a crash
            print(f"  {label:<8} failed: {type(error).__name__}: {one_line(error)}")
            continue
        ms = timings[label]
        print(f"  {label:<8} {ms:8.3f} ms/call   {ms * layers / clips:7.4f} ms/clip over the stack", flush=True)
    return timings


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
    for num_keys, dtype in cases:
        checks.append(check(attention, num_keys, dtype))
        print(checks[-1].line(), flush=True)
    if not args.no_time:
        clips = args.clips
        spatial = time_stack(attention, "spatial", (clips * 16, 256, HEADS, HEAD_DIM), 12, clips, args)
        time_stack(attention, "temporal", (clips * 256, 16, HEADS, HEAD_DIM), 4, clips, args)
        fused = {label: ms for label, ms in spatial.items() if label != "xla"}
        if fused:
            print(f"\nbest spatial tiling: {min(fused, key=fused.get)}")
    return 0 if all(result.ok for result in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
