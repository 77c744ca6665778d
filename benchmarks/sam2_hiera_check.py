"""Hiera's attention kernel, fused GELU MLPs and the memory encoder's norm kernel on a GPU: the same outputs,
and how much faster each runs.

Three parts, per model:

1. Attention calls: every ``MultiScaleAttention`` call of one 8-frame encoder pass is recorded (q, k, v
   shapes); each distinct shape is timed through PyTorch's attention (SAM2's transposed views, flash on an
   H100) and through :func:`heads_attention` under a few tilings; reported as ms per encoder pass (time ×
   calls) and the kernel's difference from float32 attention on the same inputs.
2. The image encoder under bf16 autocast, cumulatively: SAM2 as built → our layer norms and windowed blocks
   (the previous default) → + our attention → + the fused MLP: each output's relative L2 difference from the
   same encoder in float32, and the encoder's time per batch (bf16 weights, as the tracker stores them).
3. The memory encoder on two animals' masks, SAM2's and with :mod:`napari_sbl.segment.sam2_memory_encoder`:
   distance from float32 and time per call (replayed from a CUDA graph, as the tracker runs it).

    python benchmarks/sam2_hiera_check.py --models tiny large
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
import torch.nn.functional as F

from sam2_layer_norm_check import difference, timed_ms  # this folder is on the path when run as a script

TILINGS = ((128, 64, 4, 2), (128, 64, 8, 2), (128, 64, 4, 3), (64, 64, 4, 2), (128, 32, 4, 3), (64, 32, 4, 3),
           (128, 128, 8, 2))


def build(model: str, bf16_weights: bool):
    from napari_sbl.segment.sam2_build import build_predictor
    from napari_sbl.segment.sam2_tracker import Sam2Params

    params = Sam2Params(model=model, weights="random", device="cuda", cuda_graphs=False, fused_layer_norms=False,
                        fused_hiera_attention=False, fused_hiera_mlp=False, fused_memory_encoder=False,
                        bf16_weights=bf16_weights)  # SAM2 as it is; each part then swapped in by hand
    return build_predictor(params, None, torch.device("cuda")).eval()


def attention_shapes(predictor, images: torch.Tensor) -> Counter:
    """(batch, queries, keys, heads, head_dim) of every Hiera attention call in one encoder pass."""
    from sam2.modeling.backbones.hieradet import MultiScaleAttention

    shapes: Counter = Counter()

    def record(module, args, output):
        batch, height, width, _ = args[0].shape
        _, out_height, out_width, channels = output.shape
        head_dim = channels // module.num_heads
        shapes[(batch, out_height * out_width, height * width, module.num_heads, head_dim)] += 1

    handles = [m.register_forward_hook(record) for m in predictor.modules() if isinstance(m, MultiScaleAttention)]
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        predictor.forward_image(images)
    for handle in handles:
        handle.remove()
    return shapes


def shape_timings(batch: int, queries: int, keys: int, heads: int, head_dim: int) -> tuple:
    """(PyTorch ms, ours ms, (best ms, tiling), PyTorch vs float32, ours vs float32) for one call shape."""
    from napari_sbl.segment.sam2_hiera_layers import heads_attention

    generator = torch.Generator(device="cuda").manual_seed(queries)
    qkv = torch.randn(batch, keys, 3, heads, head_dim, device="cuda", generator=generator).bfloat16()
    q, k, v = torch.unbind(qkv, 2)
    q = q[:, :queries].contiguous() if queries != keys else q

    def pytorch():
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    def cudnn():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return pytorch()

    with torch.inference_mode():
        try:
            cudnn_ms = timed_ms(cudnn)
        except RuntimeError:  # no cuDNN attention for this shape here
            cudnn_ms = float("nan")
        sdpa_ms = timed_ms(pytorch)
        best = min((timed_ms(lambda t=t: heads_attention(q, k, v, t)), t) for t in TILINGS)
        ours_ms = timed_ms(lambda: heads_attention(q, k, v))
        exact = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        return (sdpa_ms, ours_ms, best, difference(pytorch(), exact), difference(heads_attention(q, k, v), exact),
                cudnn_ms)


def attention_lines(model: str, shapes: Counter) -> list[str]:
    from napari_sbl.segment.sam2_hiera_layers import HieraAttention

    lines, total_sdpa, total_ours, total_used = [], 0.0, 0.0, 0.0
    for shape, calls in sorted(shapes.items()):
        sdpa_ms, ours_ms, best, sdpa_error, error, cudnn_ms = shape_timings(*shape)
        batch, queries, keys, heads, head_dim = shape
        total_sdpa += sdpa_ms * calls
        total_ours += ours_ms * calls
        total_used += (ours_ms if keys <= HieraAttention.kernel_max_keys else sdpa_ms) * calls
        lines.append(f"| {model} | {batch}×{queries}×{keys}, {heads}×{head_dim} | {calls} | {sdpa_ms:.3f} | "
                     f"{cudnn_ms:.3f} | "
                     f"{ours_ms:.3f} | {best[0]:.3f} ({'x'.join(map(str, best[1]))}) | {sdpa_error:.2e} | "
                     f"{error:.2e} |")
    lines.append(f"| {model} | **all calls of one pass** | {sum(shapes.values())} | {total_sdpa:.2f} | – | "
                 f"{total_ours:.2f} | – | – | – |")
    lines.append(f"| {model} | **as the tracker runs them** (ours up to {HieraAttention.kernel_max_keys} keys) | "
                 f"{sum(shapes.values())} | – | – | {total_used:.2f} | – | – | – |")
    return lines


def encoder_lines(model: str, batch: int) -> list[str]:
    from napari_sbl.segment.sam2_build import _fuse_hiera_layers, _fuse_layer_norms, store_autocast_weights

    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, 1024, 1024, device=device, generator=generator)
    steps = (("SAM2 as built", lambda p: None),
             ("+ our layer norms and windowed blocks", lambda p: _fuse_layer_norms(p, device, trunk=True)),
             ("+ our attention", lambda p: _fuse_hiera_layers(p, device, True, False)),
             ("+ fused MLP (tanh GELU)", lambda p: _fuse_hiera_layers(p, device, False, True)))
    predictor = build(model, bf16_weights=False)  # float32 weights, so that float32 can be computed too

    def encode():
        return predictor.forward_image(images)["backbone_fpn"]

    with torch.inference_mode():
        exact = encode()
    distances = []
    for _, apply in steps:
        apply(predictor)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            distances.append([difference(ours, theirs) for ours, theirs in zip(encode(), exact, strict=True)])
    predictor = build(model, bf16_weights=False)
    store_autocast_weights(predictor, torch.bfloat16)  # as the tracker runs it
    lines = []
    for (label, apply), distance in zip(steps, distances, strict=True):
        apply(predictor)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            ms = timed_ms(encode)
        levels = " / ".join(f"{d:.2e}" for d in distance)
        lines.append(f"| {model} | {label} | {ms:.2f} | {levels} |")
    return lines


def memory_encoder_lines(model: str) -> list[str]:
    from napari_sbl.segment.sam2_build import store_autocast_weights
    from napari_sbl.segment.sam2_memory_encoder import use_fused_memory_encoder

    generator = torch.Generator(device="cuda").manual_seed(1)
    pix_feat = torch.randn(2, 256, 64, 64, device="cuda", generator=generator)
    masks = 8 * torch.randn(2, 1, 1024, 1024, device="cuda", generator=generator)

    def run(encoder):
        return encoder(pix_feat, masks)["vision_features"]

    lines = []
    with torch.inference_mode():
        exact = run(build(model, bf16_weights=False).memory_encoder)  # the same seed builds the same weights
        for label in ("SAM2's", "ours"):
            accurate = build(model, bf16_weights=False).memory_encoder
            timed = build(model, bf16_weights=False).memory_encoder
            store_autocast_weights(timed, torch.bfloat16)  # as the tracker runs it
            if label == "ours":
                use_fused_memory_encoder(accurate)
                use_fused_memory_encoder(timed)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                distance = difference(run(accurate), exact)
                ms = graph_ms(lambda timed=timed: run(timed))
            lines.append(f"| {model} | {label} | {ms:.3f} | {distance:.2e} |")
    return lines


def graph_ms(fn, replays: int = 50) -> float:
    """ms per call of ``fn`` replayed from a CUDA graph (the tracker replays the memory encoder so)."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timed_ms(graph.replay, replays)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "large"])
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}\n")
    print("| model | attention call (batch×queries×keys, heads×width) | calls | PyTorch ms | cuDNN ms | ours ms | "
          "ours best tiling ms | PyTorch vs float32 | ours vs float32 |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models:
        images = torch.randn(args.batch, 3, 1024, 1024, device="cuda")
        shapes = attention_shapes(build(model, bf16_weights=True), images)
        print("\n".join(attention_lines(model, shapes)), flush=True)
    print("\n| model | image encoder | ms per batch | distance from float32, levels 0 / 1 / 2 |\n|---|---|---:|---|")
    for model in args.models:
        print("\n".join(encoder_lines(model, args.batch)), flush=True)
    print("\n| model | memory encoder, 2 animals | ms per call | distance from float32 |\n|---|---|---:|---:|")
    for model in args.models:
        print("\n".join(memory_encoder_lines(model)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
