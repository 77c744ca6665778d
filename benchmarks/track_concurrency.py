"""Would two tracking chains on one GPU run faster together than one after the other?

A tracked frame is a chain of small kernels (a 64×64 token grid) that leaves much of an H100 idle.
Before tracking the forward and backward passes of a video at the same time, this measures the
ceiling of that idea: two independent trackers (two model copies, so no CUDA graph is shared),
each on its own thread and streams, tracking the same video at once, against each alone.

    python benchmarks/track_concurrency.py --models tiny large --frames 300      # on a GPU
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import torch

from track_sam2 import make_prompts, make_tracker, track_ours
from track_videos import SyntheticVideo


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(trackers: list, video: SyntheticVideo) -> float:
    """Seconds for every tracker to track ``video`` (both directions), each on its own thread."""
    errors: list[BaseException] = []

    def run(tracker: object) -> None:
        try:
            track_ours(tracker, video, make_prompts(video))
        except BaseException as error:  # reported by the caller
            errors.append(error)

    sync()
    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(t,)) for t in trackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sync()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def measure(model: str, frames: int, repeats: int, quick: bool = False) -> dict:
    from napari_sbl.segment.sam2_tracker import tiny_test_overrides

    config = {"model": model, "weights": "random", "device": "auto", "encoder_batch": 8, "impl": "ours",
              "overrides": list(tiny_test_overrides()) if quick else []}
    trackers = [make_tracker(config) for _ in range(2)]
    for tracker in trackers:
        tracker.load()
        for _ in range(2):  # every graph recorded before two threads run at once
            warm_up = SyntheticVideo(16 if quick else 48, 480, 640)
            track_ours(tracker, warm_up, make_prompts(warm_up))
    video = SyntheticVideo(frames, 480, 640)
    rows = []
    for _ in range(repeats):
        alone = [timed([tracker], video) for tracker in trackers]
        together = timed(trackers, video)
        rows.append({"alone_fps": [frames / s for s in alone], "together_fps": 2 * frames / together})
    return {"model": model, "frames": frames, "rows": rows,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "large"])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("track_concurrency.json"))
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: shrunken tiny model, 16 frames")
    args = parser.parse_args()
    if args.quick:
        args.models, args.frames, args.repeats = ["tiny"], 16, 1
    results = [measure(model, args.frames, args.repeats, args.quick) for model in args.models]
    args.out.write_text(json.dumps(results, indent=1))
    for result in results:
        for row in result["rows"]:
            alone = " / ".join(f"{fps:.1f}" for fps in row["alone_fps"])
            print(f"{result['model']}: alone {alone} fps; two at once {row['together_fps']:.1f} fps in all")


if __name__ == "__main__":
    main()
