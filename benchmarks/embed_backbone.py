"""Throughput of the VideoPrism backbone alone: upstream-style fp32 (TF32 matmuls) vs our bf16 path.

Random weights (speed does not depend on them), inputs already on the device, so the numbers are
the encoder's compute only: no decoding, resizing or host-to-device copies. Donating the input
buffer would not help (the output has a different shape), so nothing is donated. ``--attention``
times each mode with each attention implementation (XLA einsums or the fused Pallas kernel),
same process, same weights, and reports how far their tokens are apart on one clip.

    python benchmarks/embed_backbone.py --out benchmarks/results/embed_backbone.md
    python benchmarks/embed_backbone.py --modes bf16 --attention xla fused
    python benchmarks/embed_backbone.py --quick          # tiny config, one batch; runs on CPU
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

PEAK_BF16_TFLOPS = {"H100": 790.0, "H200": 790.0}  # measured dense bf16 peak (specs/videoprism.md)
MODES = {
    "fp32-tf32": ("float32", "tensorfloat32", "seed style: fp32 params and activations, TF32 matmuls"),
    "fp32-highest": ("float32", "highest", "true fp32 matmuls (parity reference)"),
    "bf16": ("bfloat16", "default", "ours: params cast once to bf16, bf16 matmuls, fp32 softmax"),
}
ATTENTIONS = {
    "xla": "XLA einsums; capped scores and probabilities round-trip through HBM",
    "fused": "Pallas kernel (embed/attention.py): scores, tanh cap and fp32 softmax on chip; both stacks",
}


@dataclass
class Row:
    mode: str
    batch: int
    ms_per_batch: float | None
    clips_per_s: float | None
    tflops: float | None
    note: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", choices=["base", "large"])
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: trained T0)")
    parser.add_argument("--size", type=int, default=288, help="frame side in px")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--modes", nargs="+", default=["fp32-tf32", "bf16"], choices=sorted(MODES))
    parser.add_argument("--attention", nargs="+", default=["auto"], choices=["auto", *ATTENTIONS],
                        help="attention implementations to time ('auto': fused on GPU, else XLA)")
    parser.add_argument("--mlp", default=None,
                        help="bf16 encoders' MLP: 'xla', 'fused', 'fused:TILING' (default: the encoder's 'auto')")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--no-check", action="store_true", help="skip the bf16-vs-fp32 agreement check")
    parser.add_argument("--quick", action="store_true", help="tiny config, one small batch (CPU smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as Markdown here")
    return parser.parse_args(argv)


def import_videoprism() -> Any:
    """The encoder module, from the installed package or this checkout's ``src``."""
    try:
        from napari_sbl.embed import videoprism
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from napari_sbl.embed import videoprism
    return videoprism


def seconds_per_call(encoder: Any, frames: Any, iters: int, repeats: int) -> float:
    """Median wall time of one call; the first (compiling) call is not timed."""
    encoder(frames).block_until_ready()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            tokens = encoder(frames)
        tokens.block_until_ready()
        timings.append((time.perf_counter() - start) / iters)
    return statistics.median(timings)


def is_out_of_memory(error: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def measure(encoder: Any, precision: str, mode: str, batch: int, clip_shape: tuple, flops: float, args) -> Row:
    import jax

    try:
        frames = jax.random.uniform(jax.random.key(batch), (batch, *clip_shape), jax.numpy.float32)
        with jax.default_matmul_precision(precision):
            seconds = seconds_per_call(encoder, frames, args.iters, args.repeats)
    except Exception as error:  # only out-of-memory becomes a row; anything else is a bug
        if not is_out_of_memory(error):
            raise
        return Row(mode, batch, None, None, None, "out of memory")
    clips_per_s = batch / seconds
    return Row(mode, batch, seconds * 1e3, clips_per_s, clips_per_s * flops / 1e12)


def one_clip_tokens(encoder: Any, clip_shape: tuple, precision: str = "default") -> Any:
    """fp32 tokens of one fixed random clip (the same clip for every encoder)."""
    import jax
    import jax.numpy as jnp

    frames = jax.random.uniform(jax.random.key(7), (1, *clip_shape), jnp.float32)
    with jax.default_matmul_precision(precision):
        return encoder(frames).astype(jnp.float32)


def relative_l2(actual: Any, expected: Any) -> float:
    import jax.numpy as jnp

    return float(jnp.linalg.norm(actual - expected) / jnp.linalg.norm(expected))


def agreement_lines(encoders: dict, attentions: list[str], clip_shape: tuple) -> list[str]:
    """bf16 tokens of each attention against fp32 'highest' (XLA) tokens, and fused against XLA in bf16."""
    expected = one_clip_tokens(encoders["float32", "xla"], clip_shape, "highest")
    bf16 = {attention: one_clip_tokens(encoders["bfloat16", attention], clip_shape) for attention in attentions}
    lines = [
        f"- bf16 ({attention}) vs fp32 (highest, xla) tokens, one clip: relative L2 error "
        f"{relative_l2(tokens, expected):.2e}"
        for attention, tokens in bf16.items()
    ]
    if {"xla", "fused"} <= set(bf16):
        lines.append(f"- bf16 fused vs bf16 xla tokens, one clip: relative L2 difference "
                     f"{relative_l2(bf16['fused'], bf16['xla']):.2e}")
    return lines


def tiling_label(tiling: Any) -> str:
    """As ``$NAPARI_SBL_ATTENTION_TILING`` writes it; the kernel shrinks the blocks to fit each stack."""
    text = f"{tiling.variant}:{tiling.block_q}x{tiling.num_warps}"
    return f"{text}x{tiling.block_k}" if tiling.variant == "stream" else text


def build_encoders(videoprism: Any, model: str, dtypes: set[str], attentions: list[str], mlp: str | None) -> dict:
    """``(dtype, attention) -> encoder``, all on one set of random weights (bf16 cast once, shared); the
    float32 reference runs XLA's MLP, the others ``mlp`` (None: the encoder's own choice)."""
    fp32 = videoprism.load_encoder(model=model, weights="random", attention="xla", mlp="xla")
    shared = {"float32": fp32}
    if "bfloat16" in dtypes:
        shared["bfloat16"] = videoprism.VideoPrismEncoder(
            fp32.config, fp32.variables, "bfloat16", weights_source=fp32.weights_source, attention="xla", mlp="xla"
        )
    return {
        (dtype, attention): videoprism.VideoPrismEncoder(
            base.config, base.variables, dtype, weights_source=base.weights_source, attention=attention,
            mlp="xla" if dtype == "float32" else mlp,
        )
        for dtype, base in shared.items()
        for attention in {*attentions, "xla"}
    }


def markdown(rows: list[Row], header: list[str], peak: float | None) -> str:
    peak_column = " % of bf16 peak |" if peak else ""
    lines = [*header, "", f"| mode | batch | ms/batch | clips/s | TFLOP/s |{peak_column} note |"]
    lines.append("|---" * (6 + bool(peak)) + "|")
    for row in rows:
        if row.clips_per_s is None:
            lines.append(f"| {row.mode} | {row.batch} | – | – | – |{' – |' if peak else ''} {row.note} |")
            continue
        share = f" {100 * row.tflops / peak:.0f} % |" if peak else ""
        lines.append(
            f"| {row.mode} | {row.batch} | {row.ms_per_batch:.1f} | {row.clips_per_s:.1f} | "
            f"{row.tflops:.3g} |{share} {row.note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX is imported
    import flax
    import jax

    videoprism = import_videoprism()
    from napari_sbl.embed.attention import KernelTiling
    from napari_sbl.embed.attention import implementation_on as attention_on
    model = "tiny" if args.quick else args.model
    config = videoprism.VideoPrismConfig.named(model)
    if args.quick:
        args.size, args.frames, args.batch_sizes, args.iters, args.repeats = 16, 4, [2], 2, 1
    num_frames = args.frames or config.pos_emb_frames
    clip_shape = (num_frames, args.size, args.size, 3)
    flops = videoprism.matmul_flops_per_clip(config, num_frames, args.size, args.size)
    device = jax.devices()[0]
    peak = next((value for name, value in PEAK_BF16_TFLOPS.items() if name in device.device_kind), None)
    attentions = list(dict.fromkeys(attention_on(choice, device.platform) for choice in args.attention))

    dtypes = {MODES[mode][0] for mode in args.modes} | (set() if args.no_check else {"bfloat16"})
    encoders = build_encoders(videoprism, model, dtypes, attentions, args.mlp)
    rows = []
    for mode in args.modes:
        dtype, precision, _ = MODES[mode]
        for batch in args.batch_sizes:
            for attention in attentions:
                encoder = encoders[dtype, attention]
                label = f"{mode} {attention}" + ("" if encoder.mlp == "xla" else f" mlp {encoder.mlp}")
                row = measure(encoder, precision, label, batch, clip_shape, flops, args)
                rows.append(row)
                speed = f"{row.clips_per_s:8.1f} clips/s {row.tflops:8.3g} TFLOP/s" if row.clips_per_s else row.note
                print(f"{label:>18} B={batch:<3} {speed}", flush=True)

    header = [
        "# VideoPrism backbone throughput",
        "",
        f"- device: {device.device_kind} ({device.platform}); jax {jax.__version__}, flax {flax.__version__}",
        f"- model: {model}, {num_frames} frames × {args.size}² px, random weights, inputs on device; "
        f"{flops / 1e9:.4g} GFLOP/clip (matmuls, 2 per multiply-add)",
        f"- timing: median of {args.repeats} × {args.iters} calls after one compiling call",
        f"- command: `python {' '.join(['benchmarks/embed_backbone.py', *(argv or sys.argv[1:])])}`",
        *(f"- {mode}: {MODES[mode][2]}" for mode in args.modes),
        *(f"- attention {attention}: {ATTENTIONS[attention]}" for attention in attentions),
        *([f"- fused tiling ($NAPARI_SBL_ATTENTION_TILING): {tiling_label(KernelTiling.from_environment())}"]
          if "fused" in attentions else []),
    ]
    if not args.no_check:
        header.extend(agreement_lines(encoders, attentions, clip_shape))
    table = markdown(rows, header, peak)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
