"""PyTorch's attention backends (flash, memory-efficient, cuDNN) against ours, at the shapes SAM2 tracking runs.

Hiera's windowed and global attention (tiny: 96-wide heads; large: 72-wide, which flash pads to 96) run through
``scaled_dot_product_attention``, whose backend PyTorch picks; the memory attention's cross-attention (256-wide
queries and keys, 64-wide values) runs our Triton kernel. This times each backend that accepts a shape (CUDA
events, median of repeats) and its largest difference from a float32 reference, so a switch is chosen on numbers.

    python benchmarks/attention_backends.py --out $OUT     # on a GPU: writes attention_backends.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gpu_timing import time_ms

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}

# (name, batch, heads, queries, keys, qk width, value width, calls per 8-frame encoder batch or per frame)
SHAPES = (
    ("tiny stage-3 windows 14x14", 8 * 25, 4, 196, 196, 96, 96, "4 a batch"),
    ("tiny global 64x64", 8, 4, 4096, 4096, 96, 96, "3 a batch"),
    ("large stage-3 windows 16x16", 8 * 16, 8, 256, 256, 72, 72, "33 a batch"),
    ("large global 64x64", 8, 8, 4096, 4096, 72, 72, "3 a batch"),
    ("large stage-4 windows 8x8 (ours now)", 8 * 16, 16, 64, 64, 72, 72, "4 a batch"),
    ("memory cross-attention, 2 animals", 2, 1, 4096, 28736, 256, 64, "4 a frame"),
    ("memory self-attention, 2 animals", 2, 1, 4096, 4096, 256, 256, "4 a frame"),
)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float32 attention, in chunks of queries (the global shapes' scores would not fit at once)."""
    chunks = [F.scaled_dot_product_attention(q[:, :, i:i + 512].float(), k.float(), v.float())
              for i in range(0, q.shape[2], 512)]
    return torch.cat(chunks, dim=2)


def ours(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Our kernel for the shape, or None: the memory attention's for one head, Hiera's for short windows."""
    if q.shape[1] == 1:
        from napari_sbl.segment.sam2_attention_kernels import CROSS_TILING, SELF_TILING, attention

        tiling = CROSS_TILING if v.shape[-1] != q.shape[-1] else SELF_TILING
        scaled = (q[:, 0] * q.shape[-1] ** -0.5).contiguous()
        return lambda: attention(scaled, k[:, 0], v[:, 0], tiling)[:, None]
    from napari_sbl.segment.sam2_hiera_layers import heads_attention

    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    return lambda: heads_attention(qt, kt, vt).transpose(1, 2)


def measure(shape: tuple) -> list[str]:
    name, batch, heads, queries, keys, width, value_width, calls = shape
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn((batch, heads, rows, width), device="cuda", generator=generator, dtype=torch.bfloat16)
            for rows in (queries, keys))
    v = torch.randn((batch, heads, keys, value_width), device="cuda", generator=generator, dtype=torch.bfloat16)
    expected = reference(q, k, v)
    flops = 2 * batch * heads * queries * keys * (width + value_width)
    lines = [f"{name}: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; {calls}"]
    candidates = {label: (lambda backend=backend: _sdpa(q, k, v, backend)) for label, backend in BACKENDS.items()}
    candidates["ours"] = ours(q, k, v)
    for label, function in candidates.items():
        try:
            out = function()
            torch.cuda.synchronize()
        except Exception as err:  # a backend that refuses the shape says why
            lines.append(f"    {label:10s} not run: {type(err).__name__}: {str(err).splitlines()[0][:150]}")
            continue
        ms = time_ms(function)
        error = (out.float() - expected).abs().max().item()
        lines.append(f"    {label:10s} {ms:8.3f} ms  {flops / ms / 1e9:7.1f} TFLOP/s  max |diff| {error:.2e}")
    return lines


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: SDPBackend) -> torch.Tensor:
    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(q, k, v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import triton

    lines = [f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}; "
             f"cuDNN {torch.backends.cudnn.version()}", ""]
    for shape in SHAPES:
        lines += measure(shape)
        print("\n".join(lines[-5:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attention_backends.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
