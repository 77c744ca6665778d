"""``napari-sbl embed VIDEO``: embed clips of every tracked animal into the session store."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter

HELP = "embed clips of tracked animals with an encoder (motion: weight-free; videoprism: VideoPrism)"
ENCODERS = ("motion", "videoprism")
MODELS = ("base", "large", "tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from napari_sbl.embed.registration import ALIGNMENTS, ANCHORS, BACKGROUNDS, NORMALIZATIONS

    parser.add_argument("video", type=Path, help="video file (tracked first with 'napari-sbl segment')")
    parser.add_argument("--encoder", choices=ENCODERS, default="motion", help="encoder (default: motion)")
    model = parser.add_argument_group("VideoPrism")
    model.add_argument("--model", choices=MODELS, default="base", help="VideoPrism size ('tiny': tests only)")
    model.add_argument("--checkpoint", type=Path, default=None, help="local VideoPrism .npz checkpoint")
    model.add_argument("--weights", choices=("random",), default=None,
                       help="'random' uses random weights (speed benchmarks only; the embeddings are meaningless)")
    model.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="compute dtype")
    model.add_argument("--pool-grid", type=int, default=4, help="pooled token grid per frame side (default 4)")
    clips = parser.add_argument_group("clips")
    clips.add_argument("--clip-frames", type=int, default=16, help="sampled frames per clip (default 16)")
    clips.add_argument("--fps", type=float, default=12.0, help="sampling rate in frames/s (default 12)")
    clips.add_argument("--stride", type=int, default=8, help="sampled frames between clip starts (default 8)")
    clips.add_argument("--start", type=int, default=0, help="first source frame")
    clips.add_argument("--stop", type=int, default=None, help="stop before this source frame (default: tracked end)")
    clips.add_argument("--min-present", type=float, default=0.5,
                       help="skip clips where the animal is on fewer than this fraction of frames (default 0.5)")
    crop = parser.add_argument_group("registration")
    crop.add_argument("--box-px", type=int, default=None, help="crop box side in source px (default: 2× body length)")
    crop.add_argument("--size-px", type=int, default=None, help="registered crop side (default: the encoder's)")
    crop.add_argument("--align", choices=ALIGNMENTS, default="body", help="rotate to the body axis (default) or not")
    crop.add_argument("--anchor", choices=ANCHORS, default="first",
                      help="centre fixed at the clip's first frame (default) or re-centred every frame")
    crop.add_argument("--background", choices=BACKGROUNDS, default="black", help="background (default black)")
    crop.add_argument("--feather-px", type=float, default=2.0, help="soft mask edge in crop px (default 2)")
    crop.add_argument("--grey", action="store_true", help="greyscale crops")
    crop.add_argument("--normalize", choices=NORMALIZATIONS, default="none", help="contrast normalisation")
    run = parser.add_argument_group("run")
    run.add_argument("--flip-average", action="store_true", help="average with the mirrored clip (test time)")
    run.add_argument("--augment", type=int, default=0, metavar="K",
                     help="also store K jittered copies per clip under embeddings/<encoder>/augmented")
    run.add_argument("--batch-size", type=int, default=32, help="clips per batch (default 32)")
    run.add_argument("--workers", type=int, default=None,
                     help="decode/registration threads (default: one per CPU core, at most 16)")
    run.add_argument("--seed", type=int, default=0, help="seed of augmentations and random weights")
    run.add_argument("--preview", type=Path, default=None, metavar="PNG",
                     help="write a montage of a few registered clips to PNG and stop (no embedding)")
    run.add_argument("--overwrite", action="store_true", help="replace embeddings made with other settings")


def params_from_args(args: argparse.Namespace):
    """The :class:`EmbedParams` the options describe."""
    from napari_sbl.embed.clips import EmbedParams, VideoPrismParams
    from napari_sbl.embed.registration import RegistrationParams

    registration = RegistrationParams(box_px=args.box_px, size_px=args.size_px, align=args.align, anchor=args.anchor,
                                      background=args.background, feather_px=args.feather_px, grey=args.grey,
                                      normalize=args.normalize)
    videoprism = VideoPrismParams(model=args.model, checkpoint=str(args.checkpoint) if args.checkpoint else None,
                                  weights=args.weights, dtype=args.dtype, pool_grid=args.pool_grid)
    return EmbedParams(encoder=args.encoder, clip_frames=args.clip_frames, fps=args.fps, stride=args.stride,
                       start=args.start, stop=args.stop, min_present=args.min_present, registration=registration,
                       flip_average=args.flip_average, augment_copies=args.augment, seed=args.seed,
                       videoprism=videoprism, batch_size=args.batch_size, device=args.device,
                       **({"workers": args.workers} if args.workers else {}))


def run(args: argparse.Namespace) -> int:
    from napari_sbl.embed.run import embed_video, montage, preview_clips
    from napari_sbl.pipeline.session import open_session

    params = params_from_args(args)
    video, store = open_session(args.video, args.store)
    reporter, listener = make_reporter(args)
    try:
        if args.preview is not None:
            import cv2

            image = montage(preview_clips(video, store, params, count=4, reporter=reporter))
            cv2.imwrite(str(args.preview), image[..., ::-1])
            echo(f"wrote a preview of 4 registered clips to {args.preview}")
            return 0
        summary = embed_video(video, store, params, reporter, overwrite=args.overwrite)
    finally:
        listener.close()
    state = "complete" if summary.complete else "incomplete (rerun to resume)"
    echo(f"embedded {summary.clips_embedded} new clips of {summary.n_clips} into {store.path}/{summary.key} ({state})")
    cells = f", {summary.grid_cells} pooled cells per frame" if summary.grid_cells else ""
    echo(f"  frames {summary.frame_range[0]}..{summary.frame_range[1] - 1} sampled at {summary.sample_fps:.2f} fps; "
         f"{summary.dim} dims per clip{cells}")
    for animal_id, count in summary.clips_per_animal.items():
        echo(f"  animal {animal_id}: {count} clips")
    if summary.skipped:
        echo(f"  {summary.skipped} clips skipped (animal absent on most of their frames; see {summary.key}/skipped)")
    echo(f"  took {summary.seconds:.1f} s")
    return 0
