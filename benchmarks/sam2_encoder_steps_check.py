"""SAM2's image encoder in steps (``segment/sam2_encoder_steps.py``) against ``forward_image``, on a GPU.

For each model, one batch of 8 synthetic frames under the tracker's autocast: the features of the
eager steps, of the steps replayed from CUDA graphs (first replay and a later one), each against
``forward_image``'s (relative L2, largest absolute difference, per level), and GPU milliseconds per batch
of each (CUDA events, median of 5).

    python benchmarks/sam2_encoder_steps_check.py --models tiny large
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_timing import time_ms
from sam2_layer_norm_check import difference
from track_sam2 import SyntheticVideo, make_tracker

batch_ms = functools.partial(time_ms, repeats=5, warm_up=0)  # a whole encoder batch: median of 5, untimed none


def levels_of(job_or_out) -> list:
    return list(job_or_out["backbone_fpn"]) if isinstance(job_or_out, dict) else job_or_out.result[0]


def compare(ours: list, reference: list) -> str:
    parts = []
    for level, (a, b) in enumerate(zip(ours, reference, strict=True)):
        largest = float((a.float() - b.float()).abs().max())
        parts.append(f"level {level}: rel L2 {difference(a, b):.2e}, max |d| {largest:.2e}")
    return "; ".join(parts)


def check(model: str) -> list[str]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from napari_sbl.segment.sam2_encoder_steps import EncoderSteps
    from napari_sbl.segment.sam2_frames import LazySam2Images

    predictor = make_tracker({"model": model, "weights": "random", "device": "cuda", "impl": "ours",
                              "encoder_batch": 8, "overrides": []}).load()
    images = LazySam2Images(SyntheticVideo(8, 480, 640), predictor.image_size, "cuda").batch(range(8))
    lines = [f"{model}: batch of 8, {images.shape[-1]} px"]
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(backends):
        reference = levels_of(predictor.forward_image(images))
        eager, graphed = EncoderSteps(predictor, 8, graphs=False), EncoderSteps(predictor, 8, graph_batch=8)

        def run(steps: EncoderSteps):
            job = steps.start(images)
            job.advance(steps.steps)
            return job

        lines.append(f"  eager steps: {compare(levels_of(run(eager)), reference)}")
        run(graphed)  # eager: the warm-up before recording
        lines.append(f"  graphed steps, first replay: {compare(levels_of(run(graphed)), reference)}")
        lines.append(f"  graphed steps, a later replay: {compare(levels_of(run(graphed)), reference)}")
        again = levels_of(predictor.forward_image(images))
        lines.append(f"  forward_image run again: {compare(again, reference)}")
        lines.append(f"  GPU ms per batch: forward_image {batch_ms(lambda: predictor.forward_image(images)):.2f}, "
                     f"eager steps {batch_ms(lambda: run(eager)):.2f}, "
                     f"graphed steps {batch_ms(lambda: run(graphed)):.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "large"])
    args = parser.parse_args()
    for model in args.models:
        print("\n".join(check(model)), flush=True)


if __name__ == "__main__":
    main()
