"""``napari-sbl batch VIDEO_OR_GLOB...``: steps over many videos on dask.distributed."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sbl.cli.common import echo, make_reporter

HELP = "run segment/embed/infer over many videos on dask.distributed (local cluster or a scheduler address)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO_OR_GLOB", help="video files or glob patterns")
    parser.add_argument("--steps", default="segment,embed", help="comma-separated: segment,embed[,infer]")
    parser.add_argument("--model", type=Path, default=None, help="model directory for the infer step")
    parser.add_argument("--prompts-dir", type=Path, default=None,
                        help="folder of <video stem>.json prompts; videos without one use --animals")
    parser.add_argument("--animals", type=int, default=None, help="animals per video when there are no prompts")
    parser.add_argument("--backend", choices=("classical", "sam2"), default="classical", help="tracking backend")
    parser.add_argument("--encoder", default="motion", help="embedding encoder (motion or videoprism)")
    parser.add_argument("--scheduler", default="local",
                        help="'local' starts a LocalCluster here; else a dask scheduler address (tcp://host:8786)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster")
    parser.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs pinned to each worker (0 = CPU)")
    parser.add_argument("--status-csv", type=Path, default=Path("napari-sbl-batch-status.csv"),
                        help="where to save the status table")


def run(args: argparse.Namespace) -> int:
    from napari_sbl.pipeline.batch import check_steps, expand_videos, run_batch
    from napari_sbl.pipeline.batch_steps import BatchParams

    params = BatchParams(
        steps=check_steps([s.strip() for s in args.steps.split(",") if s.strip()]),
        backend=args.backend, n_animals=args.animals,
        prompts_dir=str(args.prompts_dir) if args.prompts_dir else None, encoder=args.encoder,
        model_dir=str(args.model) if args.model else None, scheduler=args.scheduler, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
    )
    videos = expand_videos(args.videos)
    reporter, listener = make_reporter(args)
    try:
        results = run_batch(videos, params, reporter, csv_path=args.status_csv)
    finally:
        listener.close()
    width = max(len(Path(r.video).name) for r in results)
    echo(f"{'video':<{width}}  {'step':<8} {'state':<8} {'seconds':>8}  error")
    for r in results:
        echo(f"{Path(r.video).name:<{width}}  {r.step:<8} {r.state:<8} {r.seconds:>8.1f}  {r.error}")
    echo(f"status saved to {args.status_csv}")
    return 1 if any(r.state == "failed" for r in results) else 0
