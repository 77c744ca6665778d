"""On a GPU: does the fused memory attention agree with SAM2's on every call of a real tracking run?

Tracks the benchmark's synthetic two-blob video with the random-weight tiny model (SAM2's own
memory attention), and on every call of each layer's cross- and self-attention also runs SAM2's
layer in float32 and ours in bf16 on the same inputs. Prints, per module kind, the worst and median
relative L2 error of ours and of SAM2's own bf16 layer against float32, and the memory lengths seen.
Mask agreement between whole tracking runs cannot show this: with random weights the masks are
chaotic, and any change of rounding (another attention kernel) changes them. Exits 1 if ours is
ever more than twice as far from float32 as SAM2's bf16 layer plus 1e-3.

    python benchmarks/sam2_fused_check.py --frames 150
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
from sam2.modeling.sam.transformer import RoPEAttention

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_sam2 import SyntheticVideo, make_prompts


class ComparingAttention(RoPEAttention):
    """SAM2's attention module as the tracker runs it, with ours and a float32 copy run beside it."""

    def __init__(self, original: RoPEAttention, fused: torch.nn.Module) -> None:
        torch.nn.Module.__init__(self)
        self.original, self.fused = original, fused
        self.exact = copy.deepcopy(original).float()
        self.errors: list[tuple[int, int, float, float]] = []  # keys, pointers, ours, SAM2 bf16

    def forward(self, q, k, v, num_k_exclude_rope=0):
        out = self.original(q, k, v, num_k_exclude_rope=num_k_exclude_rope)
        ours = self.fused(q, k, v, num_k_exclude_rope=num_k_exclude_rope)
        with torch.autocast("cuda", enabled=False):
            exact = self.exact(q.float(), k.float(), v.float(), num_k_exclude_rope=num_k_exclude_rope)

        def error(value):
            return float((value.float() - exact).norm() / exact.norm())

        self.errors.append((k.shape[1], num_k_exclude_rope, error(ours), error(out)))
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--cross-tiling", default="")
    parser.add_argument("--self-tiling", default="")
    args = parser.parse_args()
    from napari_sbl.progress import Reporter
    from napari_sbl.segment.sam2_attention_kernels import CROSS_TILING, SELF_TILING, AttentionTiling
    from napari_sbl.segment.sam2_fused_attention import FusedRoPEAttention
    from napari_sbl.segment.sam2_tracker import Sam2Params, Sam2Tracker

    # no CUDA graphs: the float32 comparison reads its errors back to the host on every call
    tracker = Sam2Tracker(Sam2Params(model="tiny", weights="random", device="cuda", cuda_graphs=False,
                                     fused_memory_attention=False))
    memory_attention = tracker.load().memory_attention
    wrappers = {"cross": [], "self": []}
    cross_tiling = AttentionTiling.parse(args.cross_tiling) if args.cross_tiling else CROSS_TILING
    self_tiling = AttentionTiling.parse(args.self_tiling) if args.self_tiling else SELF_TILING
    for layer in memory_attention.layers:
        layer.cross_attn_image = ComparingAttention(
            layer.cross_attn_image, FusedRoPEAttention(layer.cross_attn_image, cross_tiling))
        wrappers["cross"].append(layer.cross_attn_image)
        layer.self_attn = ComparingAttention(layer.self_attn, FusedRoPEAttention(layer.self_attn, self_tiling))
        wrappers["self"].append(layer.self_attn)
    video = SyntheticVideo(args.frames, 480, 640)
    frames = sum(1 for _ in tracker.track(video, make_prompts(video), 0, video.n_frames, Reporter()))
    failed = False
    for kind, modules in wrappers.items():
        errors = [entry for module in modules for entry in module.errors]
        if not errors:
            continue
        ours, sam2 = [e[2] for e in errors], [e[3] for e in errors]
        worse = [e for e in errors if e[2] > 2 * e[3] + 1e-3]
        failed |= bool(worse)
        print(f"{kind}-attention, {len(errors)} calls over {frames} frames, key lengths "
              f"{sorted({e[0] for e in errors})[:4]}…{max(e[0] for e in errors)}, pointer tokens up to "
              f"{max(e[1] for e in errors)}: relative L2 to float32: ours worst {max(ours):.2e} median "
              f"{statistics.median(ours):.2e}; SAM2 bf16 worst {max(sam2):.2e} median {statistics.median(sam2):.2e}; "
              f"calls where ours is over twice SAM2's: {len(worse)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
