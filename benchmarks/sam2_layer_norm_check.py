"""Our layer-norm kernel inside SAM2 on a GPU: the same features, and how much faster the image encoder runs.

For each model: SAM2's image encoder on a batch of random frames and one memory-attention call on
random inputs under bf16 autocast, as the tracker runs them, first with PyTorch's layer norms, then
with :mod:`napari_sbl.segment.sam2_layer_norm` swapped in: the relative L2 difference of every output,
each one's distance from the same computed in float32 (the scale of bf16's own rounding), and the
encoder's time per batch. (The CPU tests show the same on Triton's interpreter in float16.)

    python benchmarks/sam2_layer_norm_check.py --models tiny large
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed_ms(fn, iters: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - started) / iters * 1e3)
    return statistics.median(runs)


def difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.float() - theirs.float()).norm() / theirs.float().norm())


def check(model: str, batch: int) -> list[str]:
    from napari_sbl.segment.sam2_build import _fuse_layer_norms, build_predictor
    from napari_sbl.segment.sam2_tracker import Sam2Params

    device = torch.device("cuda")
    params = Sam2Params(model=model, weights="random", device="cuda", cuda_graphs=False, fused_layer_norms=False,
                        bf16_weights=False)  # float32 weights, so that float32 can be computed too
    predictor = build_predictor(params, None, device).eval()
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, 1024, 1024, device=device, generator=generator)
    curr = torch.randn(4096, 2, 256, device=device, generator=generator)
    memory = torch.randn(7 * 4096 + 16, 2, 64, device=device, generator=generator)
    curr_pos, memory_pos = torch.randn_like(curr), torch.randn_like(memory)

    def encode():
        return predictor.forward_image(images)["backbone_fpn"]

    def attend():
        return predictor.memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=16)

    lines = []
    with torch.inference_mode():
        exact_levels, exact_memory = encode(), attend()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        before_levels, before_memory = encode(), attend()
        before_ms = timed_ms(encode)
        replaced = _fuse_layer_norms(predictor, device, trunk=True)  # as the tracker builds it
        after_levels, after_memory = encode(), attend()
        after_ms = timed_ms(encode)
    outputs = [(f"image features, level {level} {tuple(theirs.shape)}", ours, theirs, exact)
               for level, (ours, theirs, exact) in enumerate(zip(after_levels, before_levels, exact_levels,
                                                                  strict=True))]
    outputs.append(("memory attention output", after_memory, before_memory, exact_memory))
    for label, ours, theirs, exact in outputs:
        lines.append(f"| {model} | {label} | {difference(ours, theirs):.2e} | {difference(theirs, exact):.2e} | "
                     f"{difference(ours, exact):.2e} |")
    lines.append(f"| {model} | image encoder, {batch} frames: {before_ms:.2f} → {after_ms:.2f} ms "
                 f"({replaced} norms replaced) | – | – | – |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "large"])
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}\n")
    print("| model | output | ours vs PyTorch's norms | PyTorch's vs float32 | ours vs float32 |\n"
          "|---|---|---:|---:|---:|")
    for model in args.models:
        print("\n".join(check(model, args.batch)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
