"""Where the VideoPrism backbone's GPU time goes, kernel by kernel.

JAX has no kernel-level report of its own here, but CUPTI, which ``torch.profiler`` drives, records
every kernel the process launches, XLA's and Pallas's included. This runs the bf16 backbone (random
weights, inputs on the device) a few times under the torch profiler and sums the kernels' GPU time per
clip, by kind (cuBLAS/cuBLASLt matmuls, Pallas/Triton kernels, XLA's own fusions) and for the costliest
kernels, so the gap between the measured rate and the matmul roofline has names.

    python benchmarks/embed_profile.py --out $OUT            # on a GPU (torch and jax both installed)
    python benchmarks/embed_profile.py --quick               # tiny config on the CPU: no kernels, smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MATMUL_MARKS = ("gemm", "nvjet", "cutlass", "xmma", "cublas", "sm90_", "sm80_")


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    if any(mark in name for mark in MATMUL_MARKS):
        return "matmul (cuBLAS/cuBLASLt)"
    if "triton" in name or "pallas" in name or "attention" in name or ("kernel" in name and "fusion" not in name):
        return "Pallas/Triton kernels"
    if "fusion" in name or name.startswith(("loop_", "input_", "wrapped_")):
        return "XLA fusions"
    if "memcpy" in name or "memset" in name:
        return "copies"
    return "other"


def profile_backbone(batch: int, calls: int, quick: bool) -> tuple[list[tuple[str, float, int]], float, str]:
    """(kernel, µs per clip, launches per call) sorted by time, the wall ms per call, the device name."""
    import jax
    import torch
    from torch.profiler import ProfilerActivity, profile

    from embed_backbone import import_videoprism

    videoprism = import_videoprism()
    model = "tiny" if quick else "base"
    fp32 = videoprism.load_encoder(model=model, weights="random")
    encoder = videoprism.VideoPrismEncoder(fp32.config, fp32.variables, "bfloat16", weights_source=fp32.weights_source)
    frames_per_clip = 4 if quick else fp32.config.pos_emb_frames
    size = 16 if quick else 288
    frames = jax.random.uniform(jax.random.key(0), (batch, frames_per_clip, size, size, 3), jax.numpy.float32)
    encoder(frames).block_until_ready()  # compile
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.init()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(calls):
            tokens = encoder(frames)
        tokens.block_until_ready()
    wall_ms = (time.perf_counter() - started) * 1e3 / calls
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.key_averages():
        if event.self_device_time_total > 0:
            totals[event.key][0] += event.self_device_time_total
            totals[event.key][1] += event.count
    clips = batch * calls
    rows = sorted(((name, us / clips, round(count / calls)) for name, (us, count) in totals.items()),
                  key=lambda row: -row[1])
    return rows, wall_ms, jax.devices()[0].device_kind


def report(rows: list[tuple[str, float, int]], wall_ms: float, batch: int, device: str) -> str:
    total = sum(us for _, us, _ in rows)
    lines = [f"VideoPrism backbone (base unless --quick), bf16, {batch} clips per call, {device}: GPU time per clip",
             "",
             f"all kernels: {total / 1e3:.3f} ms per clip; wall {wall_ms / batch:.3f} ms per clip "
             f"({batch / wall_ms * 1e3:.1f} clips/s under the profiler)", "", "by kind:"]
    kinds: dict[str, tuple[float, int]] = defaultdict(lambda: (0.0, 0))
    for name, us, launches in rows:
        spent, count = kinds[kind_of(name)]
        kinds[kind_of(name)] = (spent + us, count + launches)
    for kind, (us, launches) in sorted(kinds.items(), key=lambda item: -item[1][0]):
        lines.append(f"  {kind:28s} {us / 1e3:8.3f} ms  ({launches} launches per call)")
    lines += ["", "costliest kernels (ms per clip, launches per call):"]
    lines += [f"  {us / 1e3:8.4f}  {launches:5d}×  {name[:120]}" for name, us, launches in rows[:40]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.quick:
        args.batch, args.calls = 2, 1
    rows, wall_ms, device = profile_backbone(args.batch, args.calls, args.quick)
    text = report(rows, wall_ms, args.batch, device)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "embed_gpu_profile.txt").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
