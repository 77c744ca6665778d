"""Where a SAM2 tracking frame spends its time on the host: a profile of ours and of SAM2's predictor.

The H100 runs showed both implementations bound by the host (compiling the GPU work did not speed
them up). This profiles a short forward pass after a warm-up, twice per implementation: Python
functions (cProfile, by own time) and torch operators with CUDA synchronisations (torch.profiler,
by self CPU time). Each report goes to ``--out`` as text.

    python benchmarks/track_profile.py --model tiny --frames 120 --out $OUT      # on a GPU
    python benchmarks/track_profile.py --quick                                   # CPU smoke test
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_sam2 import SyntheticVideo, make_prompts, make_tracker, track_ours, track_upstream


def tracker_for(args: argparse.Namespace):
    """The tracker ``track_sam2.py`` measures as ``ours`` (drift recovery off), with random weights."""
    from napari_sbl.segment.sam2_tracker import tiny_test_overrides

    return make_tracker({"model": args.model, "weights": "random", "device": args.device, "impl": "ours",
                         "encoder_batch": 8, "overrides": list(tiny_test_overrides()) if args.quick else []})


def run_once(impl: str, tracker, video) -> None:
    if impl == "ours":
        track_ours(tracker, video, make_prompts(video))
    else:
        track_upstream(tracker.load(), video, make_prompts(video), None)


def python_profile(impl: str, tracker, video) -> str:
    profile = cProfile.Profile()
    profile.enable()
    run_once(impl, tracker, video)
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(40)
    return text.getvalue()


def torch_profile(impl: str, tracker, video) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        run_once(impl, tracker, video)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    syncs = [e for e in prof.key_averages() if "Synchronize" in e.key or "Memcpy" in e.key or e.key == "aten::item"]
    lines = [f"{e.key}: {e.count} calls, {e.self_cpu_time_total / 1e3:.1f} ms self CPU" for e in syncs]
    return table + "\n\nhost synchronisations and copies:\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--impls", nargs="+", default=["ours", "upstream-lazy"], choices=["ours", "upstream-lazy"])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: shrunken model, 16 frames")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.device = 16, "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    video = SyntheticVideo(args.frames, 480, 640)
    for impl in args.impls:
        tracker = tracker_for(args)
        run_once(impl, tracker, SyntheticVideo(24, 480, 640))  # warm-up: kernels, allocator, caches
        report = python_profile(impl, tracker, video) + "\n\n" + torch_profile(impl, tracker, video)
        path = args.out / f"track_profile_{args.model}_{impl}.txt"
        path.write_text(report)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
