"""SAM2's memory cross-attention: SAM2's own module against ours (Triton, on the memories' 64 channels).

Times one cross-attention call at SAM2.1's sizes (two animals, 4,096 query tokens, 7 memory frames of
4,096 tokens plus 64 object-pointer tokens, one head 256 wide) and the whole memory attention (four
layers of the tiny model), each replayed from a CUDA graph as the tracker runs them, for SAM2's code
and for each Triton tiling; checks the error of each against SAM2's float32 result. Writes a Markdown
table and the fastest tiling (one line, ``QxKxWxSxP``) beside it.

    python benchmarks/sam2_cross_attention.py --out /tmp/out/cross_attention.md      # on a GPU
    python benchmarks/sam2_cross_attention.py --quick                                 # CPU smoke test
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

if "--quick" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported: kernels run on the CPU

import torch

TILINGS = (
    "64x64x4x3x1", "64x64x4x3x2", "64x64x4x2x2", "64x32x4x3x2", "64x128x4x2x2", "64x64x4x3x4",
    "128x64x8x2x1", "128x64x8x2x2", "128x32x8x3x2", "128x64x8x3x4",
)


def timed_ms(call, repeats: int) -> float:
    """Median ms of ``call`` replayed from a CUDA graph (eager wall time off the GPU)."""
    import statistics
    import time

    if not torch.cuda.is_available():
        started = time.perf_counter()
        call()
        return (time.perf_counter() - started) * 1e3
    for _ in range(3):
        call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / repeats)
    return statistics.median(times)


def relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return float((value.float() - exact).norm() / exact.norm())


def build_memory_attention(device: torch.device, quick: bool) -> torch.nn.Module:
    from napari_sbl.segment.sam2_build import build_predictor
    from napari_sbl.segment.sam2_tracker import Sam2Params, tiny_test_overrides

    params = Sam2Params(model="tiny", weights="random", device=device.type, bf16_weights=False,
                        cuda_graphs=False, fused_cross_attention=False,
                        config_overrides=tiny_test_overrides(image_size=128, d_model=256, mem_dim=64) if quick else ())
    return build_predictor(params, None, device).memory_attention.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tilings", nargs="+", default=list(TILINGS))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sam2_cross_attention.md"))
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: small sizes, fp16, interpreted kernels")
    args = parser.parse_args()
    from napari_sbl.segment.sam2_attention_kernels import AttentionTiling
    from napari_sbl.segment.sam2_build import store_autocast_weights
    from napari_sbl.segment.sam2_cross_attention import MemoryCrossAttention

    quick = args.quick
    device = torch.device("cpu" if quick else "cuda")
    dtype = torch.float16 if quick else torch.bfloat16
    side, frames, pointer_tokens, animals = (8, 2, 8, 2) if quick else (64, 7, 64, 2)
    tilings = ["32x32x4x2x1", "32x32x4x2x3"] if quick else args.tilings
    torch.manual_seed(0)
    exact_attention = build_memory_attention(device, quick)
    tokens = side * side
    keys = frames * tokens + pointer_tokens
    curr = torch.randn(tokens, animals, 256, device=device)
    curr_pos = torch.randn_like(curr)
    memory = torch.randn(keys, animals, 64, device=device)
    memory_pos = torch.randn_like(memory)
    layer = exact_attention.layers[0]
    query = layer.norm2(curr.transpose(0, 1))
    key_input = (memory + memory_pos).transpose(0, 1)
    value_input = memory.transpose(0, 1)
    with torch.no_grad():
        exact_cross = layer.cross_attn_image(query, key_input, value_input, num_k_exclude_rope=pointer_tokens)
        exact_full = exact_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=pointer_tokens)
    half_attention = copy.deepcopy(exact_attention)
    store_autocast_weights(half_attention, dtype)
    backends = [torch.nn.attention.SDPBackend.FLASH_ATTENTION, torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION,
                torch.nn.attention.SDPBackend.MATH]  # as the tracker runs SAM2 (no cuDNN)

    def measure(memory_attention: torch.nn.Module) -> tuple[float, float, float, float]:
        cross = memory_attention.layers[0].cross_attn_image
        outputs = {}

        def one_cross() -> None:
            outputs["cross"] = cross(query, key_input, value_input, num_k_exclude_rope=pointer_tokens)

        def whole() -> None:
            outputs["full"] = memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=pointer_tokens)

        with torch.no_grad(), torch.autocast(device.type, dtype=dtype), torch.nn.attention.sdpa_kernel(backends):
            cross_ms = timed_ms(one_cross, args.repeats)
            full_ms = timed_ms(whole, max(1, args.repeats // 4))
        return (cross_ms, relative_error(outputs["cross"], exact_cross), full_ms,
                relative_error(outputs["full"], exact_full))

    rows = [("SAM2's module", *measure(half_attention))]
    for text in tilings:
        fused = copy.deepcopy(half_attention)
        for each in fused.layers:
            each.cross_attn_image = MemoryCrossAttention(each.cross_attn_image, AttentionTiling.parse(text),
                                                         off_gpu=quick)
        try:
            rows.append((f"ours {text}", *measure(fused)))
        except Exception as err:  # a tiling the compiler rejects (shared memory, registers)
            print(f"tiling {text} failed: {type(err).__name__}: {str(err)[:200]}")
        print(rows[-1], flush=True)
    write_results(args.out, rows, device, animals, tokens, keys, dtype)
    return 0


def write_results(out: Path, rows: list, device: torch.device, animals: int, tokens: int, keys: int,
                  dtype: torch.dtype) -> None:
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreted kernels)"
    lines = [
        f"- device: {name}; torch {torch.__version__}; {dtype} autocast, weights in {dtype}",
        f"- one call: {animals} animals × {tokens} query tokens against {keys} memory tokens; whole memory "
        "attention: 4 layers (tiny); ms per call replayed from a CUDA graph (median of 5); error: relative "
        "L2 against SAM2's float32 result",
        "",
        "| cross-attention | one call ms | error | memory attention ms | error |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {label} | {cross:.3f} | {cross_err:.2e} | {full:.3f} | {full_err:.2e} |"
              for label, cross, cross_err, full, full_err in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    fused = [row for row in rows[1:] if row[2] < 0.05]
    if fused:
        best = min(fused, key=lambda row: row[3])[0].removeprefix("ours ")
        out.with_suffix(".best").write_text(best + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
