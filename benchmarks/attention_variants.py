"""Variants of our memory cross-attention kernel on the tracking shape, to see whether Hopper's features pay.

The kernel in ``segment/sam2_attention_kernels.py`` loads keys and values through pointers (``cp.async``
pipelined by Triton). These variants load them through tensor descriptors (TMA) and/or ask Triton to
warp-specialise the key loop (loads in producer warps, the matmuls and softmax in the others, as
FlashAttention-3 does by hand). Timed on 2 animals × 4,096 queries against 28,736 memory tokens
(256-wide queries and keys, 64-wide bf16 values), against float32 attention for accuracy.

    python benchmarks/attention_variants.py --out $OUT       # on a Hopper GPU: attention_variants.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_timing import time_ms

LOG2_E = tl.constexpr(1.4426950408889634)


@triton.jit(do_not_specialize=["keys", "keys_per_split"])
def _attention_tma_kernel(
    q_desc, k_desc, v_desc, out_ptr, max_ptr, sum_ptr, queries, keys, keys_per_split,
    DIM: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    SPECIALISE: tl.constexpr, STAGES: tl.constexpr,
):
    block, batch, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q = q_desc.load([batch, block * BLOCK_Q, 0]).reshape(BLOCK_Q, DIM)
    running_max = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_Q,), tl.float32)
    acc = tl.zeros((BLOCK_Q, VALUE_DIM), tl.float32)
    first = split * keys_per_split
    last = tl.minimum(first + keys_per_split, keys)
    for start in tl.range(first, last, BLOCK_K, num_stages=STAGES, warp_specialize=SPECIALISE):
        k = k_desc.load([batch, start, 0]).reshape(BLOCK_K, DIM)
        v = v_desc.load([batch, start, 0]).reshape(BLOCK_K, VALUE_DIM)
        scores = tl.dot(q, tl.trans(k)) * LOG2_E
        key = start + tl.arange(0, BLOCK_K)
        scores = tl.where((key < last)[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, 1))
        weights = tl.exp2(scores - new_max[:, None])
        decay = tl.exp2(running_max - new_max)
        running_sum = running_sum * decay + tl.sum(weights, 1)
        acc = acc * decay[:, None] + tl.dot(weights.to(v.dtype), v)
        running_max = new_max
    query = block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    stored = query < queries
    rows = (split * tl.num_programs(1) + batch) * queries + query
    tl.store(out_ptr + rows[:, None] * VALUE_DIM + tl.arange(0, VALUE_DIM)[None, :], acc, mask=stored[:, None])
    tl.store(max_ptr + rows, running_max, mask=stored)
    tl.store(sum_ptr + rows, running_sum, mask=stored)


def attention_tma(q, k, v, block_q=128, block_k=64, warps=8, stages=3, splits=2, specialise=False):
    from triton.tools.tensor_descriptor import TensorDescriptor

    from napari_sbl.segment.sam2_attention_kernels import _merge_splits

    batch, queries, dim = q.shape
    keys, value_dim = k.shape[1], v.shape[2]
    keys_per_split = triton.cdiv(triton.cdiv(keys, splits), block_k) * block_k
    splits = triton.cdiv(keys, keys_per_split)
    q_desc = TensorDescriptor.from_tensor(q, [1, block_q, dim])
    k_desc = TensorDescriptor.from_tensor(k, [1, block_k, dim])
    v_desc = TensorDescriptor.from_tensor(v, [1, block_k, value_dim])
    out = torch.empty((splits, batch, queries, value_dim), dtype=torch.float32, device=q.device)
    running_max = torch.empty((splits, batch, queries), dtype=torch.float32, device=q.device)
    running_sum = torch.empty_like(running_max)
    grid = (triton.cdiv(queries, block_q), batch, splits)
    _attention_tma_kernel[grid](q_desc, k_desc, v_desc, out, running_max, running_sum, queries, keys, keys_per_split,
                                DIM=dim, VALUE_DIM=value_dim, BLOCK_Q=block_q, BLOCK_K=block_k,
                                SPECIALISE=specialise, STAGES=stages, num_warps=warps)
    return _merge_splits(out, running_max, running_sum, q.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--keys", type=int, default=28736)
    args = parser.parse_args()
    from napari_sbl.segment.sam2_attention_kernels import AttentionTiling, attention

    generator = torch.Generator(device="cuda").manual_seed(0)
    q = (torch.randn((2, 4096, 256), device="cuda", generator=generator) / 16).bfloat16()
    k = torch.randn((2, args.keys, 256), device="cuda", generator=generator).bfloat16()
    v = torch.randn((2, args.keys, 64), device="cuda", generator=generator).bfloat16()
    expected = torch.cat([torch.softmax(q[:, i:i + 512].float() @ k.float().transpose(1, 2), -1) @ v.float()
                          for i in range(0, 4096, 512)], dim=1)
    flops = 2 * 2 * 4096 * args.keys * (256 + 64)
    lines = [f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}",
             f"cross-attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} bf16", ""]
    candidates = {"ours 128x64x8x3x2": lambda: attention(q, k, v, AttentionTiling.parse("128x64x8x3x2"))}
    for tiling, specialise in (("128x64x8x3x2", False), ("128x128x8x2x2", False), ("128x64x8x3x2", True),
                               ("128x64x8x2x2", True)):
        bq, bk, warps, stages, splits = (int(part) for part in tiling.split("x"))
        candidates[f"tma {tiling}{' ws' if specialise else ''}"] = (
            lambda bq=bq, bk=bk, w=warps, s=stages, p=splits, ws=specialise:
            attention_tma(q, k, v, bq, bk, w, s, p, ws))
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "attention_variants.txt"
    for label, function in candidates.items():
        try:
            out = function()
            torch.cuda.synchronize()
        except Exception as err:  # a variant this Triton or GPU cannot build says why
            lines.append(f"{label:28s} not run: {type(err).__name__}: {str(err).strip().splitlines()[-1][:160]}")
            report.write_text("\n".join(lines) + "\n")  # as it goes: a variant that hangs compiling keeps the rest
            continue
        ms = time_ms(function)
        error = float((out.float() - expected).norm() / expected.norm())
        lines.append(f"{label:28s} {ms:7.3f} ms  {flops / ms / 1e9:6.1f} TFLOP/s  relative L2 {error:.2e}")
        report.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
