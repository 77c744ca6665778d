"""When the GPU waits during SAM2 tracking, and what the host is doing then.

Tracks the benchmark's synthetic video with our tracker as it ships (CUDA graphs, encoder on its own
stream) under torch.profiler, then reads the raw timeline: how long the GPU had any kernel running
(intervals merged over all streams) against the wall time of the pass, each stream's busy time, the
costliest kernels as replayed (graphs included), and,
for the time no kernel ran, which host events were open (CUDA runtime calls such as synchronisations,
PyTorch operators), so a GPU-side speed-up that does not show in frames/s can be placed.

    python benchmarks/track_timeline.py --model tiny --frames 120 --out $OUT    # on a GPU
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_profile import run_once, tracker_for
from track_sam2 import SyntheticVideo


def merged(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlap(start: int, end: int, gaps: list[tuple[int, int]], first: int) -> int:
    """ns of [start, end) inside the sorted ``gaps``, scanning from index ``first``."""
    total = 0
    for index in range(first, len(gaps)):  # no slicing: a copy of the rest per event would be quadratic
        gap_start, gap_end = gaps[index]
        if gap_start >= end:
            break
        total += max(0, min(end, gap_end) - max(start, gap_start))
    return total


def timeline_report(prof, frames: int) -> str:
    import bisect

    from torch.autograd import DeviceType

    events = prof.profiler.kineto_results.events()
    gpu = [(e.start_ns(), e.start_ns() + e.duration_ns(), e.device_resource_id(), e.name()) for e in events
           if e.device_type() == DeviceType.CUDA and e.duration_ns() > 0]
    if not gpu:
        return "no GPU events\n"
    busy = merged([(start, end) for start, end, _, _ in gpu])
    window = (busy[0][0], busy[-1][1])
    busy_ns = sum(end - start for start, end in busy)
    gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in itertools.pairwise(busy)]
    per_stream: dict[int, int] = defaultdict(int)
    for start, end, stream, _ in gpu:
        per_stream[stream] += end - start
    wall = window[1] - window[0]
    lines = [f"{frames} frames; wall (first to last kernel) {wall / 1e6:.1f} ms = {wall / 1e6 / frames:.3f} ms a frame",
             f"GPU busy (any kernel, streams merged) {busy_ns / 1e6:.1f} ms = {busy_ns / 1e6 / frames:.3f} ms a frame "
             f"({100 * busy_ns / wall:.1f} %); idle {len(gaps)} gaps, {(wall - busy_ns) / 1e6:.1f} ms",
             "kernel time per stream (ms a frame): " + ", ".join(
                 f"{stream}: {ns / 1e6 / frames:.3f}" for stream, ns in sorted(per_stream.items(),
                                                                            key=lambda item: -item[1])),
             "", "idle gaps by length (count, ms in total):"]
    for low, high in ((0, 10_000), (10_000, 50_000), (50_000, 200_000), (200_000, 1_000_000), (1_000_000, 10**12)):
        chosen = [b - a for a, b in gaps if low <= b - a < high]
        lines.append(f"  {low / 1e3:7.0f}-{high / 1e3:7.0f} us: {len(chosen):5d}, {sum(chosen) / 1e6:8.2f}")
    by_kernel: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for start, end, stream, name in gpu:
        by_kernel[(stream, name)][0] += end - start
        by_kernel[(stream, name)][1] += 1
    lines += ["", "costliest kernels of the pass (ms a frame, launches a frame, stream, kernel):"]
    for (stream, name), (ns, count) in sorted(by_kernel.items(), key=lambda item: -item[1][0])[:25]:
        lines.append(f"  {ns / 1e6 / frames:7.3f}  {count / frames:6.1f}  {stream:3d}  {name[:100]}")
    gap_starts = [a for a, _ in gaps]
    host: dict[str, int] = defaultdict(int)
    for event in events:
        if event.device_type() != DeviceType.CPU:
            continue
        start, end = event.start_ns(), event.start_ns() + event.duration_ns()
        first = max(0, bisect.bisect_right(gap_starts, start) - 1)
        inside = overlap(start, end, gaps, first)
        if inside:
            host[event.name()[:90]] += inside
    lines += ["", "host events open while no kernel ran (ms in total; nested events each count):"]
    for name, ns in sorted(host.items(), key=lambda item: -item[1])[:30]:
        lines.append(f"  {ns / 1e6:8.2f}  {name}")
    return "\n".join(lines) + "\n"


def graph_stats(predictor) -> str:
    """Calls each graphed module replayed and ran eagerly over all three passes (warm-up included)."""
    from napari_sbl.segment.sam2_graphs import GraphedModule

    lines = ["", "graphed modules (all passes): replayed / eager / recorded / failed"]
    for name, module in predictor.named_modules():
        if isinstance(module, GraphedModule):
            stats = module.stats
            lines.append(f"  {name}: {stats.replayed} / {stats.eager} / {stats.recorded} / {stats.failed}")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:  # CPU smoke test: shrunken model, no GPU events to read
        args.frames, args.device = 8, "cpu"
    tracker = tracker_for(args, "ours")
    video = SyntheticVideo(args.frames, 480, 640)
    run_once("ours", tracker, SyntheticVideo(48, 480, 640))  # warm-up: kernels compiled, graphs recorded
    run_once("ours", tracker, video)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_once("ours", tracker, video)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    report = f"{args.model}: ours as it ships (CUDA graphs, encoder on its own stream)\n" + timeline_report(
        prof, args.frames) + graph_stats(tracker.load())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"track_timeline_{args.model}.txt").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
