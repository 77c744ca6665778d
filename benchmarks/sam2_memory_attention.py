"""SAM2's memory attention: SAM2's own modules against ours (Triton kernels, cross-attention on 64 channels).

Times one cross-attention call at SAM2.1's sizes (two animals, 4,096 query tokens, 7 memory frames of
4,096 tokens plus 64 object-pointer tokens, one head 256 wide), one self-attention call and the whole
memory attention (four layers of the tiny model), each replayed from a CUDA graph as the tracker runs
them, for SAM2's code and for each Triton tiling (cross-attention tilings first, then self-attention
tilings with the fastest cross one); checks the error of each against SAM2's float32 result. Writes a
Markdown table and the fastest tilings (``.best``: cross, ``.best_self``: self; ``QxKxWxSxP``) beside it.

    python benchmarks/sam2_memory_attention.py --out /tmp/out/memory_attention.md    # on a GPU
    python benchmarks/sam2_memory_attention.py --quick                               # CPU smoke test
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

TILINGS = ("128x64x8x3x2", "128x64x8x3x4", "128x64x8x4x2", "128x128x8x3x2", "128x64x8x2x2", "64x64x4x3x4",
           "128x32x8x3x2")
SELF_TILINGS = ("64x64x4x2x1", "64x64x4x3x1", "64x64x4x2x2", "128x64x8x2x2", "128x32x8x3x2")


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
                        cuda_graphs=False, fused_memory_attention=False,
                        config_overrides=tiny_test_overrides(image_size=128, d_model=256, mem_dim=64) if quick else ())
    return build_predictor(params, None, device).memory_attention.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tilings", nargs="+", default=list(TILINGS))
    parser.add_argument("--self-tilings", nargs="+", default=list(SELF_TILINGS))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sam2_memory_attention.md"))
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: small sizes, fp16, interpreted kernels")
    args = parser.parse_args()
    from napari_sbl.segment.sam2_attention_kernels import AttentionTiling
    from napari_sbl.segment.sam2_build import store_autocast_weights
    from napari_sbl.segment.sam2_fused_attention import FusedRoPEAttention

    quick = args.quick
    device = torch.device("cpu" if quick else "cuda")
    dtype = torch.float16 if quick else torch.bfloat16
    side, frames, pointer_tokens, animals = (8, 2, 8, 2) if quick else (64, 7, 64, 2)
    cross_tilings = ["32x32x4x2x1", "32x32x4x2x3"] if quick else args.tilings
    self_tilings = ["32x32x4x2x2"] if quick else args.self_tilings
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
    self_input = layer.norm1(curr.transpose(0, 1))
    with torch.no_grad():
        exact = {
            "cross": layer.cross_attn_image(query, key_input, value_input, num_k_exclude_rope=pointer_tokens),
            "self": layer.self_attn(self_input, self_input, self_input),
            "full": exact_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=pointer_tokens),
        }
    half_attention = copy.deepcopy(exact_attention)
    store_autocast_weights(half_attention, dtype)
    backends = [torch.nn.attention.SDPBackend.FLASH_ATTENTION, torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION,
                torch.nn.attention.SDPBackend.MATH]  # as the tracker runs SAM2 (no cuDNN)

    def measure(label: str, cross_tiling: str | None, self_tiling: str | None) -> tuple:
        """(label, ms and error of one cross call, of one self call, of the whole memory attention)."""
        memory_attention = copy.deepcopy(half_attention)
        for each in memory_attention.layers:
            if cross_tiling:
                each.cross_attn_image = FusedRoPEAttention(each.cross_attn_image, AttentionTiling.parse(cross_tiling),
                                                             off_gpu=quick)
            if self_tiling:
                each.self_attn = FusedRoPEAttention(each.self_attn, AttentionTiling.parse(self_tiling), off_gpu=quick)
        first = memory_attention.layers[0]
        calls = {
            "cross": lambda: first.cross_attn_image(query, key_input, value_input, num_k_exclude_rope=pointer_tokens),
            "self": lambda: first.self_attn(self_input, self_input, self_input),
            "full": lambda: memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=pointer_tokens),
        }
        row = [label]
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype), torch.nn.attention.sdpa_kernel(backends):
            outputs = {}
            for name, call in calls.items():
                elapsed = timed_ms(lambda call=call, name=name: outputs.update({name: call()}),
                                   args.repeats // (4 if name == "full" else 1) or 1)
                row += [elapsed, relative_error(outputs[name], exact[name])]
        print(row, flush=True)
        return tuple(row)

    def try_measure(*arguments) -> tuple | None:
        try:
            return measure(*arguments)
        except Exception as err:  # a tiling the compiler rejects (shared memory, registers)
            print(f"{arguments[0]} failed: {type(err).__name__}: {str(err)[:300]}", flush=True)
            return None

    rows = [measure("SAM2's modules", None, None)]
    cross_rows = [row for text in cross_tilings if (row := try_measure(f"ours cross {text}", text, None))]
    best_cross = fastest_accurate(cross_rows)
    self_rows = [row for text in self_tilings
                 if best_cross and (row := try_measure(f"ours cross {best_cross}, self {text}", best_cross, text))]
    best_self = fastest_accurate(self_rows, faster_than=min(row[5] for row in cross_rows) if cross_rows else None)
    write_results(args.out, rows + cross_rows + self_rows, device, animals, tokens, keys, dtype)
    if best_cross:
        args.out.with_suffix(".best").write_text(best_cross + "\n")
    args.out.with_suffix(".best_self").write_text((best_self or "") + "\n")
    return 0


def fastest_accurate(rows: list[tuple], faster_than: float | None = None) -> str | None:
    """The last tiling named in the label of the row with the fastest whole memory attention whose error
    stays below 5 %; None when there is none (or none faster than ``faster_than`` ms)."""
    accurate = [row for row in rows if row[6] < 0.05]
    if not accurate:
        return None
    best = min(accurate, key=lambda row: row[5])
    if faster_than is not None and best[5] >= faster_than:
        return None
    return best[0].split()[-1]


def write_results(out: Path, rows: list, device: torch.device, animals: int, tokens: int, keys: int,
                  dtype: torch.dtype) -> None:
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreted kernels)"
    lines = [
        f"- device: {name}; torch {torch.__version__}; {dtype} autocast, weights in {dtype}",
        f"- cross-attention: {animals} animals × {tokens} query tokens against {keys} memory tokens; "
        f"self-attention: {tokens} tokens; memory attention: 4 layers (tiny); ms per call replayed from a CUDA "
        "graph (median of 5); error: relative L2 against SAM2's float32 result; tiling "
        "`QxKxWxSxP` = query block, key block, warps, stages, key splits",
        "",
        "| modules | cross ms | error | self ms | error | memory attention ms | error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join([row[0], *(f"{v:.3f}" if i % 2 == 0 else f"{v:.2e}" for i, v in enumerate(row[1:]))])
              + " |" for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
