"""On a GPU: do two ways of tracking (CUDA graphs or not, encoder overlapped or not) give the same masks?

Tracks the benchmark's synthetic two-blob video with the same random-weight model twice (by default
``ours``, with CUDA graphs and the encoder on its own stream, against ``ours-eager``; ``--impls``
picks the pair) and compares every frame's labels. Prints the share of pixels that agree, each
wrapped module's replay/eager/record counts and the peak GPU memory of each run. Exits 1 if fewer
than 99.9 % of the pixels agree.

    python benchmarks/sam2_graphs_check.py --model tiny --frames 150
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_sam2 import SyntheticVideo, make_prompts, make_tracker


def track(impl: str, model: str, video: SyntheticVideo) -> tuple[dict[int, np.ndarray], object, float]:
    import torch

    from napari_sbl.progress import Reporter

    tracker = make_tracker({"model": model, "weights": "random", "device": "cuda", "impl": impl,
                            "encoder_batch": 8, "overrides": []})
    torch.cuda.reset_peak_memory_stats()
    labels = {t.frame_index: t.labels for t in tracker.track(video, make_prompts(video), 0, video.n_frames,
                                                              Reporter())}
    return labels, tracker.load(), torch.cuda.max_memory_allocated() / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--impls", nargs=2, default=["ours", "ours-eager"], metavar=("FIRST", "SECOND"))
    args = parser.parse_args()
    from napari_sbl.segment.sam2_graphs import GraphedModule

    video = SyntheticVideo(args.frames, 480, 640)
    graphed, predictor, graphed_gib = track(args.impls[0], args.model, video)
    eager, _, eager_gib = track(args.impls[1], args.model, video)
    agree = np.mean([np.mean(graphed[t] == eager[t]) for t in eager])
    worst = min(eager, key=lambda t: np.mean(graphed[t] == eager[t]))
    print(f"{args.model}, {args.impls[0]} vs {args.impls[1]}: {len(eager)} frames; "
          f"pixels agreeing {100 * agree:.4f} %; worst frame {worst} "
          f"{100 * np.mean(graphed[worst] == eager[worst]):.3f} %")
    print(f"peak GPU memory: {args.impls[0]} {graphed_gib:.2f} GiB, {args.impls[1]} {eager_gib:.2f} GiB")
    for name, module in predictor.named_modules():
        if isinstance(module, GraphedModule):
            s = module.stats
            print(f"  {name}: replayed {s.replayed}, eager {s.eager}, recorded {s.recorded}, failed {s.failed}")
    return 0 if agree >= 0.999 else 1


if __name__ == "__main__":
    raise SystemExit(main())
