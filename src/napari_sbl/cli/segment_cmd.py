"""``napari-sbl segment VIDEO``: track animals into the session store."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter
from napari_sbl.segment.backends import BACKENDS, SAM2_MODELS, TrackParams

HELP = "segment and track animals through a video (classical offline backend or SAM2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="video file")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="prompts JSON (ours or the seed's); without it, --animals N largest animals")
    parser.add_argument("--backend", choices=BACKENDS, default="classical", help="tracker (default: classical)")
    parser.add_argument("--model", choices=SAM2_MODELS, default="tiny", help="SAM2.1 model size")
    parser.add_argument("--checkpoint", type=Path, default=None, help="local SAM2 checkpoint file")
    parser.add_argument("--weights", choices=("pretrained", "random"), default="pretrained",
                        help="'random' builds the real model with random weights (benchmarking only)")
    parser.add_argument("--start", type=int, default=0, help="first frame to track")
    parser.add_argument("--stop", type=int, default=None, help="stop before this frame (default: end)")
    parser.add_argument("--animals", type=int, default=None, help="number of animals when there are no prompts")
    parser.add_argument("--overwrite", action="store_true", help="discard existing tracks instead of resuming")
    parser.add_argument("--no-drift-recovery", action="store_true",
                        help="SAM2: do not re-prompt animals automatically when their mask jumps or vanishes")
    parser.add_argument("--compile-encoder", action="store_true",
                        help="SAM2 on a GPU: compile the image encoder instead of running our kernels "
                             "(about a minute once; tiny ~4 %% faster, large ~6 %% slower on an H100)")
    parser.add_argument("--import-sbl", type=Path, default=None, metavar="MASKS.h5",
                        help="import masks tracked in SingleBehaviorLab instead of tracking")


def sam2_options(args: argparse.Namespace) -> dict:
    """The SAM2-only switches, passed through ``TrackParams.extra`` (the classical backend ignores them)."""
    options: dict = {"drift": {"recover": False}} if args.no_drift_recovery else {}
    if args.compile_encoder:
        options["compile_image_encoder"] = True
    return options


def run(args: argparse.Namespace) -> int:
    from napari_sbl.pipeline.session import open_session
    from napari_sbl.segment.prompts import read_prompts
    from napari_sbl.segment.run import track_video

    prompts = read_prompts(args.prompts) if args.prompts else []
    video, store = open_session(args.video, args.store)
    if args.import_sbl is not None:
        return _import_seed(args, video, store)
    params = TrackParams(
        backend=args.backend, model=args.model, checkpoint=str(args.checkpoint) if args.checkpoint else None,
        weights=args.weights, n_animals=args.animals, start=args.start, stop=args.stop, device=args.device,
        extra=sam2_options(args),
    )
    reporter, listener = make_reporter(args)
    try:
        summary = track_video(video, store, prompts, params, reporter, overwrite=args.overwrite)
    finally:
        listener.close()
    echo(f"tracked {summary.frames_tracked} new frames of {summary.frames_total} into {store.path}")
    for animal_id, frames in summary.frames_present.items():
        echo(f"  animal {animal_id}: present on {frames} frames")
    echo(f"  doubtful frames (quality < 0.3): {summary.doubtful_frames}")
    return 0


def _import_seed(args: argparse.Namespace, video, store) -> int:
    from napari_sbl.segment.import_sbl import import_seed_masks

    reporter, listener = make_reporter(args)
    try:
        summary = import_seed_masks(args.import_sbl, video, store, overwrite=args.overwrite, reporter=reporter)
    finally:
        listener.close()
    echo(f"imported {summary.frames_tracked} frames of SingleBehaviorLab masks into {store.path}")
    for animal_id, frames in summary.frames_present.items():
        echo(f"  animal {animal_id}: present on {frames} frames")
    return 0
